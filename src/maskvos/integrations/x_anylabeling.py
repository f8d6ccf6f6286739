"""X-AnyLabeling's remote-server video protocol over maskvos sessions.

X-AnyLabeling's "Remote-Server" model (its `remote_server.py` client) talks to an
X-AnyLabeling-Server; these endpoints answer it the same way, so pointing its Server URL at
maskvos makes clicks on one frame become polygons on every frame:

- `GET /v1/models` -> {"success": true, "data": {model_id: {"display_name", "widgets", "params",
  "capabilities", "batch_processing_mode": "video"}}}: the server's model (the client shows the
  widgets named and treats "video" models as sessions).
- `POST /v1/video/init` {"model", "frames": [base64 or data-URI images], "start_frame_index"} ->
  data {"session_id", "num_frames", "start_frame_index"}. maskvos also takes "source": a video or
  frame folder under the server's --root instead of "frames".
- `POST /v1/video/prompt` {"session_id", "model", "frame_index", "points": [[x, y]] as fractions of
  the frame's width and height, "point_labels": [1|0], "obj_id", "params": {"conf_threshold",
  "epsilon_factor", "show_masks", "show_boxes"}} -> data {"frame_index", "masks": [shape],
  "num_objects"}; maskvos also takes "box" ([x0, y0, x1, y1], fractions) and "mask" (a base64
  PNG of the frame's size, non-zero = object, the prompt `featmatch` takes). Text prompts need a
  SAM3 server and are refused in one sentence.
- `POST /v1/video/propagate/stream` {"session_id", "model", "start_frame", "end_frame"} ->
  server-sent events `data: {json}`: {"type": "started", "total_frames", "start_frame_index"},
  one {"type": "progress", "current_frame", "total_frames", "progress"} per frame (maskvos adds
  that frame's "masks"), then {"type": "completed", "results": {frame: {"masks": [shape]}}} or
  {"type": "error", "message"}. Forward from `start_frame` (maskvos also takes "direction").
  A closed connection cancels the propagation after the frame being computed.
- `POST /v1/video/cleanup/{session_id}?model=...` -> data {"message"}.
- `GET /health` -> {"status": "healthy", "models_loaded", "timestamp"}.

A shape is {"label": "AUTOLABEL_OBJECT", "shape_type": "polygon" | "rectangle", "points": [[x, y]]
pixel coordinates, "score": probability, "group_id": obj_id + 1} as the client draws it; one
polygon per part of an object's mask (see `polygons.py`), a rectangle too with "show_boxes".

Errors are {"success": false, "error": {"code", "message": one sentence}} with a 4xx / 503 status
(the client turns a non-2xx answer into a message and resets its session); a propagation's
errors are one "error" event in a 200 stream, the only place the client shows the server's text.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import math
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from maskvos.errors import MaskvosError
from maskvos.integrations.common import SessionHost
from maskvos.integrations.polygons import mask_box, mask_polygons
from maskvos.io.writers import decode_rle, encode_rle
from maskvos.serve.api import ServeSettings
from maskvos.serve.errors import ServeError
from maskvos.serve.sessions import ModelPool, PooledModel, ServeSession, remove_tree
from maskvos.serve.wire import PromptRequest, PropagateRequest, Rle, validation_sentence

NAME = "x-anylabeling"
#: The label X-AnyLabeling's server gives shapes of click prompts (the client may replace it).
LABEL = "AUTOLABEL_OBJECT"
#: The object a prompt without "obj_id" refines.
DEFAULT_OBJ_ID = 1
#: The X-AnyLabeling widgets a maskvos model shows: clicks, their removal, the fineness slider.
WIDGETS = [
    {"name": "button_add_point", "value": None},
    {"name": "button_remove_point", "value": None},
    {"name": "button_clear", "value": None},
    {"name": "button_finish_object", "value": None},
    {"name": "mask_fineness_slider", "value": 10},
    {"name": "mask_fineness_value_label", "value": None},
    {"name": "toggle_preserve_existing_annotations", "value": False},
]
_FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}
_CODES = {400: "INVALID_REQUEST", 403: "FORBIDDEN", 404: "NOT_FOUND", 409: "SESSION_BUSY", 413: "TOO_LARGE",
          415: "UNSUPPORTED_MEDIA", 503: "SERVER_BUSY"}


class XError(ServeError):
    """A refused request with X-AnyLabeling's error `code` (e.g. "SESSION_NOT_FOUND")."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, message)
        self.code = code


