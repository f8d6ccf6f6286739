"""A CVAT tracking function (CVAT's AI agents, `cvat_sdk.auto_annotation.TrackingFunction`) over
maskvos sessions.

CVAT does not call an HTTP server for these: `cvat-cli function run-agent` loads this module in a
worker process of its own and calls, for each request CVAT's UI makes while a user tracks a shape,

- `preprocess_image(context, image)` once per frame (a `PIL.Image`), shared by every shape on it;
- `init_tracking_state(context, pp_image, shape)` on the frame where the user drew `shape`
  (a `TrackableShape`: "mask" as `cvat_sdk.masks.encode_mask` codes it, "polygon" as flat
  [x1, y1, x2, y2, ...], "rectangle" as [xtl, ytl, xbr, ybr], pixels of the frame);
- `track(context, pp_image, state)` on each following frame, which returns the shape there (of the
  type drawn) or None when the object is lost.

The agent keeps each state (an object in its worker, never serialised) for up to 8 hours after
its last use. A state here is a small maskvos session on a stream of one frame at a time: the
first frame holds the prompt (the mask, the rasterised polygon, or the rectangle: a box prompt for
SAM2 models, the filled box as a mask for `featmatch`), and each `track` gives the session the
next frame and reads its result. Its memory is the session's bounded memory (the policy's window
of recent frames plus the prompt) and a frame cache of `FrameCache.cache_size` frames, so a track
of any length holds the same amount (`TrackState.nbytes`).

No dataclasses here: cvat-cli's `--function-file` runs this file as a module it does not register,
where `dataclasses` cannot resolve annotations.

The module is a function factory (`create`): cvat-cli calls `create(**params)` with its `-p
NAME=TYPE:VALUE` options, `-p model=str:sam2.1-tiny` (a model name or a checkpoint path; default
the `MASKVOS_CVAT_MODEL` environment variable, else the offline `featmatch`) and `-p
device=str:cuda` (default `MASKVOS_CVAT_DEVICE`, else CUDA where there is one). The model loads on
first use, so `function create-native` (which only reads `spec`) downloads nothing. The module
also has `spec`, `preprocess_image`, `init_tracking_state` and `track` of its own, those of the
tracker the environment variables choose.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import cvat_sdk.auto_annotation as cvataa
import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch
from cvat_sdk.masks import decode_mask, encode_mask

from maskvos.app import LoadedModel, load_run_model, settings_for
from maskvos.backends import open_session
from maskvos.errors import MaskvosError
from maskvos.inference.api import FrameResult, Session
from maskvos.inference.config import InferenceConfig
from maskvos.integrations.polygons import mask_box, mask_polygons
from maskvos.io.frames import StreamSource

NAME = "cvat"
#: Environment variables giving the model and device when no `-p` parameter does.
MODEL_ENV, DEVICE_ENV = "MASKVOS_CVAT_MODEL", "MASKVOS_CVAT_DEVICE"
#: The model used when neither a parameter nor the environment names one (offline, mask prompts).
DEFAULT_MODEL = "featmatch"
#: Shape types the function tracks (CVAT's UI offers AI trackers for these).
SHAPE_TYPES = ("mask", "polygon", "rectangle")
#: The object id each per-track session gives its one object.
OBJ_ID = 1
#: Tolerance of the polygon a mask is traced into, relative to its boundary length.
POLYGON_EPSILON = 0.002

spec = cvataa.TrackingFunctionSpec(supported_shape_types=SHAPE_TYPES)


class CvatTrackerError(MaskvosError):
    """A shape the tracker cannot take, or a tracker used out of order."""


class TrackerImage:
    """A frame as the tracker's methods receive it (`preprocess_image`'s result).

    Attributes:
        rgb: (H, W, 3) uint8, read-only (CVAT shares it between every shape on the frame).
    """

    __slots__ = ("rgb",)

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb = rgb

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


class FrameFeed:
    """The frames of one track as an iterator a `StreamSource` reads: each is given (`give`)
    before the session asks for it, so the session never waits and never reads ahead."""

    def __init__(self, first: np.ndarray) -> None:
        self._next: np.ndarray | None = first

    def give(self, frame: np.ndarray) -> None:
        if self._next is not None:
            raise CvatTrackerError("The previous frame of this track was never read; call track once per frame.")
        self._next = frame

    def __iter__(self) -> FrameFeed:
        return self

    def __next__(self) -> np.ndarray:
        if self._next is None:
            raise CvatTrackerError("The session asked for a frame of the track before CVAT sent it; this is a bug of the adapter.")
        frame, self._next = self._next, None
        return frame


class TrackState:
    """One tracked shape: its session (one object, on a stream of the track's frames) and the
    open propagation that yields a result per frame given.

    Attributes:
        shape_type: the type drawn ("mask", "polygon", "rectangle"); `track` returns this type.
        size: (width, height) of the track's frames.
        frames_tracked: frames tracked since the prompt frame.
    """

    def __init__(self, shape_type: str, size: tuple[int, int], feed: FrameFeed, session: Session,
                 results: Iterator[FrameResult]) -> None:
        self.shape_type, self.size, self.feed, self.session, self.results = shape_type, size, feed, session, results
        self.frames_tracked = 0
        self.lock = threading.Lock()

    def step(self, frame: np.ndarray) -> FrameResult:
        """The session's result on the track's next frame."""
        with self.lock:
            self.feed.give(frame)
            result = next(self.results, None)
            if result is None:
                raise CvatTrackerError("The track's propagation ended early; start tracking the shape again.")
            self.frames_tracked += 1
            return result

    def nbytes(self) -> int:
        """Bytes of tensors and arrays the state holds: the session's memory (its `state_dict`)
        and its frame cache (frames and their features)."""
        held: list[object] = [self.session.state_dict()]
        cache = getattr(self.session, "frames", None)
        if cache is not None:
            held += [list(cache._frames.values()), list(cache._features.values())]
        return _nbytes(held)

    def close(self) -> None:
        """End the propagation (the agent drops states without telling the function; this frees
        the session at once where a caller knows the track is finished)."""
        self.results.close()


class MaskvosTracker:
    """The tracking function: one model (loaded on first use) shared by every track."""

    spec = spec

    def __init__(self, model: str | None = None, device: str | None = None, resolution: int | None = None) -> None:
        self.model_name = model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL
        self.device = device or os.environ.get(DEVICE_ENV) or None
        self.config = InferenceConfig() if resolution is None else InferenceConfig(resolution=resolution)
        self._loaded: LoadedModel | None = None
        self._load_lock = threading.Lock()

    @property
    def loaded(self) -> LoadedModel:
        """The model, loaded the first time a frame needs it."""
        with self._load_lock:
            if self._loaded is None:
                self._loaded = load_run_model(self.model_name, self.device, allow_fallback=False)
                self.config = settings_for(self._loaded, self.config)
            return self._loaded

    def preprocess_image(self, context: cvataa.TrackingFunctionContext, image: PIL.Image.Image) -> TrackerImage:
        """The frame as RGB (H, W, 3) uint8; the model's features are computed per track (each
        track's session encodes the frame it is given)."""
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
        rgb.setflags(write=False)
        return TrackerImage(rgb)

    def init_tracking_state(
        self, context: cvataa.TrackingFunctionShapeContext, pp_image: TrackerImage, shape: cvataa.TrackableShape
    ) -> TrackState:
        """A session on the shape's frame (frame 0 of the track) prompted with the shape."""
        if shape.type not in SHAPE_TYPES:
            raise CvatTrackerError(f"Shape type '{shape.type}' cannot be tracked by maskvos; draw a {', '.join(SHAPE_TYPES[:-1])} or {SHAPE_TYPES[-1]}.")
        loaded = self.loaded
        feed = FrameFeed(pp_image.rgb)
        session = open_session(loaded.model, StreamSource(feed), self.config)
        mask, box = shape_prompt(shape, pp_image.width, pp_image.height)
        if box is not None and "box" not in session.prompt_types:
            mask, box = box_mask(box, pp_image.width, pp_image.height), None
        if box is not None:
            session.add_points(0, OBJ_ID, box=box)
        else:
            if not mask.any():
                raise CvatTrackerError(f"The {shape.type} to track covers no pixel of the frame; draw it over the object.")
            session.add_mask(0, OBJ_ID, mask)
        results = session.propagate(start=0)
        next(results)  # frame 0: the prompt frame, already in the session's cache
        return TrackState(shape.type, (pp_image.width, pp_image.height), feed, session, results)

    def track(
        self, context: cvataa.TrackingFunctionShapeContext, pp_image: TrackerImage, state: TrackState
    ) -> cvataa.TrackableShape | None:
        """The shape on the track's next frame, of the type drawn; None when the object is lost."""
        if (pp_image.width, pp_image.height) != state.size:
            raise CvatTrackerError(
                f"This frame is {pp_image.width}x{pp_image.height} but the track started on a {state.size[0]}x{state.size[1]} frame; track within frames of one size."
            )
        result = state.step(pp_image.rgb)
        mask = result.masks[0].numpy()
        if float(result.object_scores[0]) <= 0.0 or not mask.any():
            return None
        points = shape_points(mask, state.shape_type)
        return None if points is None else cvataa.TrackableShape(type=state.shape_type, points=points)


def shape_prompt(
    shape: cvataa.TrackableShape, width: int, height: int
) -> tuple[np.ndarray | None, tuple[float, float, float, float] | None]:
    """(mask, box) of a CVAT shape on a width x height frame: a mask shape or a polygon gives an
    (H, W) bool mask, a rectangle its (x0, y0, x1, y1) box."""
    points = [float(p) for p in shape.points]
    if shape.type == "mask":
        try:
            return decode_mask(points, image_width=width, image_height=height), None
        except ValueError as exc:
            raise CvatTrackerError(f"The mask to track cannot be decoded ({exc}); draw it again on this frame.") from None
    if shape.type == "polygon":
        if len(points) < 6 or len(points) % 2:
            raise CvatTrackerError(f"The polygon to track has {len(points)} coordinates; draw one of at least three points.")
        canvas = PIL.Image.new("1", (width, height), 0)
        PIL.ImageDraw.Draw(canvas).polygon(points, fill=1, outline=1)
        return np.asarray(canvas, dtype=bool), None
    if len(points) != 4:
        raise CvatTrackerError(f"The rectangle to track has {len(points)} coordinates instead of 4; draw it again.")
    x0, y0, x1, y1 = points
    box = (max(0.0, min(x0, x1)), max(0.0, min(y0, y1)), min(float(width), max(x0, x1)), min(float(height), max(y0, y1)))
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        raise CvatTrackerError("The rectangle to track is under one pixel wide or high inside the frame; draw it over the object.")
    return None, box


def box_mask(box: tuple[float, float, float, float], width: int, height: int) -> np.ndarray:
    """The pixels whose centres lie inside `box` (x0, y0, x1, y1), as an (H, W) bool mask."""
    xs, ys = np.arange(width) + 0.5, np.arange(height) + 0.5
    inside_x = (xs >= box[0]) & (xs <= box[2])
    inside_y = (ys >= box[1]) & (ys <= box[3])
    return inside_y[:, None] & inside_x[None, :]


def shape_points(mask: np.ndarray, shape_type: str) -> list[float] | None:
    """A CVAT shape's points for an (H, W) bool mask: CVAT's mask RLE, the outline of the mask's
    largest part as a polygon, or its bounding rectangle; None when nothing is left to draw."""
    if shape_type == "mask":
        return [float(v) for v in encode_mask(np.asarray(mask, dtype=bool))]
    if shape_type == "polygon":
        polygons = mask_polygons(mask, POLYGON_EPSILON)
        if not polygons:
            return None
        ring = polygons[0][:-1] if polygons[0][0] == polygons[0][-1] else polygons[0]
        return [float(c) for point in ring for c in point] if len(ring) >= 3 else None
    box = mask_box(mask)
    return None if box is None else [float(c) for c in box]


def create(model: str | None = None, device: str | None = None, resolution: int | None = None) -> MaskvosTracker:
    """The tracking function cvat-cli loads (`-p model=str:NAME -p device=str:cuda -p resolution=int:N`)."""
    return MaskvosTracker(model, device, resolution)


_default: MaskvosTracker | None = None
_default_lock = threading.Lock()


def default_tracker() -> MaskvosTracker:
    """The tracker of the module-level functions (model and device from the environment)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MaskvosTracker()
        return _default


def preprocess_image(context: cvataa.TrackingFunctionContext, image: PIL.Image.Image) -> TrackerImage:
    """`MaskvosTracker.preprocess_image` of `default_tracker()`."""
    return default_tracker().preprocess_image(context, image)


def init_tracking_state(
    context: cvataa.TrackingFunctionShapeContext, pp_image: TrackerImage, shape: cvataa.TrackableShape
) -> TrackState:
    """`MaskvosTracker.init_tracking_state` of `default_tracker()`."""
    return default_tracker().init_tracking_state(context, pp_image, shape)


def track(
    context: cvataa.TrackingFunctionShapeContext, pp_image: TrackerImage, state: TrackState
) -> cvataa.TrackableShape | None:
    """`MaskvosTracker.track` of `default_tracker()`."""
    return default_tracker().track(context, pp_image, state)


def _nbytes(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(_nbytes(getattr(value, name)) for name in value.__dataclass_fields__)
    return 0


__all__ = ["DEFAULT_MODEL", "NAME", "SHAPE_TYPES", "CvatTrackerError", "MaskvosTracker", "TrackState", "TrackerImage",
           "create", "init_tracking_state", "preprocess_image", "spec", "track"]
