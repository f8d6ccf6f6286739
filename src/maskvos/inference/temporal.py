"""Temporal-consistency post-processors: presence hysteresis, logit smoothing, hole filling.

Three `PostProcessor`s that run between a session and the overlap rule (`segment_video(...,
postprocessors=temporal_chain())`). Each is a frozen dataclass whose `repr` shows its settings only
(it is part of a run's signature); what it holds while a pass runs lives outside the fields and is
saved by `state_dict` as tensors, numbers, strings, lists and dicts (read back with `weights_only=True`).
Every step:

- reads an object's row by its id (objects may be added in the middle of a pass: an object met for the
  first time starts as if the pass started there);
- never changes an object's row (logits, mask, score) on a frame where `is_prompt` is true for it;
  a prompted frame still informs its neighbours (the hysteresis state, the smoothing window);
- keeps `masks == mask_logits > 0` on every row it changes, and leaves a row it does not change exactly
  as the engine gave it; the label map (`labels`) of a frame with a changed row is dropped, so that the
  overlap rule after the chain decides it again;
- reads an engine row whose mask and logit signs disagree (featmatch decides its masks by its label
  map) as the mask says, the logit taken as +-0.1 where the two disagree, before it changes that row;
- treats each pass on its own: `flush()` (the end of a pass) hands out what is held and forgets it.

The recommended chain, `temporal_chain()` (its defaults: `PresenceHysteresis(k=3)`,
`LogitSmoothing(window=3)`, `FillHoles(max_hole_area=1/8192)`), holds 3 frames back. The order
matters: presence is decided first, so an absent blip (SAM2's -1024 logits) has become the object's
last mask before the smoothing window sees it; holes are filled last, so the masks written have none.

Hole filling follows the reference (`sam2==1.1.0`, `sam2/utils/misc.py: fill_holes_in_mask_scores`
with the CUDA kernel `sam2/csrc/connected_components.cu`): a hole is an 8-connected component of the
background (logits <= 0) whose area is at most the threshold, wherever it lies: a small background
region touching the frame's border is a hole too; hole pixels get the logit 0.1. The reference's video
predictor removes no sprinkles; its image predictor (`SAM2Transforms.postprocess_masks`,
`max_sprinkle_area`, off by default) does, on 8-connected foreground components found on the same input
mask as the holes (it sets +-10 where the video predictor sets 0.1). `FillHoles(max_sprinkle_area=...)`
offers that (off by default, as in the video predictor), removed pixels getting the logit -0.1. The
reference runs this only where its CUDA extension is built (elsewhere it warns and skips it), only on
even sizes, on the 256x256 low-resolution logits before they are resized to the video, and on prompted
frames too; here the same definition is computed on the CPU (run-length union-find in numpy, no
extension) on every device and at any size, on the result at the video's size, and prompted objects are
left alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from maskvos.errors import ConfigError
from maskvos.inference.api import FrameResult
from maskvos.inference.postprocess import PostProcessor

#: Logit and object score of an object the hysteresis judges absent on a frame where the engine saw it.
ABSENT_LOGIT = -10.0
#: Logit of a filled hole pixel (the reference's value); -FILL_LOGIT for a removed sprinkle pixel.
FILL_LOGIT = 0.1
#: The reference fills holes of up to 8 pixels of SAM2's 256x256 low-resolution mask, which spans the
#: whole frame (SAM2 resizes a frame to its square input without padding): 8/256² of the frame's area.
DEFAULT_HOLE_AREA = 8 / (256 * 256)


# --------------------------------------------------------------------------- connected components


def _runs_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of a (H, W) bool mask, by runs: each run's row, first column, column
    one past its last, its component's area and its component's label (the index of the component's
    first run). Runs are a row's maximal horizontal segments; two
    runs of adjacent rows touch (8-connectivity) when their column ranges, widened by one, overlap;
    touching runs are joined by a union-find with hooking and pointer jumping."""
    h, w = mask.shape
    pitch = w + 2  # every row padded with a False column on each side
    padded = np.zeros((h, pitch), np.int8)
    padded[:, 1:-1] = mask
    edges = np.flatnonzero(np.diff(padded.ravel())) + 1  # alternately a run's first pixel and one past its last
    rows = edges[0::2] // pitch
    starts = edges[0::2] - rows * pitch - 1
    stops = edges[1::2] - rows * pitch - 1
    n = len(starts)
    if n == 0:
        return rows, starts, stops, np.zeros(0, np.int64), np.zeros(0, np.int64)
    first_key = rows * pitch + starts  # keys row * pitch + column sort runs by row, then column
    last_key = rows * pitch + stops - 1
    # Runs of the next row touching a run: those ending at or after its first column - 1 and starting
    # at or before its last column + 1 (a contiguous range of the sorted runs).
    lo = np.searchsorted(last_key, (rows + 1) * pitch + starts - 1, side="left")
    hi = np.searchsorted(first_key, (rows + 1) * pitch + stops, side="right")
    count = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(n), count)
    b = np.repeat(lo, count) + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
    parent = np.arange(n)
    while a.size:
        pa, pb = parent[a], parent[b]
        cross = pa != pb
        if not cross.any():
            break
        a, b, pa, pb = a[cross], b[cross], pa[cross], pb[cross]
        np.minimum.at(parent, np.maximum(pa, pb), np.minimum(pa, pb))  # hook the larger root under the smaller
        while True:  # pointer jumping: every run points at its root again
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    area = np.bincount(parent, weights=stops - starts, minlength=n).astype(np.int64)[parent]
    return rows, starts, stops, area, parent


