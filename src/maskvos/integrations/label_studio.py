"""A Label Studio ML backend for video tasks over maskvos serve sessions.

Label Studio ("Connect model" in a project's Model settings) talks to it as to any backend built
on the `label-studio-ml` package: `GET /health` (and `GET /`) -> {"status": "UP", ...} to check
the URL, `POST /setup` {"project", "schema", ...} -> {"model_version"} when connecting, and
`POST /predict` {"tasks", "label_config", "project", "params": {"context"}} -> {"results": [one
prediction {"result": [region], "score", "model_version"} per task, in order]}. `/webhook`,
`/train`, `/metrics` and `/versions` answer too (maskvos does not train: webhooks are accepted and
ignored). Errors are {"status": code, "detail": one sentence}, the body `label-studio-ml` sends.

**A task** is a video: `data[<Video value>]` (`$video` by default) is a path on the backend's
machine or Label Studio's local-storage URL `/data/local-files/?d=<path>` (any host), both under
the server's `--root` (start it with Label Studio's `LOCAL_FILES_DOCUMENT_ROOT`); uploads
(`/data/upload/...`), cloud and other URLs are refused in one sentence.

**Frames** are the video's decoded frames, 0-based index i. Label Studio's VideoRectangle numbers
them from 1: its keyframe `frame` is i + 1, `time` is i / fps. A per-frame region (brush,
rectangle) gives its frame as `item_index` = i (Label Studio's index into an `<Image
valueList="$frames">` list, the one way its editor shows brushes frame by frame) or, failing that,
`value.frame` = i + 1 (VideoRectangle's numbering).

**Prompts** are the regions of the interactive `context.result` when Label Studio sends one, else
of the task's latest annotation: `videorectangle` keyframes (each a box on its frame; one object
per region id, as Label Studio keeps one id per track), `rectanglelabels` boxes and `brushlabels`
masks in Label Studio's brush RLE (one object per label name, since each per-frame region has its
own id; give objects of one kind distinct labels). Label Studio counts frames at the `<Video>`'s
`framerate` (24 unless set): set it to the video's rate so its frame i + 1 is decoded frame i. A box is a box prompt for SAM2 models and the
filled box as a mask for `featmatch`. Each object is tracked through the whole video from the
earliest prompt, forward then backward.

**Results**, chosen by the labeling config: with a `<VideoRectangle>`, one `videorectangle` track
per object (the user's keyframes as they are, one keyframe per other frame with the mask's box),
which Label Studio's video player draws; with a `<BrushLabels>` (brush is not a video tool in
Label Studio, so it labels an `<Image valueList="$frames">` of the video's frames), one
`brushlabels` region per object and frame (`format: rle`, Label Studio's brush RLE,
`original_width/height`, `item_index` = i, `value.frame` = i + 1), except on frames where the
user gave that object's brush. A config with both gets both.
"""

from __future__ import annotations

import json
import math
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from maskvos.errors import MaskvosError
from maskvos.integrations.common import SessionHost
from maskvos.integrations.polygons import mask_box
from maskvos.io.writers import decode_rle, encode_brush_rle, encode_rle
from maskvos.serve.api import ServeSettings
from maskvos.serve.errors import ServeError
from maskvos.serve.sessions import ModelPool, ServeSession
from maskvos.serve.wire import PromptRequest, PropagateRequest, Rle

NAME = "label-studio"
#: Label Studio's `<Video>` frame rate when its `framerate` attribute is not set (its default).
DEFAULT_FPS = 24.0
#: The data key of the video when the config has no `<Video>` tag.
DEFAULT_VIDEO_KEY = "video"
LOCAL_FILES_PATH = "/data/local-files"


class LabelStudioError(ServeError):
    """A request Label Studio sent that the backend cannot answer (its status and one sentence)."""


@dataclass(frozen=True)
class Control:
    """A control tag of the labeling config: its name, the object it labels, its labels."""

    name: str
    to_name: str
    labels: tuple[str, ...] = ()

    def label_for(self, wanted: str | None) -> list[str]:
        """The label a result of this control carries: `wanted` if the control has it, else its first."""
        if wanted is not None and (wanted in self.labels or not self.labels):
            return [wanted]
        return [self.labels[0]] if self.labels else []


