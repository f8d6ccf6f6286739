"""`DAM4SAMPolicy`: DAM4SAM's distractor-aware memory (Videnovic, Lukezic and Kristan, "A
Distractor-Aware Memory for Visual Object Tracking with SAM2", CVPR 2025), per object. Written from
the paper and the facts of the authors' public code (which has no licence: nothing is taken from it
but its rules and numbers).

The memory has two parts, `num_maskmem` slots in all:

- the **distractor-resolving memory** (DRM), attended to like prompts (temporal slot 0): the object's
  prompted frames and the `drm_size - 1` most recent tracked frames admitted to it, never the frame
  just before (the recent memory takes that one), `drm_size` (4) frames in all when there is one
  prompt. A tracked frame is admitted when its mask is confident (predicted IoU above `min_iou`),
  its area is stable (within `area_ratio` of the median of the last `area_history` non-empty areas),
  more than `min_gap` frames have passed since the last admission, and the decoder's alternative
  masks reveal a distractor: for one of them, the largest 8-connected component of what it adds to
  the chosen mask, joined to the chosen mask, makes its box so much larger that the chosen mask's
  box covers at most `max_box_overlap` of it;
- the **recent-appearance memory** (RAM), the remaining slots: the frame just before (or the
  nearest earlier one whose mask is not empty), then every `stride`-th frame further back, skipping
  frames with empty masks and frames of the DRM; nearest first in the nearest slot. An empty mask
  never enters it.

Object pointers: the prompted frames', the DRM frames', and those of the `max_pointers - 1` frames
before whose masks are not empty. The decoder's mask choice is SAM2's (highest predicted IoU).

What differs from the authors' code: theirs tracks one object forward; this is per object, in both
directions, with any prompts (each prompt counts against `drm_size`, and restarts the area history),
bounded and resumable. Areas are counted at model-input size (theirs at the video's), and a DRM
frame's memory stays as it was encoded (theirs re-encodes it from the binarised mask).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from maskvos.errors import ConfigError
from maskvos.inference.policies.base import (
    FrameSignals,
    MaskCandidates,
    MaskChoice,
    MemoryPlan,
    MemoryPolicy,
    MemoryWindow,
)
from maskvos.inference.policies.sam2 import plan_pointers, select_prompted_frames

#: Areas older than this many frames leave the history (the authors' window).
_AREA_WINDOW = 300


@dataclass(frozen=True)
class DAM4SAMPolicy(MemoryPolicy):
    """DAM4SAM's distractor-aware memory (defaults: the authors' configuration, every model size).

    Attributes:
        stride: temporal stride of the recent-appearance memory.
        drm_size: frames of the distractor-resolving memory, prompts included.
        min_iou: predicted IoU a frame must exceed to enter the DRM.
        area_ratio: (low, high) bounds of its area over the median of recent areas.
        area_history: how many recent non-empty areas the median takes.
        min_gap: frames that must pass after an admission before the next (more than this many).
        max_box_overlap: the chosen mask's box covers at most this share of the box of it joined
            with an alternative's largest new component: a distractor is revealed.
    """

    name: ClassVar[str] = "dam4sam"
    chooses_masks: ClassVar[bool] = True
    needs_candidate_masks: ClassVar[bool] = True
    stride: int = 5
    drm_size: int = 4
    min_iou: float = 0.8
    area_ratio: tuple[float, float] = (0.8, 1.2)
    area_history: int = 10
    min_gap: int = 5
    max_box_overlap: float = 0.7

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ConfigError(f"DAM4SAM stride {self.stride} is not supported; use 1 or more.")
        if self.drm_size < 1:
            raise ConfigError(f"DAM4SAM drm_size {self.drm_size} is not supported; use 1 or more.")
        if self.area_history < 1:
            raise ConfigError(f"DAM4SAM area_history {self.area_history} is not supported; use 1 or more.")

    # ------------------------------------------------------------------ mask choice and admission
    def choose_mask(self, candidates: MaskCandidates, state: tuple[float, ...] | None) -> MaskChoice:
        """SAM2's choice (highest predicted IoU), and whether the frame enters the DRM.

        `state`: (frames since the last admission, -1 for none; then (age, area) pairs of the
        recent non-empty areas, oldest first), or None after a prompt."""
        ious = candidates.ious
        index = int(np.argmax(np.asarray(ious, dtype=np.float32)))
        if candidates.masks is None:
            raise ValueError("DAM4SAMPolicy needs the candidates' masks")
        chosen = candidates.masks[index]
        area = float(chosen.sum())
        since = -1.0 if state is None else state[0]
        history = [] if state is None else [(age + 1, a) for age, a in zip(state[1::2], state[2::2]) if age + 1 < _AREA_WINDOW]
        had_history = bool(history)
        if area > 0:
            history = [*history, (0.0, area)][-self.area_history :]
        ratio = area / float(np.median([a for _, a in history])) if had_history and area > 0 else -1.0
        gap = since + 1 if since >= 0 else -1.0  # frames since the last admission, this one included
        admitted = (
            ious[index] > self.min_iou
            and self.area_ratio[0] <= ratio <= self.area_ratio[1]
            and (gap < 0 or gap > self.min_gap)
            and self.reveals_distractor(candidates, index)
        )
        since = 0.0 if admitted else gap
        flat = tuple(v for pair in history for v in pair)
        return MaskChoice(index, (since, *flat), area=area, resolves_distractor=bool(admitted))

    def reveals_distractor(self, candidates: MaskCandidates, index: int) -> bool:
        """Whether an alternative candidate adds, beside the chosen mask, a component large enough to
        stretch its box: the chosen box covers at most `max_box_overlap` of the joined box."""
        from maskvos.inference.temporal import largest_component_box

        chosen = candidates.masks[index]
        box = candidates.boxes[index]
        if box is None:
            return False
        for j, alternative in enumerate(candidates.masks):
            if j == index:
                continue
            added = largest_component_box(alternative & ~chosen)
            if added is None:
                continue
            joined = (min(box[0], added[0]), min(box[1], added[1]), max(box[2], added[2]), max(box[3], added[3]))
            if _overlap(box, joined) <= self.max_box_overlap:
                return True
        return False

    # ------------------------------------------------------------------ memory
    def select(
        self,
        window: MemoryWindow,
        frame_idx: int,
        reverse: bool,
        prompted: Sequence[int],
        memories: Mapping[int, FrameSignals | None],
    ) -> MemoryPlan:
        selected, unselected = select_prompted_frames(frame_idx, prompted, window.max_prompted_frames)
        step = 1 if reverse else -1
        previous = frame_idx + step

        def ahead(t: int) -> bool:  # t lies before `frame_idx` in the tracking direction
            return t > frame_idx if reverse else t < frame_idx

        def distance(t: int) -> int:
            return abs(frame_idx - t)

        earlier = sorted((t for t in memories if ahead(t)), key=distance)
        drm_room = max(self.drm_size - len(selected), 0)
        drm = [t for t in earlier if t != previous and _resolves(memories[t])][:drm_room]
        spatial = [(t, 0, True) for t in selected] + [(t, 0, False) for t in drm]
        ram_slots = window.num_maskmem - min(len(selected) + len(drm), self.drm_size)
        for i, t in enumerate(self._recent_appearance(previous, reverse, memories, earlier, ram_slots)):
            spatial.append((t, window.num_maskmem - 1 - i, False))
        non_empty = {t: s for t, s in memories.items() if not _empty(s) and t not in drm}
        recent_ptrs, max_distance = plan_pointers(window, frame_idx, reverse, selected, non_empty, unselected)
        sign = -1 if reverse else 1
        prompt_ptrs = [p for p in recent_ptrs if p[2] and p[0] in selected]
        drm_ptrs = [(t, (frame_idx - t) * sign if window.signed_pointers else distance(t), False) for t in drm]
        other_ptrs = [p for p in recent_ptrs if not (p[2] and p[0] in selected)]
        return MemoryPlan(tuple(spatial), tuple(prompt_ptrs + drm_ptrs + other_ptrs), max_distance)

    def _recent_appearance(
        self,
        previous: int,
        reverse: bool,
        memories: Mapping[int, FrameSignals | None],
        earlier: list[int],
        slots: int,
    ) -> list[int]:
        """The RAM frames, nearest first: the frame just before unless its mask is empty (else the
        nearest earlier non-empty frame outside the DRM), then every `stride`-th frame further back,
        skipping empty and DRM frames."""
        if slots < 1:
            return []

        def usable(t: int) -> bool:
            return t in memories and not _empty(memories[t]) and not _resolves(memories[t])

        chosen: list[int] = []
        if previous in memories and not _empty(memories[previous]):
            chosen.append(previous)
        else:
            first = next((t for t in earlier if t != previous and usable(t)), None)
            if first is None:
                return []
            chosen.append(first)
        last = earlier[-1] if earlier else chosen[0]
        t = chosen[0]
        while len(chosen) < slots:
            # the next multiple of the stride beyond t (further back in the tracking direction)
            t = -(-(t + 1) // self.stride) * self.stride if reverse else ((t - 1) // self.stride) * self.stride
            while (t <= last if reverse else t >= last) and not usable(t):
                t += self.stride if reverse else -self.stride
            if not (t <= last if reverse else t >= last):
                break
            chosen.append(t)
        return chosen


def _empty(signals: FrameSignals | None) -> bool:
    """A frame whose chosen mask is empty (or of unknown area)."""
    return signals is None or signals.area is None or signals.area <= 0


def _resolves(signals: FrameSignals | None) -> bool:
    """A frame of the DRM (admission requires a non-empty mask; a flag on an empty one is ignored)."""
    return signals is not None and signals.resolves_distractor and not _empty(signals)


def _overlap(inner: tuple[int, int, int, int], outer: tuple[int, int, int, int]) -> float:
    """The share of the box `outer` that `inner` (inside it) covers, box areas as (x1 - x0) * (y1 - y0)
    of inclusive bounds (the authors' toolkit's rectangles); 1 where `outer` has no area."""
    outer_area = (outer[2] - outer[0]) * (outer[3] - outer[1])
    if outer_area <= 0:
        return 1.0
    return (inner[2] - inner[0]) * (inner[3] - inner[1]) / outer_area
