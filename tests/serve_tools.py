"""Helpers of the serve tests: a server on a free loopback port in this process, models for it,
and the NDJSON stream of a propagation read line by line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from maskvos.inference.config import InferenceConfig
from maskvos.serve import ServeSettings, build_pool
from maskvos.serve.server import BackgroundServer
from maskvos.serve.sessions import ModelPool


def featmatch_pool() -> ModelPool:
    return build_pool("featmatch", None, "cpu", InferenceConfig(), lambda _msg: None)


def checkpoint_pool(checkpoint: Path, resolution: int = 64) -> ModelPool:
    return build_pool(None, str(checkpoint), "cpu", InferenceConfig(resolution=resolution), lambda _msg: None)


@contextmanager
def running(pool: ModelPool, root: Path, **settings) -> Iterator[tuple[BackgroundServer, httpx.Client]]:
    """A server of `pool` on 127.0.0.1 and an HTTP client of it."""
    with BackgroundServer(pool, ServeSettings(root=root, **settings)) as server, httpx.Client(
        base_url=server.url, timeout=120
    ) as client:
        yield server, client


def propagate_lines(client: httpx.Client, session_id: str, **body) -> list[dict]:
    """Every line of a propagation's stream, parsed."""
    with client.stream("POST", f"/api/sessions/{session_id}/propagate", json=body) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in resp.iter_lines() if line.strip()]


def assert_one_sentence(resp: httpx.Response, status: int) -> str:
    """The response is `status` with JSON {"error": one sentence}, no traceback."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert set(body) == {"error"}, body
    message = body["error"]
    assert "Traceback" not in message and "\n" not in message
    assert message.endswith("."), message
    assert message.count(". ") == 0, message  # one sentence
    return message


def frame_folder(folder: Path, n: int, h: int = 48, w: int = 64, seed: int = 0) -> Path:
    """A folder of n JPEG frames with a red square moving right (the object)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        x = 5 + (2 * i) % (w - 25)
        img[10:30, x : x + 20] = [230, 30, 30]
        Image.fromarray(img).save(folder / f"{i:05d}.jpg")
    return folder


def square_mask(h: int = 48, w: int = 64, x: int = 5) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[10:30, x : x + 20] = True
    return mask
