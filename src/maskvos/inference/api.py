"""The session contract every engine meets: `Session`, `FrameResult`, `SessionError`, and `Pass`,
the planning of propagation passes shared by sessions and the application layer.

A session holds one video and its objects. Prompts (`add_mask`, `add_points`, `add_box`) may be
given on any frame; `propagate` plans passes over the video (`plan_passes`) and runs them
(`run_passes`), yielding one `FrameResult` per frame. While a propagation is open (its generator
started and not exhausted or closed), prompts and objects cannot change and no second propagation
can start: each raises `SessionError`. Close the generator (`results.close()`, or leave the `for`
loop) to correct a frame, then propagate again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from maskvos.errors import MaskvosError
from maskvos.inference.frame_cache import FrameCache
from maskvos.inference.objects import ObjectRegistry
from maskvos.io.masks import masks_to_label_map

DIRECTIONS = ("forward", "backward", "both")


class SessionError(MaskvosError):
    """A session used out of order or with arguments that do not fit the video."""


def prompt_state_key(obj_id: int, frame_idx: int) -> str:
    """The key of one object's prompt on one frame in a session's `state_dict` ("obj_id:frame_idx")."""
    return f"{obj_id}:{frame_idx}"


def parse_prompt_state_key(key: str) -> tuple[int, int]:
    """(obj_id, frame_idx) of a `prompt_state_key`."""
    obj_id, frame_idx = key.split(":")
    return int(obj_id), int(frame_idx)


@dataclass
class FrameResult:
    """All objects' results on one frame, at the frame's original size.

    Attributes:
        frame_idx: 0-based frame index.
        obj_ids: object ids, one per row below.
        mask_logits: (B, H, W) float32 mask logits (> 0 inside). On a frame prompted with a mask the
            row is +10 inside the given mask and -10 outside.
        masks: (B, H, W) bool masks; on a mask-prompted frame exactly the mask given.
        object_scores: (B,) object presence logits (> 0: present).
        overlap: the rule `label_map` uses by default ("score" or "order").
        is_prompt: (B,) whether this frame holds a prompt of the object (its mask is then the
            user's, or the model's answer to the user's clicks, and post-processing leaves it alone).
        labels: the (H, W) label map decided by the post-processing chain (None: derive it with
            `overlap`).
    """

    frame_idx: int
    obj_ids: list[int]
    mask_logits: torch.Tensor
    masks: torch.Tensor
    object_scores: torch.Tensor
    overlap: str = "score"
    is_prompt: list[bool] = field(default_factory=list)
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not self.is_prompt:
            self.is_prompt = [False] * len(self.obj_ids)
        if len(self.is_prompt) != len(self.obj_ids):
            raise ValueError("is_prompt needs one flag per object")

    def masks_by_id(self) -> dict[int, np.ndarray]:
        """{obj_id: bool (H, W)}."""
        masks = self.masks.numpy()
        return {obj_id: masks[i] for i, obj_id in enumerate(self.obj_ids)}

    def label_map(self, overlap: str | None = None) -> np.ndarray:
        """(H, W) label map, each pixel the id of at most one object (0 background).

        With overlap "score" the object with the highest logit wins a contested pixel; with "order"
        the object listed last wins. Without an argument, the label map the post-processing chain
        decided, if any, else the session's rule.
        """
        if overlap is None and self.labels is not None:
            return self.labels
        rule = overlap or self.overlap
        if not self.obj_ids:
            raise SessionError("This frame has no objects; prompt an object first.")
        scores = None
        if rule == "score":
            logits = self.mask_logits.numpy()
            scores = {obj_id: logits[i] for i, obj_id in enumerate(self.obj_ids)}
        return masks_to_label_map(self.masks_by_id(), scores)


@dataclass(frozen=True)
class Pass:
    """One sweep over consecutive frames.

    Attributes:
        start: first frame.
        stop: last frame, inclusive; None for the end of a stream of unknown length.
        reverse: whether the sweep goes backward (stop <= start).
        skip_start: the start frame was yielded by an earlier pass and is not yielded again.
    """

    start: int
    stop: int | None
    reverse: bool
    skip_start: bool = False

    @property
    def direction(self) -> str:
        return "backward" if self.reverse else "forward"

    @property
    def step(self) -> int:
        return -1 if self.reverse else 1

    def length(self, num_frames: int | None) -> int | None:
        """Frames this pass yields; None for a stream of unknown length."""
        stop = self.stop if self.stop is not None else (None if num_frames is None else num_frames - 1)
        if stop is None:
            return None
        count = (self.start - stop if self.reverse else stop - self.start) + 1
        return max(count - int(self.skip_start), 0)

    def resumed_at(self, frame_idx: int) -> Pass | None:
        """The rest of this pass from `frame_idx` on (None when nothing is left)."""
        if self.stop is not None and (frame_idx < self.stop if self.reverse else frame_idx > self.stop):
            return None
        skip = self.skip_start and frame_idx == self.start
        return Pass(frame_idx, self.stop, self.reverse, skip)


def plan_passes(
    direction: str, start: int, end: int | None, num_frames: int | None
) -> list[Pass]:
    """The passes of a propagation from `start` (already checked to be a frame of the video).

    Arguments:
        direction: "forward", "backward" or "both" (forward from `start`, then backward from it,
            every frame yielded once).
        end: last frame, inclusive (only for "forward" and "backward"); by default the last frame
            (forward; None for a stream) or frame 0 (backward).
    """
    if direction == "backward":
        stop = 0 if end is None else end
        if stop > start:
            raise SessionError(f"Going backward, end frame {stop} comes after start frame {start}; pass an end at or before the start.")
        return [Pass(start, stop, True)]
    if end is not None and end < start:
        raise SessionError(f"Going forward, end frame {end} comes before start frame {start}; pass an end at or after the start.")
    last = num_frames - 1 if num_frames is not None else None
    passes = [Pass(start, end if end is not None else last, False)]
    if direction == "both":
        passes.append(Pass(start, 0, True, skip_start=True))
    return passes


@runtime_checkable
class Session(Protocol):
    """What the application layer and every front end use of a session (see the module docstring)."""

    prompt_types: frozenset[str]

    @property
    def num_frames(self) -> int | None: ...

    @property
    def height(self) -> int: ...

    @property
    def width(self) -> int: ...

    @property
    def obj_ids(self) -> list[int]: ...

    def add_mask(self, frame_idx: int, obj_id: int, mask: np.ndarray | torch.Tensor) -> FrameResult: ...

    def add_points(
        self,
        frame_idx: int,
        obj_id: int,
        points: Sequence[Sequence[float]] | np.ndarray | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
        box: Sequence[float] | np.ndarray | None = None,
    ) -> FrameResult: ...

    def add_box(
        self,
        frame_idx: int,
        obj_id: int,
        box: Sequence[float] | np.ndarray,
        points: Sequence[Sequence[float]] | np.ndarray | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
    ) -> FrameResult: ...

    def remove_object(self, obj_id: int) -> None: ...

    def propagate(
        self, start: int | None = None, end: int | None = None, direction: str = "forward"
    ) -> Iterator[FrameResult]: ...

    def plan_passes(self, start: int | None = None, end: int | None = None, direction: str = "forward") -> list[Pass]: ...

    def run_passes(self, passes: Sequence[Pass]) -> Iterator[FrameResult]: ...

    def frame(self, frame_idx: int) -> np.ndarray: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class SessionBase(ABC):
    """What every session (SAM2's `VideoSession`, the `featmatch` backend's) shares: the frames, the
    object ids, frame-index checks, pass planning, and the rule that prompts do not change while a
    propagation is open.

    Subclasses set `frames` (a `FrameCache`), `objects` (an `ObjectRegistry`) and
    `_new_prompt_frames`, list their prompted frames in `_prompted_frames`, run passes in `_run`,
    and call `_check_idle` before changing prompts or objects.
    """

    frames: FrameCache
    objects: ObjectRegistry
    _new_prompt_frames: set[int]
    _open_runs: int = 0

    @property
    def num_frames(self) -> int | None:
        """Frames in the video; None for a stream of unknown length."""
        return self.frames.num_frames

    @property
    def height(self) -> int:
        return self.frames.source.height

    @property
    def width(self) -> int:
        return self.frames.source.width

    @property
    def obj_ids(self) -> list[int]:
        return self.objects.obj_ids

    def frame(self, frame_idx: int) -> np.ndarray:
        """The RGB frame (H, W, 3) uint8 (cheap for the frames just propagated: they stay cached)."""
        self._check_frame(frame_idx)
        return self.frames.frame(int(frame_idx))

    @abstractmethod
    def _prompted_frames(self) -> set[int]:
        """Frames that hold a prompt (where a default propagation may start)."""

    @abstractmethod
    def _run(self, passes: Sequence[Pass]) -> Iterator[FrameResult]:
        """Run the passes, yielding one result per frame."""

    def _check_frame(self, frame_idx: int) -> None:
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
            raise SessionError(f"Frame index {frame_idx!r} is not an integer; pass a 0-based frame number.")
        self.frames.source.check_index(int(frame_idx))

    def _check_idle(self, action: str = "changing prompts or objects") -> None:
        """Refuse to change the session (prompts, objects, a loaded state) or to start another
        propagation while a propagation is open."""
        if self._open_runs:
            raise SessionError(
                f"A propagation of this session is still open; finish iterating it or close it "
                f"(results.close()) before {action}."
            )

    def propagate(
        self, start: int | None = None, end: int | None = None, direction: str = "forward"
    ) -> Iterator[FrameResult]:
        """Track every object through the video, yielding one `FrameResult` per frame.

        Arguments:
            start: first frame; by default the earliest frame prompted since the last propagation
                (the latest, going backward), or the earliest prompt of all when nothing is new.
            end: last frame, inclusive; by default the last frame (forward) or frame 0 (backward).
            direction: "forward", "backward", or "both" (forward from `start`, then backward from it;
                every frame is yielded once).
        """
        return self.run_passes(self.plan_passes(start, end, direction))

    def plan_passes(self, start: int | None = None, end: int | None = None, direction: str = "forward") -> list[Pass]:
        """Check `propagate`'s arguments and turn them into passes. Clears the record of new prompts."""
        self._check_idle("starting another propagation")
        if direction not in DIRECTIONS:
            raise SessionError(f"Direction '{direction}' is unknown; use forward, backward or both.")
        if not len(self.objects):
            raise SessionError("No object has been prompted; add a mask, points or a box first.")
        if direction != "forward" and self.num_frames is None:
            raise SessionError(f"A stream can only be tracked forward, not '{direction}'; use direction 'forward'.")
        prompted = self._prompted_frames()
        fresh = self._new_prompt_frames & prompted or prompted
        if start is None:
            start = max(fresh) if direction == "backward" else min(fresh)
        self._check_frame(start)
        if end is not None:
            self._check_frame(end)
        passes = plan_passes(direction, int(start), None if end is None else int(end), self.num_frames)
        self._new_prompt_frames.clear()
        return passes

    def run_passes(self, passes: Sequence[Pass]) -> Iterator[FrameResult]:
        """Run planned passes (e.g. the rest of a plan after a resume), yielding one result per frame."""
        self._check_idle("starting another propagation")
        for p in passes:
            self._check_frame(p.start)
            if p.stop is not None:
                self._check_frame(p.stop)
        return self._guarded(list(passes))

    def _guarded(self, passes: list[Pass]) -> Iterator[FrameResult]:
        self._check_idle("starting another propagation")  # two generators made first, then both started
        self._open_runs += 1
        try:
            yield from self._run(passes)
        finally:
            self._open_runs -= 1
