"""The HTTP API and the page, as one FastAPI application (`create_app`).

Every error is JSON {"error": "<one sentence>"} with a 4xx status for the client's mistakes and 503
for a full server or a busy model; a bug gives 500 with one sentence (its traceback goes to the
server's log, never to the client). Masks travel as COCO RLE; coordinates are pixels of the frame.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
import threading
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from maskvos.errors import ConfigError, MaskvosError
from maskvos.serve.errors import ServeError, bad_request
from maskvos.serve.export import EXPORT_FORMATS, download_name, export_zip
from maskvos.serve.sessions import ModelPool, SessionManager, periodic
from maskvos.serve.videos import VideoCatalog
from maskvos.serve.wire import CreateSessionRequest, PromptRequest, PropagateRequest, validation_sentence

log = logging.getLogger("maskvos.serve")


@dataclass
class ServeSettings:
    """What one server serves and its limits.

    Attributes:
        root: videos under this folder may be opened (nothing outside it).
        max_sessions: sessions open at once; one more gets 503.
        idle_s: a session without a request for this long is closed.
        busy_wait_s: a request needing a model another session is using waits this long, then 503.
        max_upload_mb: largest upload accepted.
        work_dir: the server's own folder (uploads, exports, the demo clip); a new temporary folder
            by default, removed when the server stops.
        integrations: tool adapters to mount under /integrations/<name> ("cvat", "label-studio",
            "x-anylabeling"); `maskvos.integrations.create_app_with` builds such an app (this
            layer cannot import them), `create_app` refuses names it was given no routers for.
    """

    root: Path
    max_sessions: int = 8
    idle_s: float = 1800.0
    busy_wait_s: float = 2.0
    max_upload_mb: int = 4096
    work_dir: Path | None = None
    integrations: tuple[str, ...] = field(default_factory=tuple)


def create_app(pool: ModelPool, settings: ServeSettings, extra_routers: Sequence[tuple[str, APIRouter]] = ()) -> FastAPI:
    """The application: the API under /api, each of `extra_routers` under its prefix (before the
    page, so the page's catch-all does not hide them), the page at /."""
    mounted = {prefix.rstrip("/").rsplit("/", 1)[-1] for prefix, _ in extra_routers}
    missing = [name for name in settings.integrations if name not in mounted]
    if missing:
        raise ConfigError(
            f"Integrations {', '.join(missing)} were asked for but no routers were given for them; "
            "build the app with maskvos.integrations.create_app_with(pool, settings)."
        )
    own_dir = settings.work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="maskvos-serve-")) if own_dir else Path(settings.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    catalog = VideoCatalog(settings.root, work_dir)
    manager = SessionManager(pool, settings.max_sessions, settings.idle_s, settings.busy_wait_s)
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        periodic(min(30.0, max(settings.idle_s / 4, 0.05)), manager.reap, stop)
        try:
            yield
        finally:
            stop.set()
            await run_in_threadpool(manager.close_all)
            if own_dir:
                shutil.rmtree(work_dir, ignore_errors=True)

    app = FastAPI(title="maskvos", version=_version(), lifespan=lifespan, docs_url="/api/docs",
                  openapi_url="/api/openapi.json", redoc_url=None)
    app.state.manager, app.state.catalog, app.state.pool = manager, catalog, pool
    _error_handlers(app)

    @app.get("/api/health")
    def health() -> dict:
        model = pool.default
        return {"status": "ok", "version": _version(), "model": model.name,
                "backend": model.loaded.backend.name, "device": str(model.loaded.device),
                "prompt_types": sorted(model.prompt_types), "fell_back": model.loaded.fell_back,
                "notice": model.notice, "sessions": len(manager), "max_sessions": manager.max_sessions}

    @app.get("/api/videos")
    def videos() -> dict:
        return {"root": str(catalog.root), "videos": [e.as_json() for e in catalog.entries()]}

    @app.post("/api/sessions")
    async def create_session(request: Request) -> dict:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            if upload is None or not hasattr(upload, "filename"):
                raise bad_request("The upload has no 'file' field; send the video as multipart field 'file'.")
            model = form.get("model") or None
            stored = await run_in_threadpool(catalog.store_upload, upload.filename or "upload", upload.file,
                                             settings.max_upload_mb << 20)
            cleanup = stored.parent  # the upload's own folder
            try:
                serve = await run_in_threadpool(manager.create, stored, f"upload:{upload.filename}", model, cleanup)
            except BaseException:
                shutil.rmtree(cleanup, ignore_errors=True)
                raise
        else:
            body = await _json_body(request)
            try:
                req = CreateSessionRequest.model_validate(body)
            except ValidationError as exc:
                raise RequestValidationError(exc.errors()) from None
            path = await run_in_threadpool(catalog.resolve, req.source)
            serve = await run_in_threadpool(manager.create, path, req.source, req.model)
        return serve.info()

    @app.get("/api/sessions")
    def list_sessions() -> dict:
        return {"sessions": [s.info() for s in manager.sessions()]}

    @app.get("/api/sessions/{session_id}")
    def session_info(session_id: str) -> dict:
        serve = manager.get(session_id)
        return {**serve.info(), "frames_done": serve.store.frame_indices()}

    @app.get("/api/sessions/{session_id}/frames/{frame_idx}")
    def frame(session_id: str, frame_idx: int) -> Response:
        data = manager.get(session_id).frame_jpeg(frame_idx)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/api/sessions/{session_id}/prompts")
    def prompt(session_id: str, req: PromptRequest) -> dict:
        return manager.get(session_id).prompt(req).as_json()

    @app.delete("/api/sessions/{session_id}/objects/{obj_id}")
    def remove_object(session_id: str, obj_id: int) -> dict:
        serve = manager.get(session_id)
        serve.remove_object(obj_id)
        return {"removed": obj_id, "objects": serve.session.obj_ids}

    @app.post("/api/sessions/{session_id}/propagate")
    async def propagate(session_id: str, request: Request) -> StreamingResponse:
        body = await _json_body(request, empty_ok=True)
        try:
            req = PropagateRequest.model_validate(body or {})
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        serve = manager.get(session_id)
        run = await run_in_threadpool(serve.start_propagation, req)

        async def lines():
            try:
                while True:
                    item = await asyncio.to_thread(run.lines.get)
                    yield json.dumps(item, separators=(",", ":")) + "\n"
                    if item.get("done"):
                        return
            finally:  # the client went away or the stream ended: stop computing frames nobody reads
                run.cancel()

        # nosniff: a browser would otherwise hold the first lines back to guess the content type
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"}
        if run.total is not None:
            headers["X-Maskvos-Frames-Total"] = str(run.total)
        return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)

    @app.post("/api/sessions/{session_id}/cancel")
    def cancel(session_id: str) -> dict:
        serve = manager.get(session_id)
        cancelled = serve.cancel()
        return {"cancelled": cancelled, "frames": serve.run.frames if cancelled and serve.run else None}

    @app.get("/api/sessions/{session_id}/masks/{frame_idx}")
    def masks(session_id: str, frame_idx: int) -> dict:
        return manager.get(session_id).masks(frame_idx).as_json()

    @app.get("/api/sessions/{session_id}/export")
    def export(session_id: str, format: str = "davis") -> FileResponse:
        if format not in EXPORT_FORMATS:
            raise bad_request(f"Export format '{format}' is unknown; use one of {', '.join(EXPORT_FORMATS)}.")
        serve = manager.get(session_id)
        path = export_zip(serve, format, work_dir)
        return FileResponse(path, media_type="application/zip", filename=download_name(serve, format),
                            background=BackgroundTask(path.unlink, missing_ok=True))

    @app.delete("/api/sessions/{session_id}")
    def close_session(session_id: str) -> dict:
        manager.close(session_id)
        return {"closed": session_id}

    for prefix, router in extra_routers:
        app.include_router(router, prefix=prefix.rstrip("/"))
    static = resources.files("maskvos.serve") / "static"
    app.mount("/", StaticFiles(directory=str(static), html=True), name="page")
    return app


def _version() -> str:
    try:
        return metadata.version("maskvos")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


async def _json_body(request: Request, empty_ok: bool = False) -> object:
    raw = await request.body()
    if not raw.strip():
        if empty_ok:
            return None
        raise bad_request("The request has no body; send a JSON object (see /api/docs).")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"The request body is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc}); send a JSON object.") from None


def _error_handlers(app: FastAPI) -> None:
    def reply(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(ServeError)
    async def serve_error(_request: Request, exc: ServeError) -> JSONResponse:
        return reply(exc.status, str(exc))

    @app.exception_handler(MaskvosError)
    async def maskvos_error(_request: Request, exc: MaskvosError) -> JSONResponse:
        return reply(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return reply(422, validation_sentence(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"There is no {request.url.path}; see /api/docs for the API."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /api/docs for the methods it takes."
        else:
            message = str(exc.detail).rstrip(".") + "."
        return reply(exc.status_code, message)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return reply(500, f"The server failed on {request.method} {request.url.path} ({type(exc).__name__}); its log has the details.")
