"""Per-object memories of a session: storage, selection and eviction behind one `MemoryPolicy`.

`MemoryBank` is the only writer of memories: a session stages prompts (`stage_prompt`), promotes
them once encoded (`promote`), hands over each frame's tracked outputs (`admit`, where the policy
decides from their quality signals which become memories), records the prompt frames a pass went
through (`mark_visited`) and the memories' position encoding (`set_mem_pos_enc`).

What a frame attends to is the policy's `select`; what is dropped (`evict`) and what a frame misses
(`missing`) derive from the same rule. Every eviction of a memory is recorded, so an output the
policy did not admit is never taken for an evicted memory, and every entry is stamped, so a rebuild
(`rebuild_spans`, `rebuild_view`) attends only to what the pass it recomputes had.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from maskvos.inference.policies import FrameSignals, MemoryPlan, MemoryPolicy, MemoryWindow, SAM2Policy

# SAM2's selection rules live with its policy; re-exported here where callers have always found them.
from maskvos.inference.policies.sam2 import pointer_distances, recent_frame_slots, select_prompted_frames

__all__ = [
    "MemoryBank",
    "MemoryEntry",
    "MemoryPlan",
    "ObjectMemory",
    "RebuildView",
    "bank_state",
    "entry_from_state",
    "entry_state",
    "pointer_distances",
    "recent_frame_slots",
    "restore_bank",
    "select_prompted_frames",
]


@dataclass
class MemoryEntry:
    """What one object leaves behind on one frame.

    Attributes:
        low_res_logits: (1, 1, 4h, 4w) the chosen mask logits (also the dense prompt of a later correction).
        obj_ptr: (1, C) the object pointer.
        object_score_logits: (1, 1) > 0 where the object is present.
        mem_feats: (1, D, h, w) the encoded memory (None until encoded, and for an output the policy
            did not admit); stored in the bank's dtype.
        signals: the quality signals of the output (the decoder's predicted IoU of the chosen mask).
        is_memory: whether the entry can be attended to (False: a tracked output the policy did not
            admit, kept only as the previous mask of a correction on its frame).
        stamp: when the bank stored it (a counter; a rebuilt entry keeps the stamp of the one it
            recomputes), so a rebuild attends only to what the pass it recomputes could.
        track_state: what the policy carries from this frame to the object's next one in the pass
            (`MaskChoice.state`, e.g. SAMURAI's Kalman filter); None where it carries nothing.
    """

    low_res_logits: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    mem_feats: torch.Tensor | None = None
    signals: FrameSignals | None = None
    is_memory: bool = True
    stamp: int = 0
    track_state: tuple[float, ...] | None = None


@dataclass
class ObjectMemory:
    """One object's memories (read them; `MemoryBank` writes them).

    Attributes:
        prompted: entries of prompted (conditioning) frames; kept for the whole session.
        tracked: entries of tracked frames (memories, and outputs the policy did not admit); dropped
            once no later frame can select them.
        pending: outputs of prompts given since the last propagation, not yet memory-encoded.
        directions: every frame ever processed for the object -> whether it was tracked in reverse.
        evicted: tracked frames whose memory was dropped (not those whose output was no memory) ->
            the dropped entry's stamp.
        evicted_signals: the same frames -> the dropped entry's signals (policies that select by
            signals need them to say what a pass would have attended to).
    """

    prompted: dict[int, MemoryEntry] = field(default_factory=dict)
    tracked: dict[int, MemoryEntry] = field(default_factory=dict)
    pending: dict[int, MemoryEntry] = field(default_factory=dict)
    directions: dict[int, bool] = field(default_factory=dict)
    evicted: dict[int, int] = field(default_factory=dict)
    evicted_signals: dict[int, FrameSignals | None] = field(default_factory=dict)

    def latest(self, frame_idx: int) -> MemoryEntry | None:
        """The newest output on a frame: a pending prompt, else a prompted, else a tracked entry."""
        return self.pending.get(frame_idx) or self.prompted.get(frame_idx) or self.tracked.get(frame_idx)

    def memory_frames(self) -> set[int]:
        """Tracked frames that hold a memory."""
        return {t for t, e in self.tracked.items() if e.is_memory}

    def memory_signals(self) -> dict[int, FrameSignals | None]:
        """Tracked frames that hold a memory -> their outputs' signals."""
        return {t: e.signals for t, e in self.tracked.items() if e.is_memory}


@dataclass(frozen=True)
class RebuildView:
    """What a rebuild (re-tracking frames to recompute evicted memories) may attend to: per object,
    the entries stored before the recomputed pass tracked its first frame of the span, and the
    frames being recomputed.

    Attributes:
        cutoff: obj_id -> stamp; entries stamped at or after it are hidden (objects not listed see all).
        frames: the frames the rebuild recomputes.
    """

    cutoff: dict[int, int]
    frames: frozenset[int]

    def sees(self, obj_id: int, frame_idx: int, entry: MemoryEntry) -> bool:
        cutoff = self.cutoff.get(obj_id)
        return cutoff is None or entry.stamp < cutoff or frame_idx in self.frames


class MemoryBank:
    """Per-object memories, selected by a `MemoryPolicy`; what no later frame can select is evicted.

    Retention (derived from the policy's selection, `MemoryPolicy.retained`): a tracked entry stays
    while the frame about to be processed can select it, or while a pass starting at one of the
    object's prompts (either direction) can, so a second pass from a prompt (e.g. backward after
    forward) finds what the reference would. Everything else is evicted, so resident memory does not
    grow with the length of the video; a pass that needs evicted memories rebuilds them first
    (`missing` says which).
    """

    def __init__(self, window: MemoryWindow, policy: MemoryPolicy | None = None, keep_all: bool = False) -> None:
        self.window = window
        self.policy = policy or SAM2Policy()
        self.keep_all = keep_all
        self.objects: dict[int, ObjectMemory] = {}
        #: (1, D, h, w) position encoding of every memory (it depends only on the feature grid).
        self.mem_pos_enc: torch.Tensor | None = None
        #: obj_id -> frames kept through eviction while a rebuild runs (see `pinned`).
        self._pins: dict[int, list[frozenset[int]]] = {}
        #: the stamp of the latest entry stored.
        self.clock = 0

    @property
    def anchor_window(self) -> int:
        """How far from a frame (in frames) SAM2's window reaches: with `SAM2Policy` the entries kept
        around a prompt lie within this distance of it."""
        return self.window.reach

    # ------------------------------------------------------------------ reading
    def num_entries(self) -> int:
        """Stored entries over all objects (prompted, tracked and pending)."""
        return sum(len(m.prompted) + len(m.tracked) + len(m.pending) for m in self.objects.values())

    def latest(self, obj_id: int, frame_idx: int) -> MemoryEntry | None:
        mem = self.objects.get(obj_id)
        return None if mem is None else mem.latest(frame_idx)

    def direction(self, obj_id: int, frame_idx: int) -> bool | None:
        """Whether `frame_idx` was last processed for the object in reverse; None if never."""
        mem = self.objects.get(obj_id)
        return None if mem is None else mem.directions.get(frame_idx)

    def pending_prompts(self, obj_ids: Iterable[int]) -> dict[int, list[int]]:
        """frame_idx -> the objects of `obj_ids` (in that order) with a prompt there that is not yet
        memory-encoded."""
        by_frame: dict[int, list[int]] = {}
        for obj_id in obj_ids:
            for frame_idx in self.objects[obj_id].pending:
                by_frame.setdefault(frame_idx, []).append(obj_id)
        return by_frame

    def entry(self, obj_id: int, frame_idx: int, is_prompted: bool) -> MemoryEntry:
        mem = self.objects[obj_id]
        return mem.prompted[frame_idx] if is_prompted else mem.tracked[frame_idx]

    # ------------------------------------------------------------------ selection
    def plan(self, obj_id: int, frame_idx: int, reverse: bool, view: RebuildView | None = None) -> MemoryPlan:
        """Which stored memories object `obj_id` attends to on `frame_idx` (in a rebuild: of those `view` shows)."""
        mem = self.objects[obj_id]
        prompted, memories = sorted(mem.prompted), mem.memory_signals()
        if view is not None:
            # Prompts given after the recomputed pass stay hidden, unless none would be left (the
            # prompts that pass had were all replaced since: it cannot be recomputed exactly then).
            prompted = [t for t in prompted if view.sees(obj_id, t, mem.prompted[t])] or prompted
            memories = {t: sig for t, sig in memories.items() if view.sees(obj_id, t, mem.tracked[t])}
        return self.policy.select(self.window, frame_idx, reverse, prompted, memories)

    def context(self, obj_id: int, frame_idx: int, reverse: bool) -> frozenset[int]:
        """The tracked frames `frame_idx` would attend to had no memory been evicted."""
        mem = self.objects.get(obj_id)
        if mem is None:
            return frozenset()
        frames = {**{t: mem.evicted_signals.get(t) for t in mem.evicted}, **mem.memory_signals()}
        return self.policy.reach(self.window, frame_idx, reverse, sorted(mem.prompted), frames)

    def missing(self, obj_id: int, frame_idx: int, reverse: bool) -> set[int]:
        """Evicted memories that `frame_idx`, tracked in direction `reverse`, would attend to (by the
        window property, all that a pass starting there can miss)."""
        mem = self.objects.get(obj_id)
        if mem is None or not mem.evicted:
            return set()
        return set(self.context(obj_id, frame_idx, reverse) & mem.evicted.keys())

    def rebuild_spans(self, obj_id: int, frames: Iterable[int]) -> list[tuple[int, int, bool]]:
        """(start, stop, reverse) passes that recompute `frames` of an object: each frame from the
        closest prompted frame before it of the pass that tracked it (or where that pass began)."""
        mem = self.objects[obj_id]
        stops: dict[tuple[int, bool], int] = {}
        for t in frames:
            reverse = mem.directions[t]
            step = 1 if reverse else -1
            start = t
            while start not in mem.prompted and (start + step in mem.prompted or mem.directions.get(start + step) == reverse):
                start += step
            key = (start, reverse)
            stops[key] = t if key not in stops else (min if reverse else max)(stops[key], t)
        return [(start, stop, reverse) for (start, reverse), stop in stops.items()]

    def rebuild_view(self, obj_ids: Iterable[int], start: int, stop: int, reverse: bool) -> RebuildView:
        """What re-tracking `obj_ids` over `start`..`stop` may attend to: what each object had stored
        when the pass being recomputed tracked its first frame there."""
        step = -1 if reverse else 1
        cutoff = {}
        for obj_id in obj_ids:
            mem = self.objects[obj_id]
            first = start + step if start in mem.prompted else start
            entry = mem.tracked.get(first)
            stamp = entry.stamp if entry is not None else mem.evicted.get(first)
            if stamp is not None:
                cutoff[obj_id] = stamp
        return RebuildView(cutoff, frozenset(range(min(start, stop), max(start, stop) + 1)))

    def missing_context(self, obj_id: int, frame_idx: int, reverse: bool) -> bool:
        """Whether memories that `frame_idx` would attend to were evicted."""
        return bool(self.missing(obj_id, frame_idx, reverse))

    # ------------------------------------------------------------------ writing
    def stage_prompt(self, obj_id: int, frame_idx: int, entry: MemoryEntry) -> None:
        """Hold a prompt's output until `promote` stores its encoded memory (replaces an earlier one)."""
        self.objects.setdefault(obj_id, ObjectMemory()).pending[frame_idx] = entry

    def promote(self, obj_id: int, frame_idx: int, mem_feats: torch.Tensor) -> MemoryEntry:
        """Make the pending prompt of `frame_idx` a prompted memory with its encoded `mem_feats`
        (1, D, h, w); a tracked output of the frame is superseded."""
        mem = self.objects[obj_id]
        entry = mem.pending.pop(frame_idx)
        entry.mem_feats = mem_feats
        entry.is_memory = True
        entry.stamp = self._tick()
        mem.prompted[frame_idx] = entry
        mem.tracked.pop(frame_idx, None)
        mem.evicted.pop(frame_idx, None)
        mem.evicted_signals.pop(frame_idx, None)
        return entry

    def admit(
        self,
        frame_idx: int,
        reverse: bool,
        outputs: Sequence[tuple[int, MemoryEntry]],
        encode: Callable[[list[int]], Sequence[torch.Tensor]],
        is_rebuild: bool = False,
    ) -> list[bool]:
        """Store one frame's tracked outputs, (obj_id, entry with its `signals`) pairs, tracked in
        direction `reverse`. The policy decides from each entry's signals whether it becomes a memory;
        `encode(rows)` gives the memories (1, D, h, w) of the admitted rows (indices into `outputs`),
        called once, and only if any is admitted. A rebuild's entry keeps the stamp of the entry it
        recomputes. Returns which outputs became memories."""
        admitted = [e.signals is None or self.policy.admits(e.signals) for _, e in outputs]
        rows = [i for i, is_memory in enumerate(admitted) if is_memory]
        encoded = dict(zip(rows, encode(rows))) if rows else {}
        for row, (obj_id, entry) in enumerate(outputs):
            mem = self.objects[obj_id]
            old = mem.tracked.get(frame_idx)
            stamp = old.stamp if old is not None else mem.evicted.get(frame_idx)
            entry.stamp = stamp if is_rebuild and stamp is not None else self._tick()
            entry.mem_feats = encoded.get(row)
            entry.is_memory = admitted[row]
            mem.tracked[frame_idx] = entry
            mem.evicted.pop(frame_idx, None)
            mem.evicted_signals.pop(frame_idx, None)
            mem.directions[frame_idx] = reverse
        return admitted

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def mark_visited(self, obj_id: int, frame_idx: int, reverse: bool) -> None:
        """Record that a pass in direction `reverse` went through `frame_idx` (a prompt of the object)."""
        self.objects[obj_id].directions[frame_idx] = reverse

    def set_mem_pos_enc(self, mem_pos: torch.Tensor) -> None:
        """Keep the position encoding (B, D, h, w) of a memory encoder output: every memory shares it."""
        if self.mem_pos_enc is None or self.mem_pos_enc.shape[-2:] != mem_pos.shape[-2:]:
            self.mem_pos_enc = mem_pos[:1].clone()

    def remove(self, obj_id: int) -> None:
        self.objects.pop(obj_id, None)
        self._pins.pop(obj_id, None)

    @contextmanager
    def pinned(self, frames: dict[int, Collection[int]]) -> Iterator[None]:
        """Keep these tracked frames (obj_id -> frames) through eviction while the context lasts:
        a rebuild keeps what the pass it prepares will attend to."""
        for obj_id, ts in frames.items():
            self._pins.setdefault(obj_id, []).append(frozenset(ts))
        try:
            yield
        finally:
            for obj_id in frames:
                stack = self._pins.get(obj_id)
                if stack:
                    stack.pop()

    def evict(self, next_frame: int, reverse: bool, obj_ids: Iterable[int] | None = None) -> int:
        """Drop tracked entries that neither `next_frame` (the frame about to be processed, in
        direction `reverse`) nor a pass starting at a prompt can select, nor a pin keeps. Returns
        the number of entries dropped."""
        if self.keep_all:
            return 0
        dropped = 0
        for obj_id in self.objects if obj_ids is None else obj_ids:
            mem = self.objects[obj_id]
            memories = mem.memory_signals()
            others = {t: e.signals for t, e in mem.tracked.items() if not e.is_memory}
            keep = self.policy.retained(
                self.window, next_frame, reverse, sorted(mem.prompted), memories, others, [*mem.prompted, *mem.pending]
            )
            for pins in self._pins.get(obj_id, ()):
                keep |= pins
            for t in [t for t in mem.tracked if t not in keep]:
                entry = mem.tracked.pop(t)
                if entry.is_memory:
                    mem.evicted[t] = entry.stamp
                    mem.evicted_signals[t] = entry.signals
                dropped += 1
        return dropped


# ---------------------------------------------------------------------------------------------------
# Saving and restoring a bank (resume an interrupted run exactly)

_TENSOR_FIELDS = ("low_res_logits", "obj_ptr", "object_score_logits", "mem_feats")


def entry_state(e: MemoryEntry) -> dict:
    """One entry as plain containers of tensors (loadable with `weights_only=True`)."""
    saved: dict = {k: getattr(e, k) for k in _TENSOR_FIELDS if getattr(e, k) is not None}
    if e.signals is not None:
        saved["signals"] = dataclasses.asdict(e.signals)
    saved["is_memory"] = e.is_memory
    saved["stamp"] = e.stamp
    if e.track_state is not None:
        saved["track_state"] = list(e.track_state)
    return saved


def entry_from_state(saved: dict, device: torch.device) -> MemoryEntry:
    """The entry an `entry_state` holds, on `device`."""
    tensors = {k: saved[k].to(device) for k in _TENSOR_FIELDS if k in saved}
    signals = saved.get("signals")
    track_state = saved.get("track_state")
    return MemoryEntry(
        **tensors,
        signals=None if signals is None else FrameSignals(**signals),
        is_memory=bool(saved.get("is_memory", True)),
        stamp=int(saved.get("stamp", 0)),
        track_state=None if track_state is None else tuple(float(v) for v in track_state),
    )


def bank_state(bank: MemoryBank) -> dict:
    """The bank's contents as plain dicts, lists and tensors (loadable with `weights_only=True`)."""

    def entries(store: dict[int, MemoryEntry]) -> dict[int, dict]:
        return {t: entry_state(e) for t, e in store.items()}

    return {
        "mem_pos_enc": bank.mem_pos_enc,
        "clock": bank.clock,
        "objects": {
            obj_id: {
                "prompted": entries(m.prompted),
                "tracked": entries(m.tracked),
                "pending": entries(m.pending),
                "directions": dict(m.directions),
                "evicted": dict(m.evicted),
                "evicted_signals": {t: dataclasses.asdict(sig) for t, sig in m.evicted_signals.items() if sig is not None},
            }
            for obj_id, m in bank.objects.items()
        },
    }


def restore_bank(bank: MemoryBank, state: dict, device: torch.device) -> None:
    """Replace the bank's contents by a saved `bank_state`."""

    def entry(saved: dict) -> MemoryEntry:
        return entry_from_state(saved, device)

    pos = state["mem_pos_enc"]
    bank.mem_pos_enc = None if pos is None else pos.to(device)
    bank.objects = {
        int(obj_id): ObjectMemory(
            prompted={int(t): entry(e) for t, e in m["prompted"].items()},
            tracked={int(t): entry(e) for t, e in m["tracked"].items()},
            pending={int(t): entry(e) for t, e in m["pending"].items()},
            directions={int(t): bool(r) for t, r in m["directions"].items()},
            evicted={int(t): int(stamp) for t, stamp in m.get("evicted", {}).items()},
            evicted_signals={int(t): FrameSignals(**sig) for t, sig in m.get("evicted_signals", {}).items()},
        )
        for obj_id, m in state["objects"].items()
    }
    bank.clock = int(state.get("clock", 0))
    bank._pins = {}