@dataclass(frozen=True)
class LabelConfig:
    """What the backend reads of a labeling config (the XML Label Studio sends as `label_config`)."""

    video_key: str = DEFAULT_VIDEO_KEY
    video_name: str | None = None
    framerate: float | None = None
    video_rectangle: Control | None = None
    brush: Control | None = None

    @classmethod
    def parse(cls, xml: str | None) -> LabelConfig:
        if not xml:
            raise LabelStudioError(400, "The request has no label_config; connect the model from a project whose labeling config has a <Video> with <VideoRectangle> or <BrushLabels>.")
        try:
            root = ET.fromstring(xml)
        except ET.ParseError as exc:
            raise LabelStudioError(400, f"The labeling config is not valid XML ({exc}); fix it in the project's Labeling Interface.") from None
        tags = list(root.iter())
        videos = [t for t in tags if t.tag.lower() == "video"]
        video = videos[0] if videos else None
        key = (video.get("value", "") if video is not None else "").lstrip("$") or DEFAULT_VIDEO_KEY
        labels: dict[str, tuple[str, ...]] = {}
        for t in tags:  # <Labels toName="video"> hold the VideoRectangle's labels
            if t.tag.lower() == "labels" and t.get("toName"):
                labels[t.get("toName", "")] = tuple(v for c in t if (v := c.get("value")))

        def control(tag: str, own_labels: bool) -> Control | None:
            for t in tags:
                if t.tag.lower() == tag and t.get("name") and t.get("toName"):
                    to_name = t.get("toName", "").split(",")[0]
                    found = tuple(v for c in t if (v := c.get("value"))) if own_labels else labels.get(to_name, ())
                    return Control(t.get("name", ""), to_name, found)
            return None

        rate = video.get("framerate") if video is not None else None
        config = cls(key, None if video is None else video.get("name"), _positive(rate),
                     control("videorectangle", False), control("brushlabels", True))
        if config.video_rectangle is None and config.brush is None:
            raise LabelStudioError(400, "The labeling config has neither a <VideoRectangle> nor a <BrushLabels> tag; add one so the backend has a place for its masks.")
        return config


@dataclass
class ObjectPrompts:
    """One object's prompts: (frame, mask or None, box or None) each; where it came from."""

    obj_id: int
    label: str | None
    track_id: str | None = None
    prompts: list[tuple[int, np.ndarray | None, tuple[float, float, float, float] | None]] = field(default_factory=list)
    keyframes: list[dict[str, Any]] = field(default_factory=list)
    brush_frames: set[int] = field(default_factory=set)


def collect_objects(regions: list[dict[str, Any]], width: int, height: int, num_frames: int) -> list[ObjectPrompts]:
    """The objects and prompts of Label Studio result regions on a width x height video."""
    objects: dict[str, ObjectPrompts] = {}

    def obj(key: str, label: str | None) -> ObjectPrompts:
        if key not in objects:
            objects[key] = ObjectPrompts(len(objects) + 1, label)
        return objects[key]

    for region in regions:
        kind, value = region.get("type"), region.get("value") or {}
        if kind == "videorectangle":
            labels = value.get("labels") or []
            found = obj(f"track:{region.get('id')}", labels[0] if labels else None)
            found.track_id = str(region.get("id") or f"maskvos{found.obj_id}")
            for key in value.get("sequence") or []:
                frame = _frame_index(int(key.get("frame", 1)) - 1, num_frames, "A VideoRectangle keyframe")
                found.prompts.append((frame, None, _percent_box(key, width, height)))
                found.keyframes.append(key)
        elif kind in ("brushlabels", "rectanglelabels"):
            labels = value.get(kind) or []
            label = labels[0] if labels else None
            found = obj(f"label:{label}" if label else f"region:{region.get('id')}", label)
            frame = _region_frame(region, num_frames)
            if kind == "rectanglelabels":
                found.prompts.append((frame, None, _percent_box(value, width, height)))
            else:
                found.prompts.append((frame, _brush_mask(value, width, height), None))
                found.brush_frames.add(frame)
    return [o for o in objects.values() if o.prompts]


