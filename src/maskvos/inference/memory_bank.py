"""Which stored frames a tracked frame attends to: SAM2's memory selection rules.

These are pure functions of frame indices, so a session can evict everything they can never
select again. Terms: a *prompted* (conditioning) frame is one where the user gave a prompt for the
object; a *recent* frame is an earlier tracked frame in the direction of propagation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch


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


# ---------------------------------------------------------------------------------------------------
# Stored memories


@dataclass
class MemoryEntry:
    """What one object leaves behind on one frame.

    Attributes:
        low_res_logits: (1, 1, 4h, 4w) the chosen mask logits (also the dense prompt of a later correction).
        obj_ptr: (1, C) the object pointer.
        object_score_logits: (1, 1) > 0 where the object is present.
        mem_feats: (1, D, h, w) the encoded memory (None until encoded); stored in the bank's dtype.
    """

    low_res_logits: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    mem_feats: torch.Tensor | None = None


@dataclass
class ObjectMemory:
    """One object's memories.

    Attributes:
        prompted: entries of prompted (conditioning) frames; kept for the whole session.
        tracked: entries of tracked frames; evicted once no later frame can select them.
        pending: outputs of prompts given since the last propagation, not yet memory-encoded.
        directions: every frame ever processed for the object -> whether it was tracked in reverse.
    """

    prompted: dict[int, MemoryEntry] = field(default_factory=dict)
    tracked: dict[int, MemoryEntry] = field(default_factory=dict)
    pending: dict[int, MemoryEntry] = field(default_factory=dict)
    directions: dict[int, bool] = field(default_factory=dict)

    def latest(self, frame_idx: int) -> MemoryEntry | None:
        """The newest output on a frame: a pending prompt, else a prompted, else a tracked entry."""
        return self.pending.get(frame_idx) or self.prompted.get(frame_idx) or self.tracked.get(frame_idx)


@dataclass(frozen=True)
class MemoryPlan:
    """The memories one object attends to on one frame, by frame index.

    `spatial` lists (frame index, t_pos, is_prompted); `pointers` lists (frame index, distance,
    is_prompted). Objects with equal plans can run memory attention as one batch.
    """

    spatial: tuple[tuple[int, int, bool], ...]
    pointers: tuple[tuple[int, int, bool], ...]
    max_distance: int

    @property
    def frames(self) -> set[int]:
        return {t for t, _, _ in self.spatial} | {t for t, _, _ in self.pointers}


class MemoryBank:
    """Per-object memories with SAM2's selection rules and eviction of what can no longer be selected.

    Selection (the reference's defaults): every prompted frame (or the `max_prompted_frames` closest),
    the `num_maskmem - 1` recent frames with a temporal `stride`, and up to `max_pointers` object
    pointers from prompted frames in the past and the most recent frames.

    Retention: entries of tracked frames stay while the next frame of the current pass can select
    them, or while they lie within `anchor_window` frames of a prompted frame (so a second pass that
    starts at a prompt, e.g. backward after forward, finds what the reference would). Everything else
    is evicted, so resident memory does not grow with the length of the video.
    """

    def __init__(
        self,
        num_maskmem: int,
        stride: int = 1,
        max_pointers: int = 16,
        max_prompted_frames: int = -1,
        keep_all: bool = False,
    ) -> None:
        self.num_maskmem = num_maskmem
        self.stride = stride
        self.max_pointers = max_pointers
        self.max_prompted_frames = max_prompted_frames
        self.keep_all = keep_all
        self.anchor_window = max(max_pointers, (num_maskmem - 1) * stride + 2)
        self.objects: dict[int, ObjectMemory] = {}
        #: (1, D, h, w) position encoding of every memory (it depends only on the feature grid).
        self.mem_pos_enc: torch.Tensor | None = None

    def object(self, obj_id: int) -> ObjectMemory:
        return self.objects.setdefault(obj_id, ObjectMemory())

    def remove(self, obj_id: int) -> None:
        self.objects.pop(obj_id, None)

    def num_entries(self) -> int:
        """Stored entries over all objects (prompted, tracked and pending)."""
        return sum(len(m.prompted) + len(m.tracked) + len(m.pending) for m in self.objects.values())

    def plan(self, obj_id: int, frame_idx: int, reverse: bool, num_frames: int | None, signed: bool) -> MemoryPlan:
        """Which stored memories object `obj_id` attends to on `frame_idx`."""
        mem = self.objects[obj_id]
        selected, unselected = select_prompted_frames(frame_idx, sorted(mem.prompted), self.max_prompted_frames)
        spatial = [(t, 0, True) for t in selected]
        for t_pos, t in recent_frame_slots(frame_idx, self.num_maskmem, self.stride, reverse):
            if t in mem.tracked:
                spatial.append((t, t_pos, False))
            elif t in unselected:
                spatial.append((t, t_pos, True))
        prompted_ptrs, recent_ptrs, max_distance = pointer_distances(
            frame_idx, selected, num_frames, max_pointers=self.max_pointers, reverse=reverse, signed=signed
        )
        pointers = [(t, d, True) for t, d in prompted_ptrs]
        for t, d in recent_ptrs:
            if t in mem.tracked:
                pointers.append((t, d, False))
            elif t in unselected:
                pointers.append((t, d, True))
        return MemoryPlan(tuple(spatial), tuple(pointers), max_distance)

    def entry(self, obj_id: int, frame_idx: int, is_prompted: bool) -> MemoryEntry:
        mem = self.objects[obj_id]
        return mem.prompted[frame_idx] if is_prompted else mem.tracked[frame_idx]

    def missing_context(self, obj_id: int, frame_idx: int, reverse: bool) -> bool:
        """Whether frames that `frame_idx` would attend to were processed but have been evicted."""
        mem = self.objects[obj_id]
        sign = -1 if reverse else 1
        wanted = {t for _, t in recent_frame_slots(frame_idx, self.num_maskmem, self.stride, reverse)}
        wanted |= {frame_idx - sign * d for d in range(1, self.max_pointers)}
        return any(
            mem.directions.get(t) == reverse and t not in mem.tracked and t not in mem.prompted for t in wanted
        )

    def evict(self, next_frame: int, reverse: bool, obj_ids: Iterable[int] | None = None) -> int:
        """Drop tracked entries that neither `next_frame` (the frame about to be processed) nor a pass
        starting at a prompted frame can select. Returns the number of entries dropped."""
        if self.keep_all:
            return 0
        sign = -1 if reverse else 1
        keep = {t for _, t in recent_frame_slots(next_frame, self.num_maskmem, self.stride, reverse)}
        keep |= {next_frame - sign * d for d in range(1, self.max_pointers)}
        dropped = 0
        for obj_id in self.objects if obj_ids is None else obj_ids:
            mem = self.objects[obj_id]
            anchors = list(mem.prompted) + list(mem.pending)
            for t in list(mem.tracked):
                if t in keep or any(abs(t - p) <= self.anchor_window for p in anchors):
                    continue
                del mem.tracked[t]
                dropped += 1
        return dropped


# ---------------------------------------------------------------------------------------------------
# Saving and restoring a bank (resume an interrupted run exactly)

_ENTRY_FIELDS = ("low_res_logits", "obj_ptr", "object_score_logits", "mem_feats")


def bank_state(bank: MemoryBank) -> dict:
    """The bank's contents as plain dicts, lists and tensors (loadable with `weights_only=True`)."""

    def entries(store: dict[int, MemoryEntry]) -> dict[int, dict]:
        return {t: {k: getattr(e, k) for k in _ENTRY_FIELDS if getattr(e, k) is not None} for t, e in store.items()}

    return {
        "mem_pos_enc": bank.mem_pos_enc,
        "objects": {
            obj_id: {
                "prompted": entries(m.prompted),
                "tracked": entries(m.tracked),
                "pending": entries(m.pending),
                "directions": dict(m.directions),
            }
            for obj_id, m in bank.objects.items()
        },
    }


def restore_bank(bank: MemoryBank, state: dict, device: torch.device) -> None:
    """Replace the bank's contents by a saved `bank_state`."""

    def entries(store: dict[int, dict]) -> dict[int, MemoryEntry]:
        return {int(t): MemoryEntry(**{k: v.to(device) for k, v in e.items()}) for t, e in store.items()}

    pos = state["mem_pos_enc"]
    bank.mem_pos_enc = None if pos is None else pos.to(device)
    bank.objects = {
        int(obj_id): ObjectMemory(
            prompted=entries(m["prompted"]),
            tracked=entries(m["tracked"]),
            pending=entries(m["pending"]),
            directions={int(t): bool(r) for t, r in m["directions"].items()},
        )
        for obj_id, m in state["objects"].items()
    }
