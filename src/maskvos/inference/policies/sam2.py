"""SAM2's memory rules (the reference's defaults) as pure functions of frame indices, and
`SAM2Policy`, the default policy built on them: every tracked frame is admitted; a frame attends to
every prompted frame (or the `max_prompted_frames` closest), the `num_maskmem - 1` recent frames
with a temporal `stride`, and up to `max_pointers` object pointers from prompted frames in the past
and the most recent frames.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from maskvos.inference.policies.base import FrameSignals, MemoryPlan, MemoryPolicy, MemoryWindow


def select_prompted_frames(frame_idx: int, prompted: Iterable[int], max_frames: int) -> tuple[list[int], list[int]]:
    """Split the prompted frames into those attended to and the rest.

    With `max_frames` = -1 (SAM2's default) all are selected. Otherwise the closest prompted frame
    before `frame_idx`, the closest at or after it, then the temporally closest others.

    Returns:
        (selected, unselected) frame indices; `selected` keeps the order of `prompted` where all are taken.
    """
    prompted = list(prompted)
    if max_frames == -1 or len(prompted) <= max_frames:
        return prompted, []
    if max_frames < 2:
        raise ValueError("max_frames must be -1 or at least 2")
    selected: list[int] = []
    before = [t for t in prompted if t < frame_idx]
    after = [t for t in prompted if t >= frame_idx]
    if before:
        selected.append(max(before))
    if after:
        selected.append(min(after))
    rest = sorted((t for t in prompted if t not in selected), key=lambda t: abs(t - frame_idx))
    selected += rest[: max_frames - len(selected)]
    unselected = [t for t in prompted if t not in selected]
    return selected, unselected


def recent_frame_slots(frame_idx: int, num_maskmem: int, stride: int = 1, reverse: bool = False) -> list[tuple[int, int]]:
    """The (t_pos, frame index) pairs of the recent-frame memory slots.

    Slot t_pos = num_maskmem - 1 is the adjacent frame; the other num_maskmem - 2 slots take every
    `stride`-th frame further back (forward tracking) or further ahead (reverse tracking). Frame
    indices may fall outside the video; callers skip those with no stored memory.
    """
    sign = -1 if reverse else 1
    slots = []
    for t_pos in range(1, num_maskmem):
        distance = num_maskmem - t_pos
        if distance == 1:
            frame = frame_idx - sign
        elif not reverse:
            frame = ((frame_idx - 2) // stride) * stride - (distance - 2) * stride
        else:
            frame = -(-(frame_idx + 2) // stride) * stride + (distance - 2) * stride
        slots.append((t_pos, frame))
    return slots


def pointer_distances(
    frame_idx: int,
    prompted: Iterable[int],
    num_frames: int | None,
    max_pointers: int = 16,
    reverse: bool = False,
    signed: bool = True,
    only_past_prompts: bool = True,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int]:
    """Which frames' object pointers a frame attends to.

    Arguments:
        prompted: the selected prompted frames.
        num_frames: the video length, or None for an unbounded stream.
    Returns:
        (prompted_pointers, recent_pointers, max_distance): lists of (frame index, distance) where
        distance is the temporal offset used for the pointer's position encoding, and the
        normaliser of those distances, min(num_frames, max_pointers) - 1. Recent pointers are the
        frames at distance 1 .. max_pointers-1 in the tracking direction (callers skip frames with
        no stored pointer).
    """
    limit = max_pointers if num_frames is None else min(num_frames, max_pointers)
    sign = -1 if reverse else 1
    prompted_ptrs = []
    for t in prompted:
        if only_past_prompts and (t < frame_idx if reverse else t > frame_idx):
            continue
        distance = (frame_idx - t) * sign if signed else abs(frame_idx - t)
        prompted_ptrs.append((t, distance))
    recent = []
    for distance in range(1, limit):
        t = frame_idx - sign * distance
        if t < 0 or (num_frames is not None and t >= num_frames):
            break
        recent.append((t, distance))
    return prompted_ptrs, recent, max(limit - 1, 1)


def nearest_before(
    frame_idx: int, reverse: bool, frames: Iterable[int], count: int, qualifies: Callable[[int], bool]
) -> list[int]:
    """The `count` frames of `frames` nearest before `frame_idx` in the tracking direction for which
    `qualifies(t)` holds, nearest first (the scan of the policies that keep the frame before and the
    most recent good frames before it: samurai, sam2long)."""
    before = [t for t in frames if (t > frame_idx if reverse else t < frame_idx)]
    return [t for t in sorted(before, key=lambda t: abs(t - frame_idx)) if qualifies(t)][:count]


def plan_pointers(
    window: MemoryWindow,
    frame_idx: int,
    reverse: bool,
    selected: Sequence[int],
    memories: Collection[int],
    unselected: Collection[int] = (),
) -> tuple[list[tuple[int, int, bool]], int]:
    """The object pointers a frame attends to by SAM2's rule, as (frame index, distance,
    is_prompted), and the distances' normaliser: those of the `selected` prompted frames, then the
    recent frames within reach that hold a memory (or are prompted frames left `unselected`)."""
    prompted_ptrs, recent_ptrs, max_distance = pointer_distances(
        frame_idx,
        selected,
        window.num_frames,
        max_pointers=window.max_pointers,
        reverse=reverse,
        signed=window.signed_pointers,
    )
    pointers = [(t, d, True) for t, d in prompted_ptrs]
    for t, d in recent_ptrs:
        if t in memories:
            pointers.append((t, d, False))
        elif t in unselected:
            pointers.append((t, d, True))
    return pointers, max_distance


@dataclass(frozen=True)
class SAM2Policy(MemoryPolicy):
    """SAM2's rules: admit every tracked frame; attend as `SAM2VideoPredictor` does.

    A recent slot or pointer whose frame holds no memory is left out, except that a prompted frame
    left out by `max_prompted_frames` still fills a recent slot or pointer it falls on.
    """

    name: ClassVar[str] = "sam2"

    def select(
        self,
        window: MemoryWindow,
        frame_idx: int,
        reverse: bool,
        prompted: Sequence[int],
        memories: Mapping[int, FrameSignals | None],
    ) -> MemoryPlan:
        selected, unselected = select_prompted_frames(frame_idx, prompted, window.max_prompted_frames)
        spatial = [(t, 0, True) for t in selected]
        for t_pos, t in recent_frame_slots(frame_idx, window.num_maskmem, window.stride, reverse):
            if t in memories:
                spatial.append((t, t_pos, False))
            elif t in unselected:
                spatial.append((t, t_pos, True))
        pointers, max_distance = plan_pointers(window, frame_idx, reverse, selected, memories, unselected)
        return MemoryPlan(tuple(spatial), tuple(pointers), max_distance)
