"""`maskvos serve`: a session HTTP API and the interactive web page, on the application layer.

`create_app(pool, settings)` gives the FastAPI application (the API under /api, the page at /);
`build_pool` picks the model with the offline fall-back; `serve` runs it with uvicorn. The parts:
`videos` (what may be opened: under the root only, the demo clip, uploads), `sessions` (serve
sessions, shared models, propagation threads, idle time-outs), `store` (each frame's last masks),
`export` (DAVIS / RLE / COCO zips), `wire` (request bodies and RLE).
"""

from __future__ import annotations

from maskvos.serve.api import ServeSettings, create_app
from maskvos.serve.server import DEFAULT_MODEL, build_pool, serve

__all__ = ["DEFAULT_MODEL", "ServeSettings", "build_pool", "create_app", "serve"]