def _runs_and_areas(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`_runs_components` without the runs' component labels."""
    rows, starts, stops, area, _ = _runs_components(mask)
    return rows, starts, stops, area


def largest_component_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The (x0, y0, x1, y1) inclusive pixel bounds of the largest 8-connected component of a (H, W)
    bool mask (of equal ones, the first in raster order); None for an empty mask."""
    rows, starts, stops, area, parent = _runs_components(np.asarray(mask, bool))
    if len(rows) == 0:
        return None
    biggest = area == area.max()
    root = parent[biggest].min()
    runs = parent == root
    return int(starts[runs].min()), int(rows[runs].min()), int(stops[runs].max() - 1), int(rows[runs].max())


def component_areas(mask: np.ndarray) -> np.ndarray:
    """(H, W) int64: the area of the 8-connected component of `mask` each True pixel belongs to, 0 on
    False pixels (what the reference's `get_connected_components` counts)."""
    mask = np.asarray(mask, bool)
    _, starts, stops, area = _runs_and_areas(mask)
    out = np.zeros(mask.size, np.int64)
    out[np.flatnonzero(mask)] = np.repeat(area, stops - starts)
    return out.reshape(mask.shape)


def _small_pixels(mask: np.ndarray, max_area: float) -> np.ndarray:
    """Flat indices of the pixels of the 8-connected components of `mask` with area <= `max_area`."""
    rows, starts, stops, area = _runs_and_areas(mask)
    small = area <= max_area
    if not small.any():
        return np.zeros(0, np.int64)
    first = rows[small] * mask.shape[1] + starts[small]
    lengths = stops[small] - starts[small]
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(first - offsets, lengths) + np.arange(lengths.sum())


def small_components(mask: np.ndarray, max_area: float) -> np.ndarray:
    """(H, W) bool: the pixels of the 8-connected components of `mask` with area <= `max_area` pixels."""
    mask = np.asarray(mask, bool)
    out = np.zeros(mask.size, bool)
    out[_small_pixels(mask, max_area)] = True
    return out.reshape(mask.shape)


# --------------------------------------------------------------------------- helpers


def _signed_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """An engine's row as logits whose sign is its mask's (+-FILL_LOGIT where the two disagree)."""
    positive = logits > 0
    if torch.equal(mask, positive):
        return logits
    return torch.where(mask == positive, logits, torch.where(mask, FILL_LOGIT, -FILL_LOGIT))


def _row(result: FrameResult, obj_id: int) -> int | None:
    try:
        return result.obj_ids.index(obj_id)
    except ValueError:
        return None


def _present(result: FrameResult, i: int) -> bool:
    """The engine's own judgement: object score > 0 and a mask that is not empty."""
    return bool(result.object_scores[i] > 0) and bool(result.masks[i].any())


def _with_rows(result: FrameResult, rows: dict[int, tuple[torch.Tensor, float | torch.Tensor]]) -> FrameResult:
    """`result` with the rows {index: (logits, object score)} replaced, their masks from the logits
    (new tensors: the engine's are not written to)."""
    if not rows:
        return result
    n = len(result.obj_ids)
    logits = torch.stack([rows[i][0] if i in rows else result.mask_logits[i] for i in range(n)])
    masks = torch.stack([logits[i] > 0 if i in rows else result.masks[i] for i in range(n)])
    scores = result.object_scores.clone()
    for i, (_, score) in rows.items():
        scores[i] = score
    return dataclasses.replace(result, mask_logits=logits, masks=masks, object_scores=scores, labels=None)


def _result_state(result: FrameResult) -> dict:
    """A held result as plain containers (tensors copied, so a view saves only its own data)."""
    return {
        "frame_idx": int(result.frame_idx),
        "obj_ids": [int(o) for o in result.obj_ids],
        "mask_logits": result.mask_logits.clone(),
        "masks": result.masks.clone(),
        "object_scores": result.object_scores.clone(),
        "overlap": result.overlap,
        "is_prompt": [bool(p) for p in result.is_prompt],
        "labels": None if result.labels is None else torch.from_numpy(np.array(result.labels)),  # a copy
    }


def _result_from_state(state: dict) -> FrameResult:
    labels = state["labels"]
    return FrameResult(
        frame_idx=int(state["frame_idx"]),
        obj_ids=[int(o) for o in state["obj_ids"]],
        mask_logits=state["mask_logits"],
        masks=state["masks"],
        object_scores=state["object_scores"],
        overlap=state["overlap"],
        is_prompt=[bool(p) for p in state["is_prompt"]],
        labels=None if labels is None else labels.numpy(),
    )


def _area(value: float, height: int, width: int) -> float:
    """A threshold in pixels: below 1 a fraction of the frame's area, else pixels."""
    return value * height * width if value < 1 else float(value)


# --------------------------------------------------------------------------- presence hysteresis


@dataclasses.dataclass
class _Track:
    present: bool
    # The object's row on the last frame output present (views of that result: read when needed).
    logits: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    score: float = 0.0


@dataclasses.dataclass
class _HysteresisState:
    held: list[FrameResult] = dataclasses.field(default_factory=list)
    tracks: dict[int, _Track] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class PresenceHysteresis(PostProcessor):
    """An object switches between present and absent only after `k` consecutive frames of the other
    state; shorter runs are blips and are overruled.

    Present on a frame means the engine's object score > 0 and a mask that is not empty. With `k - 1`
    frames of look-ahead, a run of the other state that lasts `k` frames switches the object on its
    first frame. A shorter run is a blip: on an absent blip inside presence the object keeps its last
    present mask (logits and score of the last frame output present); on a present blip inside absence
    its mask is emptied (logits and score `ABSENT_LOGIT`). A prompted frame is never altered and sets the
    state from the prompt. At the start of a pass (and on an object's first frame in it) the state is
    that frame's own. At the end of a pass a run cut short by the end is taken as it is (the engine's
    state stands where no later frame can overrule it), so every frame of a pass shorter than `k` is left
    alone. `k=1` changes nothing.

    Attributes:
        k: frames of the other state that make a switch (holds `k - 1` frames back).
    """

    k: int = 3
    _s: _HysteresisState = dataclasses.field(default_factory=_HysteresisState, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ConfigError(f"Presence hysteresis k={self.k!r} is not supported; use a whole number of frames, 1 or more, such as 3.")

    @property
    def max_delay(self) -> int:  # type: ignore[override]
        return self.k - 1

    def process(self, result: FrameResult) -> list[FrameResult]:
        held = self._s.held
        held.append(result)
        out = []
        while len(held) >= self.k:
            out.append(self._decide(held.pop(0), held[: self.k - 1], at_end=False))
        return out

    def flush(self) -> list[FrameResult]:
        held, out = self._s.held, []
        while held:
            out.append(self._decide(held.pop(0), held, at_end=True))
        self._s.tracks.clear()
        return out

    def _decide(self, result: FrameResult, ahead: Sequence[FrameResult], at_end: bool) -> FrameResult:
        changed: dict[int, tuple[torch.Tensor, float]] = {}
        for i, obj_id in enumerate(result.obj_ids):
            raw = _present(result, i)
            track = self._s.tracks.get(obj_id)
            if track is None or result.is_prompt[i] or raw == track.present or self._switches(obj_id, raw, ahead, at_end):
                track = self._s.tracks.setdefault(obj_id, _Track(raw))
                track.present = raw
                if raw:
                    track.logits, track.mask = result.mask_logits[i], result.masks[i]
                    track.score = float(result.object_scores[i])
            elif track.present:  # an absent blip: the last present mask stands
                assert track.logits is not None and track.mask is not None
                changed[i] = (_signed_logits(track.logits, track.mask), track.score)
            else:  # a present blip: emptied
                changed[i] = (torch.full_like(result.mask_logits[i], ABSENT_LOGIT), ABSENT_LOGIT)
        return _with_rows(result, changed)

    def _switches(self, obj_id: int, state: bool, ahead: Sequence[FrameResult], at_end: bool) -> bool:
        """Whether a run of `state` starting now lasts `k` frames (or to the end of the pass)."""
        run = 1
        for future in ahead:
            if run >= self.k:
                return True
            j = _row(future, obj_id)
            if j is None or _present(future, j) != state:
                return False
            run += 1
        return run >= self.k or at_end

    def state_dict(self) -> dict:
        return {
            "held": [_result_state(r) for r in self._s.held],
            "tracks": [
                {"obj_id": int(o), "present": t.present,
                 "logits": None if t.logits is None or t.mask is None else _signed_logits(t.logits, t.mask).clone(),
                 "score": float(t.score)}
                for o, t in self._s.tracks.items()
            ],
        }

    def load_state_dict(self, state: dict) -> None:
        self._s.held[:] = [_result_from_state(r) for r in state["held"]]
        self._s.tracks.clear()
        for t in state["tracks"]:
            logits = t["logits"]
            mask = None if logits is None else logits > 0
            self._s.tracks[int(t["obj_id"])] = _Track(bool(t["present"]), logits, mask, float(t["score"]))


# --------------------------------------------------------------------------- logit smoothing


def _median(values: list[torch.Tensor]) -> torch.Tensor:
    """Element-wise median of an odd number of equally shaped tensors (one of the values, exactly)."""
    if len(values) == 1:
        return values[0]
    if len(values) == 3:
        a, b, c = values
        return torch.maximum(torch.minimum(a, b), torch.minimum(torch.maximum(a, b), c))
    return torch.stack(values).median(dim=0).values


@dataclasses.dataclass
class _WindowState:
    frames: list[FrameResult] = dataclasses.field(default_factory=list)  # as the engine gave them
    signed: list[dict[int, torch.Tensor]] = dataclasses.field(default_factory=list)  # their rows read by the masks
    emitted: int = 0  # how many of `frames` (the oldest) were handed out already

    def add(self, result: FrameResult) -> None:
        self.frames.append(result)
        self.signed.append({o: _signed_logits(result.mask_logits[i], result.masks[i]) for i, o in enumerate(result.obj_ids)})

    def drop_oldest(self) -> None:
        self.frames.pop(0)
        self.signed.pop(0)
        self.emitted -= 1

    def clear(self) -> None:
        self.frames.clear()
        self.signed.clear()
        self.emitted = 0


@dataclasses.dataclass(frozen=True)
class LogitSmoothing(PostProcessor):
    """Each object's mask logits (and object score) become their element-wise median over a centred
    window of `window` frames of the pass, as the engine gave them (`(window - 1) / 2` held back).

    A pixel whose sign agrees on every frame of the window keeps its sign (the median lies between the
    smallest and largest value), so a still object's mask does not move, and a pixel that flips on one
    frame of a window of 3 is set back. The median picks one of the values, so no frame dominates it
    (SAM2's -1024 for an absent object counts as one vote, and nothing is clamped). A prompted frame is
    not altered, but its logits take part in its neighbours' windows. Where the window is cut by the
    start or end of the pass, or by an object's first frame, the frames available are used, the frame
    itself counted twice when their number is even (so a window of 3 leaves a pass's first and last
    frames as they are). `window=1` changes nothing.

    Attributes:
        window: odd number of frames in the window.
    """

    window: int = 3
    _s: _WindowState = dataclasses.field(default_factory=_WindowState, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or isinstance(self.window, bool) or self.window < 1 or self.window % 2 == 0:
            raise ConfigError(f"Smoothing window {self.window!r} is not supported; use an odd number of frames such as 3 or 5.")

    @property
    def max_delay(self) -> int:  # type: ignore[override]
        return (self.window - 1) // 2

    def process(self, result: FrameResult) -> list[FrameResult]:
        s, half = self._s, self.max_delay
        if half == 0:
            return [result]
        s.add(result)
        out = []
        while len(s.frames) - s.emitted > half:
            out.append(self._smoothed(s.emitted))
            s.emitted += 1
            while s.emitted > half:  # a frame no window reaches any more
                s.drop_oldest()
        return out

    def flush(self) -> list[FrameResult]:
        s = self._s
        out = [self._smoothed(c) for c in range(s.emitted, len(s.frames))]
        s.clear()
        return out

    def _smoothed(self, c: int) -> FrameResult:
        s, half = self._s, self.max_delay
        result, first = s.frames[c], max(c - half, 0)
        window = list(zip(s.frames[first : c + half + 1], s.signed[first : c + half + 1]))
        changed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for i, obj_id in enumerate(result.obj_ids):
            if result.is_prompt[i]:
                continue
            own = s.signed[c][obj_id]
            logits, scores = [], []
            for frame, signed in window:
                if obj_id in signed:
                    logits.append(signed[obj_id])
                    scores.append(frame.object_scores[i if frame is result else frame.obj_ids.index(obj_id)])
            if len(logits) % 2 == 0:
                logits.append(own)
                scores.append(result.object_scores[i])
            row, score = _median(logits), _median(scores)
            if not (torch.equal(row, result.mask_logits[i]) and torch.equal(score, result.object_scores[i])):
                changed[i] = (row, score)
        return _with_rows(result, changed)

    def state_dict(self) -> dict:
        return {"frames": [_result_state(r) for r in self._s.frames], "emitted": self._s.emitted}

    def load_state_dict(self, state: dict) -> None:
        self._s.clear()
        for r in state["frames"]:
            self._s.add(_result_from_state(r))
        self._s.emitted = int(state["emitted"])


# --------------------------------------------------------------------------- hole filling


@dataclasses.dataclass(frozen=True)
class FillHoles(PostProcessor):
    """Fills each object's small holes and, optionally, removes its small specks, frame by frame, by
    the reference's definition (see the module docstring): a hole is an 8-connected component of the
    background (the pixels outside the mask) with at most `max_hole_area` pixels, one touching the
    frame's border included; its pixels get the logit 0.1. With `max_sprinkle_area`, an 8-connected
    component of the mask with at most that many pixels gets -0.1 (both found on the mask as given).

    Areas are counted at the result's resolution (the video's size). A value below 1 is a fraction of
    the frame's area, 1 or more a number of pixels, 0 turns the step off. The default hole area,
    1/8192 of the frame (50 pixels at 854x480), is the reference's `fill_hole_area=8` pixels of SAM2's
    256x256 low-resolution mask, which covers the whole frame. Sprinkle removal is off by default, as in
    the reference's video predictor. Stateless; prompted objects are left alone.

    Attributes:
        max_hole_area: largest hole filled (fraction of the frame's area below 1, else pixels).
        max_sprinkle_area: largest speck removed (likewise; 0: none).
    """

    max_hole_area: float = DEFAULT_HOLE_AREA
    max_sprinkle_area: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_hole_area", "max_sprinkle_area"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
                raise ConfigError(f"{name}={value!r} is not supported; use a fraction of the frame's area below 1 (such as 0.0001), a number of pixels, or 0 for none.")

    def process(self, result: FrameResult) -> list[FrameResult]:
        if not (self.max_hole_area or self.max_sprinkle_area) or not result.obj_ids:
            return [result]
        h, w = result.mask_logits.shape[-2:]
        holes_max, specks_max = _area(self.max_hole_area, h, w), _area(self.max_sprinkle_area, h, w)
        changed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for i in range(len(result.obj_ids)):
            if result.is_prompt[i]:
                continue
            mask = result.masks[i].cpu().numpy()
            fill = _small_pixels(~mask, holes_max) if holes_max > 0 else None
            drop = _small_pixels(mask, specks_max) if specks_max > 0 else None
            if not (fill is not None and fill.size) and not (drop is not None and drop.size):
                continue
            row = _signed_logits(result.mask_logits[i], result.masks[i]).clone()
            flat = row.view(-1)
            if fill is not None and fill.size:
                flat[torch.from_numpy(fill).to(flat.device)] = FILL_LOGIT
            if drop is not None and drop.size:
                flat[torch.from_numpy(drop).to(flat.device)] = -FILL_LOGIT
            changed[i] = (row, result.object_scores[i])
        return [_with_rows(result, changed)]


# --------------------------------------------------------------------------- the recommended chain


def temporal_chain(
    k: int = 3,
    window: int = 3,
    max_hole_area: float = DEFAULT_HOLE_AREA,
    max_sprinkle_area: float = 0.0,
) -> list[PostProcessor]:
    """The recommended temporal-consistency steps, in order: `PresenceHysteresis(k)`,
    `LogitSmoothing(window)`, `FillHoles(max_hole_area, max_sprinkle_area)` (defaults: 3, 3, 1/8192 of
    the frame, 0; 3 frames held back). A step whose settings change nothing (k=1, window=1, both areas
    0) is left out."""
    steps: list[PostProcessor] = []
    if k != 1:
        steps.append(PresenceHysteresis(k))
    if window != 1:
        steps.append(LogitSmoothing(window))
    if max_hole_area or max_sprinkle_area:
        steps.append(FillHoles(max_hole_area, max_sprinkle_area))
    return steps


SPEC_KEYS = {"k": int, "window": int, "holes": float, "sprinkles": float}


def parse_temporal_spec(spec: str) -> list[PostProcessor]:
    """The steps a spec string asks for (what a `--temporal-smoothing SPEC` option would take):
    "on" (or "default", or "") for `temporal_chain()`, "off" (or "none") for no step, else
    comma-separated settings overriding the defaults, e.g. "k=5,window=5,holes=0.001,sprinkles=20"
    (holes and sprinkles: fractions of the frame's area below 1, pixels from 1, 0 for none)."""
    text = spec.strip().lower()
    if text in ("", "on", "default"):
        return temporal_chain()
    if text in ("off", "none"):
        return []
    settings: dict[str, float] = {}
    for item in text.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in SPEC_KEYS:
            raise ConfigError(f"Temporal smoothing setting '{item.strip()}' is unknown; use 'on', 'off' or settings such as 'k=3,window=3,holes=0.0001,sprinkles=0'.")
        try:
            settings[key] = SPEC_KEYS[key](value)
        except ValueError:
            raise ConfigError(f"Temporal smoothing setting '{item.strip()}' needs a {'whole number' if SPEC_KEYS[key] is int else 'number'}, such as {key}=3.") from None
    return temporal_chain(
        k=int(settings.get("k", 3)),
        window=int(settings.get("window", 3)),
        max_hole_area=settings.get("holes", DEFAULT_HOLE_AREA),
        max_sprinkle_area=settings.get("sprinkles", 0.0),
    )