class InitRequest(BaseModel):
    model: str
    frames: list[str] | None = None
    source: str | None = Field(None, description="maskvos: a video or frame folder under the server's root")
    start_frame_index: int = 0


class PromptBody(BaseModel):
    session_id: str
    model: str | None = None
    text_prompt: str | None = None
    frame_index: int = 0
    points: list[tuple[float, float]] | None = None
    point_labels: list[int] | None = None
    obj_id: int | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    box: tuple[float, float, float, float] | None = Field(None, description="maskvos: x0, y0, x1, y1 as fractions")
    mask: str | None = Field(None, description="maskvos: base64 PNG of the frame's size, non-zero = object")


class PropagateBody(BaseModel):
    session_id: str
    model: str | None = None
    start_frame: int | None = None
    end_frame: int | None = None
    direction: Literal["forward", "backward", "both"] = "forward"


@dataclass
class ShapeParams:
    """How masks become X-AnyLabeling shapes (a prompt's "params"; the propagation uses the last)."""

    conf_threshold: float = 0.0
    epsilon_factor: float = 0.001
    show_masks: bool = True
    show_boxes: bool = False

    @classmethod
    def of(cls, params: dict[str, Any]) -> ShapeParams:
        base = cls()
        try:
            return cls(float(params.get("conf_threshold", base.conf_threshold)),
                       float(params.get("epsilon_factor", base.epsilon_factor)),
                       bool(params.get("show_masks", base.show_masks)), bool(params.get("show_boxes", base.show_boxes)))
        except (TypeError, ValueError):
            raise XError(400, "INVALID_PARAMS", "The prompt's params hold a value that is not a number or flag; send conf_threshold and epsilon_factor as numbers.") from None


@dataclass
class Video:
    """An X-AnyLabeling session: the serve session, where its frames start in the client's
    numbering, and the shape settings of its last prompt."""

    serve: ServeSession
    start_frame_index: int
    shape_params: ShapeParams = field(default_factory=ShapeParams)

    def relative(self, frame_index: int, what: str) -> int:
        rel = frame_index - self.start_frame_index
        if not 0 <= rel < self.serve.num_frames:
            last = self.start_frame_index + self.serve.num_frames - 1
            raise XError(400, "INVALID_FRAME", f"{what} {frame_index} is outside the session's frames ({self.start_frame_index}..{last}); send a frame in that range.")
        return rel