class LabelStudioBackend:
    """The endpoints' work on one integration's sessions."""

    def __init__(self, pool: ModelPool, settings: ServeSettings) -> None:
        self.pool, self.settings = pool, settings
        self.host = SessionHost(NAME, pool, settings)
        self.schemas: dict[str, str] = {}  # project -> the label config /setup gave

    @property
    def model_version(self) -> str:
        return f"maskvos-{self.pool.default.name}"

    def health(self) -> dict[str, Any]:
        model = self.pool.default
        return {"status": "UP", "model_class": "maskvos", "model_version": self.model_version,
                "backend": model.loaded.backend.name, "prompt_types": sorted(model.prompt_types)}

    def setup(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("schema"):
            LabelConfig.parse(body["schema"])  # refuse a config the backend cannot fill now, not at predict
            self.schemas[str(body.get("project"))] = body["schema"]
        return {"model_version": self.model_version}

    def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise LabelStudioError(400, "The request has no 'tasks' list; send the tasks to predict as Label Studio does.")
        config = LabelConfig.parse(body.get("label_config") or self.schemas.get(str(body.get("project"))))
        params = body.get("params") or {}
        context = params.get("context") or body.get("context")
        interactive = context.get("result") if isinstance(context, dict) and len(tasks) == 1 else None
        return {"results": [self.predict_task(task, config, interactive) for task in tasks],
                "model_version": self.model_version}

    def predict_task(self, task: dict[str, Any], config: LabelConfig, regions: list[dict] | None) -> dict[str, Any]:
        """One task's prediction (empty when the task holds no prompt)."""
        regions = regions or latest_annotation(task)
        empty = {"result": [], "score": 0.0, "model_version": self.model_version}
        if not regions:
            return empty
        data = task.get("data") or {}
        if config.video_key not in data:
            raise LabelStudioError(400, f"Task {task.get('id')} has no '{config.video_key}' in its data; import tasks whose data holds the video as the <Video> tag's value names it.")
        path = self.video_path(str(data[config.video_key]))
        serve = self.host.manager.create(path, f"label-studio task {task.get('id')}", None)
        try:
            objects = collect_objects(regions, serve.session.width, serve.session.height, serve.num_frames)
            if not objects:
                return empty
            frames = self._track(serve, objects)
            fps = config.framerate or DEFAULT_FPS  # Label Studio numbers frames at the <Video>'s rate
            return self._prediction(config, objects, frames, serve, fps, regions)
        finally:
            self.host.manager.close(serve.session_id)

    def video_path(self, url: str) -> Path:
        """The local file a task's video URL names (under the server's root), or a refusal."""
        parts = urllib.parse.urlsplit(url)
        if parts.path.rstrip("/") == LOCAL_FILES_PATH:
            rel = urllib.parse.parse_qs(parts.query).get("d", [""])[0]
            if not rel:
                raise LabelStudioError(400, f"Video URL '{url}' has no ?d= path; use Label Studio's local-storage URLs /data/local-files/?d=<path>.")
            return self.host.catalog.resolve(rel)
        if parts.scheme in ("", "file") and not parts.path.startswith("/data/") and parts.path:
            return self.host.catalog.resolve(urllib.parse.unquote(parts.path) if parts.scheme else url)
        raise LabelStudioError(400, f"Video URL '{url}' is neither a local path nor a /data/local-files/?d= URL; serve the videos from Label Studio's local storage under the backend's --root.")

    def _track(self, serve: ServeSession, objects: list[ObjectPrompts]) -> dict[int, dict[int, tuple[dict, float]]]:
        """Prompt every object, propagate through the video; frame -> obj_id -> (COCO RLE, score)."""
        takes_box = "box" in serve.model.prompt_types
        w, h = serve.session.width, serve.session.height
        for o in objects:
            for frame, mask, box in o.prompts:
                if box is not None and not takes_box:
                    mask, box = _box_mask(box, w, h), None
                if mask is not None and not mask.any():
                    raise LabelStudioError(400, f"The prompt of object {o.label or o.obj_id} on frame {frame} covers no pixel; draw it over the object.")
                serve.prompt(PromptRequest(frame_idx=frame, obj_id=o.obj_id, box=box,
                                           mask=None if mask is None else Rle(**encode_rle(mask))))
        first = min(f for o in objects for f, _, _ in o.prompts)
        run = serve.start_propagation(PropagateRequest(direction="both", start=first))
        frames: dict[int, dict[int, tuple[dict, float]]] = {}
        while True:
            line = run.lines.get()
            if "frame_idx" in line:
                frames[line["frame_idx"]] = {m["obj_id"]: (m["mask"], m["score"]) for m in line["objects"]}
            elif "error" in line:
                raise LabelStudioError(500, line["error"])
            elif line.get("done"):
                return frames

    def _prediction(self, config: LabelConfig, objects: list[ObjectPrompts], frames: dict[int, dict[int, tuple[dict, float]]],
                    serve: ServeSession, fps: float, regions: list[dict]) -> dict[str, Any]:
        w, h, n = serve.session.width, serve.session.height, serve.num_frames
        counted = next(((r.get("value") or {}) for r in regions if r.get("type") == "videorectangle"), {})
        frames_count = int(counted.get("framesCount") or n)
        duration = float(counted.get("duration") or n / fps)
        result, probs = [], []
        for o in objects:
            boxes, brushes = [], []
            for frame in sorted(frames):
                rle, score = frames[frame].get(o.obj_id, (None, -math.inf))
                mask = None if rle is None else decode_rle(rle)
                if mask is None or not mask.any():
                    continue
                prob = _sigmoid(score)
                probs.append(prob)
                box = mask_box(mask)
                boxes.append((frame, box))
                if config.brush is not None and frame not in o.brush_frames:
                    brushes.append(_brush_region(config.brush, o, frame, mask, w, h, prob))
            if config.video_rectangle is not None:
                result.append(_track_region(config.video_rectangle, o, boxes, w, h, fps, frames_count, duration))
            result += brushes
        score = float(np.mean(probs)) if probs else 0.0
        return {"result": result, "score": score, "model_version": self.model_version}


def latest_annotation(task: dict[str, Any]) -> list[dict[str, Any]]:
    """The result regions of the task's latest annotation that has any (none: [])."""
    for annotation in reversed(task.get("annotations") or []):
        if annotation.get("result") and not annotation.get("was_cancelled"):
            return list(annotation["result"])
    return []


def _track_region(control: Control, o: ObjectPrompts, boxes: list, width: int, height: int, fps: float,
                  frames_count: int, duration: float) -> dict[str, Any]:
    given = {int(k.get("frame", 0)): k for k in o.keyframes}
    sequence = [dict(k) for k in o.keyframes]
    for frame, (x0, y0, x1, y1) in boxes:
        if frame + 1 in given:
            continue
        sequence.append({"frame": frame + 1, "x": 100.0 * x0 / width, "y": 100.0 * y0 / height,
                         "width": 100.0 * (x1 - x0) / width, "height": 100.0 * (y1 - y0) / height,
                         "rotation": 0, "enabled": True, "time": frame / fps})
    sequence.sort(key=lambda k: int(k["frame"]))
    value: dict[str, Any] = {"framesCount": frames_count, "duration": duration, "sequence": sequence}
    if labels := control.label_for(o.label):
        value["labels"] = labels
    return {"id": o.track_id or f"maskvos{o.obj_id}", "from_name": control.name, "to_name": control.to_name,
            "type": "videorectangle", "origin": "prediction", "value": value}


def _brush_region(control: Control, o: ObjectPrompts, frame: int, mask: np.ndarray, width: int, height: int,
                  prob: float) -> dict[str, Any]:
    value: dict[str, Any] = {"format": "rle", "rle": encode_brush_rle(mask), "brushlabels": control.label_for(o.label),
                             "frame": frame + 1}
    return {"id": f"maskvos{o.obj_id}f{frame}", "from_name": control.name, "to_name": control.to_name,
            "type": "brushlabels", "origin": "prediction", "original_width": width, "original_height": height,
            "image_rotation": 0, "item_index": frame, "score": prob, "value": value}


def _region_frame(region: dict[str, Any], num_frames: int) -> int:
    if region.get("item_index") is not None:
        return _frame_index(int(region["item_index"]), num_frames, f"Region {region.get('id')}'s item_index")
    frame = (region.get("value") or {}).get("frame")
    if frame is None:
        raise LabelStudioError(400, f"Region {region.get('id')} has neither an item_index nor a value.frame; give the frame it is drawn on (item_index from 0, or frame from 1).")
    return _frame_index(int(frame) - 1, num_frames, f"Region {region.get('id')}'s frame")


def _frame_index(frame: int, num_frames: int, what: str) -> int:
    if not 0 <= frame < num_frames:
        raise LabelStudioError(400, f"{what} points at video frame {frame}, outside the video's frames 0..{num_frames - 1}; draw it on a frame of this video.")
    return frame


def _percent_box(value: dict[str, Any], width: int, height: int) -> tuple[float, float, float, float]:
    """A Label Studio box (x, y, width, height in percent of the frame) in pixels (x0, y0, x1, y1)."""
    try:
        x, y = float(value["x"]) * width / 100, float(value["y"]) * height / 100
        x1, y1 = x + float(value["width"]) * width / 100, y + float(value["height"]) * height / 100
    except (KeyError, TypeError, ValueError):
        raise LabelStudioError(400, "A rectangle has no numeric x, y, width and height; send Label Studio's percent coordinates.") from None
    box = (max(0.0, x), max(0.0, y), min(float(width), x1), min(float(height), y1))
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        raise LabelStudioError(400, "A rectangle is under one pixel wide or high inside the frame; draw it over the object.")
    return box


def _box_mask(box: tuple[float, float, float, float], width: int, height: int) -> np.ndarray:
    xs, ys = np.arange(width) + 0.5, np.arange(height) + 0.5
    return ((ys >= box[1]) & (ys <= box[3]))[:, None] & ((xs >= box[0]) & (xs <= box[2]))[None, :]


def _brush_mask(value: dict[str, Any], width: int, height: int) -> np.ndarray:
    """An (H, W) bool mask of a brush region's Label Studio RLE (decoded by label_studio_sdk)."""
    if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
        raise LabelStudioError(400, "A brush region has no 'rle' list in format 'rle'; send Label Studio's brush RLE.")
    try:
        from label_studio_sdk.converter.brush import decode_rle as decode_brush
    except ImportError:
        raise LabelStudioError(503, "Brush prompts need label-studio-sdk, which is not installed; install it with pip install 'maskvos[integrations]'.") from None
    try:
        pixels = np.asarray(decode_brush(value["rle"]), dtype=np.uint8)
    except Exception:  # the decoder's own errors are of many kinds
        raise LabelStudioError(400, "A brush region's RLE cannot be decoded; send the rle Label Studio's brush tool wrote.") from None
    if pixels.size != width * height * 4:
        raise LabelStudioError(400, f"A brush region holds {pixels.size // 4} pixels but the video's frames have {width}x{height}; draw it on this video's frames.")
    return pixels.reshape(height, width, 4)[..., 3] > 0


def _positive(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _sigmoid(logit: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(logit, 60.0), -60.0)))