def object_shapes(obj_id: int, rle: dict[str, object], score_logit: float, params: ShapeParams) -> list[dict[str, Any]]:
    """The shapes of one object's mask on one frame (none when it is empty or under the threshold)."""
    prob = 1.0 / (1.0 + math.exp(-max(min(score_logit, 60.0), -60.0)))
    if prob < params.conf_threshold:
        return []
    mask = decode_rle(rle)
    shape = {"label": LABEL, "score": prob, "group_id": obj_id + 1}
    shapes = []
    if params.show_masks:
        shapes += [{**shape, "shape_type": "polygon", "points": p} for p in mask_polygons(mask, params.epsilon_factor)]
    box = mask_box(mask) if params.show_boxes else None
    if box is not None:
        x0, y0, x1, y1 = box
        shapes.append({**shape, "shape_type": "rectangle", "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]})
    return shapes


def frame_shapes(frame: dict[str, Any], params: ShapeParams, only: int | None = None) -> list[dict[str, Any]]:
    """Shapes of a frame as `FrameMasks.as_json` gives it (all objects, or object `only`)."""
    return [s for o in frame["objects"] if only is None or o["obj_id"] == only
            for s in object_shapes(o["obj_id"], o["mask"], o["score"], params)]


def decode_image(data: str, what: str) -> tuple[bytes, str, tuple[int, int]]:
    """The bytes, file suffix and (width, height) of a base64 image (a data URI's prefix allowed)."""
    from PIL import Image, UnidentifiedImageError

    payload = data.split(",", 1)[1] if data.startswith("data:") and "," in data else data
    try:
        raw = base64.b64decode(payload, validate=True)
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            fmt, size = image.format or "", image.size
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
        raise XError(400, "INVALID_FRAME", f"{what} is not a base64-encoded image; send JPEG or PNG files as base64 or data URIs.") from None
    if fmt not in _FORMAT_SUFFIX:
        raise XError(400, "INVALID_FRAME", f"{what} is a {fmt or 'unknown'} image; send JPEG, PNG, BMP or WebP.")
    return raw, _FORMAT_SUFFIX[fmt], size


class XAnyLabeling:
    """The endpoints' work, on one integration's sessions."""

    def __init__(self, pool: ModelPool, settings: ServeSettings) -> None:
        self.pool, self.settings = pool, settings
        self.host = SessionHost(NAME, pool, settings)
        self.videos: dict[str, Video] = {}
        self._lock = threading.Lock()  # guards `videos` (requests run in a thread pool)

    def models(self) -> dict[str, Any]:
        model = self.pool.default
        kinds = sorted(model.prompt_types)
        takes = "clicks" if "points" in kinds else "mask prompts only"
        return {model.name: {
            "display_name": f"maskvos {model.name} (video, {takes})",
            "widgets": WIDGETS if "points" in kinds else [w for w in WIDGETS if "point" not in w["name"]],
            "params": {"backend": model.loaded.backend.name, "prompt_types": kinds, "device": str(model.loaded.device)},
            "capabilities": {},
            "batch_processing_mode": "video",
        }}

    def model(self, name: str | None) -> PooledModel:
        try:
            return self.pool.get(name)
        except ServeError:
            raise
        except MaskvosError as exc:
            raise XError(404, "MODEL_NOT_FOUND", f"Model '{name}' cannot be loaded ({str(exc).rstrip('.')}); pick {self.pool.default.name} from GET /v1/models.") from None

    def video(self, session_id: str) -> Video:
        with self._lock:
            found = self.videos.get(session_id)
        try:
            serve = self.host.manager.get(session_id)
        except ServeError:
            with self._lock:
                self.videos.pop(session_id, None)
            found = None
        if found is None or found.serve is not serve:
            raise XError(404, "SESSION_NOT_FOUND", f"Session '{session_id}' does not exist (it was cleaned up, timed out or never opened); initialise one with POST /v1/video/init.")
        return found

    def init(self, req: InitRequest) -> dict[str, Any]:
        model = self.model(req.model)
        if (req.frames is None) == (req.source is None):
            raise XError(400, "MISSING_FRAMES", "The request needs either 'frames' (base64 images) or 'source' (a video under the server's root); send one of them.")
        if req.source is not None:
            path, cleanup, label = self.host.catalog.resolve(req.source), None, req.source
        else:
            path = cleanup = self._store_frames(req.frames or [])
            label = f"x-anylabeling upload ({len(req.frames or [])} frames)"
        try:
            serve = self.host.manager.create(path, label, model.name, cleanup)
        except BaseException:
            if cleanup is not None:
                remove_tree(cleanup)
            raise
        known = {s.session_id for s in self.host.manager.sessions()}
        with self._lock:  # forget sessions the manager closed after their idle time-out
            for gone in [k for k in self.videos if k not in known]:
                del self.videos[gone]
            self.videos[serve.session_id] = Video(serve, req.start_frame_index)
        return {"session_id": serve.session_id, "num_frames": serve.num_frames, "start_frame_index": req.start_frame_index}

    def _store_frames(self, frames: list[str]) -> Path:
        if not frames:
            raise XError(400, "MISSING_FRAMES", "The request's 'frames' list is empty; send the video's frames as base64 images.")
        folder = self.host.upload_dir()
        limit, written, size0 = self.settings.max_upload_mb << 20, 0, None
        try:
            for i, data in enumerate(frames):
                raw, suffix, size = decode_image(data, f"Frame {i}")
                if size0 is None:
                    size0 = size
                elif size != size0:
                    raise XError(400, "INVALID_FRAME", f"Frame {i} is {size[0]}x{size[1]} but frame 0 is {size0[0]}x{size0[1]} (width x height); send frames of one size.")
                written += len(raw)
                if written > limit:
                    raise XError(413, "TOO_LARGE", f"The frames are larger than the server's limit of {limit >> 20} MiB; send fewer frames or start the server with a larger --max-upload-mb.")
                (folder / f"{i:06d}{suffix}").write_bytes(raw)
        except BaseException:
            remove_tree(folder)
            raise
        return folder

    def prompt(self, body: PromptBody) -> dict[str, Any]:
        video = self.video(body.session_id)
        if body.text_prompt:
            raise XError(400, "TEXT_PROMPT_UNSUPPORTED", "maskvos models take clicks (and boxes or masks), not text prompts; click the object with the point tool instead.")
        if not body.points and body.box is None and body.mask is None:
            raise XError(400, "MISSING_PROMPT", "The prompt has no points, box or mask; click the object first.")
        if body.points and (body.point_labels is None or len(body.point_labels) != len(body.points)):
            raise XError(400, "INVALID_PROMPT", "Points and point_labels must have the same length; send one label (1 object, 0 background) per point.")
        serve, rel = video.serve, video.relative(body.frame_index, "Frame index")
        w, h = serve.session.width, serve.session.height
        coords = [c for p in (body.points or []) for c in p] + list(body.box or ())
        if any(not 0.0 <= c <= 1.0 for c in coords):
            raise XError(400, "INVALID_PROMPT", "Points and boxes are fractions of the frame's width and height (0 to 1), as X-AnyLabeling sends them; divide pixel coordinates by the frame size.")
        points = [(x * w, y * h) for x, y in body.points] if body.points else None
        box = (body.box[0] * w, body.box[1] * h, body.box[2] * w, body.box[3] * h) if body.box else None
        mask = None if body.mask is None else Rle(**encode_rle(self._prompt_mask(body.mask, w, h)))
        obj_id = DEFAULT_OBJ_ID if body.obj_id is None else body.obj_id
        try:
            request = PromptRequest(frame_idx=rel, obj_id=obj_id, mask=mask, points=points,
                                    labels=body.point_labels if points else None, box=box)
        except ValidationError as exc:
            raise XError(400, "INVALID_PROMPT", validation_sentence(list(exc.errors()))) from None
        params = ShapeParams.of(body.params)
        frame = serve.prompt(request)
        video.shape_params = params
        shapes = frame_shapes(frame.as_json(), params, only=obj_id)
        return {"frame_index": body.frame_index, "masks": shapes, "num_objects": len({s["group_id"] for s in shapes})}

    @staticmethod
    def _prompt_mask(data: str, width: int, height: int) -> np.ndarray:
        from PIL import Image

        raw, _suffix, size = decode_image(data, "The prompt's mask")
        if size != (width, height):
            raise XError(400, "INVALID_PROMPT", f"The prompt's mask is {size[0]}x{size[1]} but the frames are {width}x{height} (width x height); send a mask of the frame's size.")
        with Image.open(io.BytesIO(raw)) as image:
            return np.asarray(image.convert("L")) > 0

    def cleanup(self, session_id: str) -> dict[str, Any]:
        self.video(session_id)
        with self._lock:
            self.videos.pop(session_id, None)
        self.host.manager.close(session_id)
        return {"message": f"Session {session_id} cleaned up"}

    async def propagate_events(self, body: PropagateBody) -> AsyncIterator[dict[str, Any]]:
        """The propagation's events, in order; a failure before it starts is one error event."""
        try:
            video = self.video(body.session_id)
            rel = [None if f is None else video.relative(f, what) for f, what in
                   ((body.start_frame, "Start frame"), (body.end_frame, "End frame"))]
            run = await run_in_threadpool(video.serve.start_propagation,
                                          PropagateRequest(direction=body.direction, start=rel[0], end=rel[1]))
        except MaskvosError as exc:
            yield {"type": "error", "message": str(exc)}
            return
        offset, total, params = video.start_frame_index, video.serve.num_frames, video.shape_params
        yield {"type": "started", "total_frames": total, "start_frame_index": offset}
        results: dict[str, dict[str, Any]] = {}
        count, planned = 0, run.total or total

        def next_frame() -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
            item = run.lines.get()
            return item, (frame_shapes(item, params) if "frame_idx" in item else None)

        try:
            while True:
                item, shapes = await asyncio.to_thread(next_frame)
                if shapes is not None:
                    count += 1
                    current = item["frame_idx"] + offset
                    results[str(current)] = {"masks": shapes}
                    yield {"type": "progress", "current_frame": current, "total_frames": total,
                           "progress": min(count / planned, 1.0), "masks": shapes}
                elif "error" in item:
                    yield {"type": "error", "message": item["error"]}
                    return
                elif item.get("done"):
                    yield {"type": "completed", "results": results, "frames": count, "cancelled": item["cancelled"]}
                    return
        finally:  # the client went away or the stream ended: stop computing frames nobody reads
            run.cancel()


def router(pool: ModelPool, settings: ServeSettings) -> APIRouter:
    """The X-AnyLabeling endpoints (mount at the server URL given to X-AnyLabeling)."""
    return build_router(XAnyLabeling(pool, settings))


def build_router(x: XAnyLabeling) -> APIRouter:
    """The endpoints of `x` (its sessions stay reachable through `x.host.manager`)."""
    api = APIRouter(lifespan=x.host.lifespan, tags=["X-AnyLabeling"])

    @api.get("/health")
    def health() -> dict[str, Any]:
        stamp = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        return {"status": "healthy", "models_loaded": 1, "timestamp": stamp}

    @api.get("/v1/models")
    def models() -> JSONResponse:
        return _success(x.models())

    @api.post("/v1/video/init")
    async def init(request: Request) -> JSONResponse:
        return await _answer(request, InitRequest, x.init)

    @api.post("/v1/video/prompt")
    async def prompt(request: Request) -> JSONResponse:
        return await _answer(request, PromptBody, x.prompt)

    @api.post("/v1/video/propagate/stream")
    async def propagate_stream(request: Request) -> StreamingResponse:
        try:
            body = _parse(await request.body(), PropagateBody)
        except XError as exc:
            events = _one_event({"type": "error", "message": str(exc)})
        else:
            events = x.propagate_events(body)

        async def stream() -> AsyncIterator[str]:
            async for event in events:
                yield f"data: {json.dumps(event, separators=(',', ':'))}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @api.post("/v1/video/cleanup/{session_id}")
    async def cleanup(session_id: str, model: str | None = None) -> JSONResponse:
        return await _call(lambda: x.cleanup(session_id))

    return api


async def _one_event(event: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    yield event


def _parse(raw: bytes, schema: type[BaseModel]) -> Any:
    try:
        data = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise XError(400, "INVALID_JSON", "The request body is not valid JSON; send a JSON object.") from None
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise XError(422, "VALIDATION_ERROR", validation_sentence(list(exc.errors()))) from None


async def _answer(request: Request, schema: type[BaseModel], action: Callable[[Any], dict[str, Any]]) -> JSONResponse:
    raw = await request.body()
    return await _call(lambda: action(_parse(raw, schema)))


async def _call(action: Callable[[], dict[str, Any]]) -> JSONResponse:
    """The action's result as {"success": true, "data"}, or its refusal as X-AnyLabeling's error body."""
    try:
        return _success(await run_in_threadpool(action))
    except XError as exc:
        return _failure(exc.status, exc.code, str(exc))
    except ServeError as exc:
        code = "SESSION_NOT_FOUND" if exc.status == 404 and "Session" in str(exc) else _CODES.get(exc.status, "ERROR")
        return _failure(exc.status, code, str(exc))
    except MaskvosError as exc:
        return _failure(400, "INVALID_REQUEST", str(exc))


def _success(data: Any) -> JSONResponse:
    return JSONResponse({"success": True, "data": data})


def _failure(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "error": {"code": code, "message": message}}, status_code=status)


__all__ = ["NAME", "XAnyLabeling", "build_router", "frame_shapes", "object_shapes", "router"]