def router(pool: ModelPool, settings: ServeSettings) -> APIRouter:
    """The ML backend's endpoints (mount at the URL given to Label Studio's "Connect model")."""
    return build_router(LabelStudioBackend(pool, settings))


def build_router(backend: LabelStudioBackend) -> APIRouter:
    """The endpoints of `backend` (its sessions stay reachable through `backend.host.manager`)."""
    api = APIRouter(lifespan=backend.host.lifespan, tags=["Label Studio"])

    @api.get("/")
    @api.get("/health")
    def health() -> dict[str, Any]:
        return backend.health()

    @api.post("/setup")
    async def setup(request: Request) -> JSONResponse:
        return await _answer(request, backend.setup)

    @api.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        return await _answer(request, backend.predict)

    @api.post("/webhook", status_code=201)
    @api.post("/train", status_code=201)
    def webhook() -> dict[str, Any]:
        return {"status": "ignored", "detail": "maskvos does not train on Label Studio annotations; predictions need no training."}

    @api.get("/metrics")
    def metrics() -> dict[str, Any]:
        return {}

    @api.get("/versions")
    @api.post("/versions")
    def versions() -> dict[str, Any]:
        return {"versions": [backend.model_version], "model_dir": ""}

    return api


async def _answer(request: Request, action: Any) -> JSONResponse:
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
        if not isinstance(body, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        return _failure(400, "The request body is not a JSON object; send JSON as Label Studio does.")
    try:
        return JSONResponse(await run_in_threadpool(action, body))
    except ServeError as exc:
        return _failure(exc.status, str(exc))
    except MaskvosError as exc:
        return _failure(400, str(exc))


def _failure(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": status, "detail": message}, status_code=status)


__all__ = ["NAME", "LabelConfig", "LabelStudioBackend", "build_router", "collect_objects", "latest_annotation", "router"]
