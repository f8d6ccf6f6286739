"""The memory-policy seam: what a frame leaves in memory, what each frame attends to, what can go.

A `MemoryPolicy` is a frozen (hashable, printable) object given in `InferenceConfig.memory_policy`.
It sees each object's quality signals on each tracked frame (`FrameSignals`) and decides whether
that frame becomes a memory (`admits`); it plans what a frame attends to (`select`); the memory bank
derives what it may drop from the same rule (`reach`, `retained`, which a policy cannot override),
so eviction never disagrees with selection.

Terms: a *prompted* (conditioning) frame is one where the user gave a prompt for the object; a
*tracked* frame is one the session predicted; a *memory* is a tracked frame the policy admitted
(its encoded memory is stored and can be selected).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

#: The object score a prompted frame counts as where memories are ranked by object score (SAM2Long).
PROMPT_SCORE = 10.0


@dataclass(frozen=True)
class FrameSignals:
    """How good one object's output on one frame looks.

    Attributes:
        object_score: presence logit (> 0: the object is judged present).
        iou: the decoder's predicted IoU of the chosen mask (SAM2 family); None where the engine
            has none.
        confidence: matching confidence in 0..1 (featmatch: the object's likeness to its prompt,
            the best affinity of its pixels to the prompted object's pixels); None where the engine
            has none.
        reference: the confidence the object had on its recent memories (featmatch: the highest
            of its retained tracked memories), against which a sudden drop shows; None where there
            is none yet.
        absent_floor: while the object is judged absent, the highest confidence it had on its last
            absent frames (featmatch: how much the occluder or background taken for it looks like
            it); a clear rise above it shows the object is back, even where its look has drifted
            too far from its last memories for `reference` to say so. None while it is present, or
            before it has been absent for a few frames.
        continuity: how much the object looks like itself on its recent memories (featmatch: the
            best affinity of its pixels to the object's pixels on the recent frames, within the
            local window); None where the engine has none or there are no recent memories.
        motion: how well the chosen mask agrees with the object's predicted motion (SAMURAI: the
            IoU of its box with the Kalman filter's predicted box); None where no motion model is
            tracked or it is not yet stable.
        area: foreground pixels of the chosen mask at model-input size, where a policy asked for
            the candidates' masks (0: an empty mask); featmatch: the object's soft area in matching
            cells (the sum of its probabilities); None otherwise.
        resolves_distractor: the policy judged the frame one that tells the object from a
            look-alike (DAM4SAM: a confident, stable mask whose alternatives reveal a distractor).
        candidate: which of the decoder's candidates the output is, where a policy chose it (a
            rebuild of an evicted memory takes the same one again).
        recent_reference: the confidence of the object's last few memories (featmatch: the best on
            the tracked memories within 3 frames of the last one), against which a drop within a
            few frames shows; None where there is none, or while the object is judged absent.
        area_reference: the object's area on its recent memories (featmatch: the largest within the
            frames `reference` spans); None where there is none, or while it is judged absent.
    """

    object_score: float
    iou: float | None = None
    confidence: float | None = None
    reference: float | None = None
    absent_floor: float | None = None
    continuity: float | None = None
    motion: float | None = None
    area: float | None = None
    resolves_distractor: bool = False
    candidate: int | None = None
    recent_reference: float | None = None
    area_reference: float | None = None


@dataclass(frozen=True)
class MaskCandidates:
    """The decoder's candidate masks for one object on one frame (SAM2 family, multimask output).

    Attributes:
        boxes: per candidate, the (x0, y0, x1, y1) inclusive pixel bounds of its foreground (logit
            > 0) at model-input size; None for an empty candidate.
        ious: per candidate, the decoder's predicted IoU.
        masks: (M, H, W) bool foreground of each candidate at model-input size, given to policies
            that ask for it (`needs_candidate_masks`); None otherwise.
    """

    boxes: tuple[tuple[int, int, int, int] | None, ...]
    ious: tuple[float, ...]
    masks: np.ndarray | None = None


@dataclass(frozen=True)
class MaskChoice:
    """Which candidate a policy picks, and what it keeps for the object's next frame.

    Attributes:
        index: the chosen candidate.
        state: the policy's per-object state after this frame, as plain floats (saved with the
            session); the next frame of the pass receives it. None: nothing to carry.
        motion: the motion score of the chosen candidate (`FrameSignals.motion`).
        area: its foreground pixels (`FrameSignals.area`).
        resolves_distractor: `FrameSignals.resolves_distractor`.
    """

    index: int
    state: tuple[float, ...] | None = None
    motion: float | None = None
    area: float | None = None
    resolves_distractor: bool = False


@dataclass(frozen=True)
class MemoryWindow:
    """The sizes a session's memory rules work with: the model's, the session configuration's and
    the video's.

    Attributes:
        num_maskmem: memory slots of the model (one prompted slot plus num_maskmem - 1 recent ones).
        stride: temporal stride of the recent-frame slots (`InferenceConfig.memory_stride`).
        max_pointers: most object pointers attended to.
        max_prompted_frames: most prompted frames attended to; -1 takes all.
        signed_pointers: the pointers' temporal distances are signed (SAM2.1) or absolute.
        num_frames: the video length; None for a stream of unknown length.
    """

    num_maskmem: int
    stride: int = 1
    max_pointers: int = 16
    max_prompted_frames: int = -1
    signed_pointers: bool = True
    num_frames: int | None = None

    @property
    def reach(self) -> int:
        """The farthest (in frames) SAM2's recent-frame slots and pointers look back from a frame."""
        return max(self.max_pointers - 1, 1 + self.stride * (self.num_maskmem - 2), 1)


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
    def tracked_frames(self) -> frozenset[int]:
        """The tracked (not prompted) frames whose memories the plan uses."""
        return frozenset(t for t, _, is_prompted in (*self.spatial, *self.pointers) if not is_prompted)


def as_signal_map(frames: Mapping[int, FrameSignals | None] | Iterable[int]) -> dict[int, FrameSignals | None]:
    """Frames with their signals: a mapping as it is, plain frame indices with unknown (None) signals."""
    if isinstance(frames, Mapping):
        return dict(frames)
    return dict.fromkeys(frames)


class MemoryPolicy(ABC):
    """What is admitted to memory, what each frame attends to and, derived from that, what is kept.

    Subclasses are frozen dataclasses (their `repr` is part of a run's signature) that implement
    `select` and may override `admits`. `select` must have the *window property*: a frame further
    along a pass selects, of the frames before the pass's start, only frames the start frame would
    select (so restoring what the start frame selects restores what the whole pass needs, and what
    a pass starting at a prompt can select is what that prompt frame selects in either direction).

    `reach` and `retained` are derived from `select` and cannot be overridden.
    """

    #: The name `get_policy` knows the policy by ("" for policies only given as objects).
    name: ClassVar[str] = ""
    _DERIVED: ClassVar[tuple[str, ...]] = ("reach", "retained")

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        overridden = [m for m in cls._DERIVED if m in cls.__dict__]
        if overridden:
            raise TypeError(f"{cls.__name__} overrides {', '.join(overridden)}; retention derives from select only")

    def admits(self, signals: FrameSignals) -> bool:
        """Whether a tracked frame with these signals becomes a memory (by default every frame)."""
        return True

    #: Whether `choose_mask` picks among the decoder's candidates (the session then computes their
    #: boxes and hands each object's state from frame to frame); False keeps SAM2's choice, the
    #: candidate of highest predicted IoU.
    chooses_masks: ClassVar[bool] = False
    #: Whether `choose_mask` needs the candidates' masks, not only their boxes.
    needs_candidate_masks: ClassVar[bool] = False

    def for_model(self, model_name: str) -> MemoryPolicy:
        """The policy with its model-dependent settings resolved for `model_name` (e.g. SAMURAI's
        motion weight is smaller for large models). By default itself."""
        return self

    def presence_threshold(self) -> float:
        """The object-score logit above which the decoder's mask and pointer count an object as
        present (SAM2: 0)."""
        return 0.0

    def choose_mask(self, candidates: MaskCandidates, state: tuple[float, ...] | None) -> MaskChoice:
        """Pick one of an object's candidate masks, given the state the object's previous frame in
        this pass left (None after a prompt, or when the previous frame left none). By default
        SAM2's rule: the highest predicted IoU (the first of equals)."""
        ious = candidates.ious
        return MaskChoice(max(range(len(ious)), key=lambda i: (ious[i], -i)))

    @property
    def num_pathways(self) -> int:
        """Hypotheses kept per object (SAM2Long's memory tree: several; every other policy: one)."""
        return 1

    def memory_key_scales(
        self, frame_scores: Sequence[float], pointer_scores: Sequence[float]
    ) -> tuple[list[float], list[float]] | None:
        """Factors on the memory-attention keys of the attended frames and pointers, given their
        object scores (a prompt's counts `PROMPT_SCORE`); None leaves the keys as they are."""
        return None

    def present(self, signals: FrameSignals) -> bool:
        """Whether the object counts as present on a tracked frame, for engines that have no presence
        head of their own (featmatch: an object judged absent gets no mask and is searched for in
        the whole frame). By default always: the engine's labels stand."""
        return True

    @abstractmethod
    def select(
        self,
        window: MemoryWindow,
        frame_idx: int,
        reverse: bool,
        prompted: Sequence[int],
        memories: Mapping[int, FrameSignals | None],
    ) -> MemoryPlan:
        """What one object attends to on `frame_idx`, tracked backward if `reverse`.

        Arguments:
            prompted: the object's prompted frames, ascending.
            memories: the tracked frames that hold a memory of the object, with the signals of
                their outputs (None where unknown); only these frames may appear in the plan as
                tracked (not prompted) frames. A policy that selects by signals must keep the
                window property given each frame's signals.
        """

    def reach(
        self,
        window: MemoryWindow,
        frame_idx: int,
        reverse: bool,
        prompted: Sequence[int],
        frames: Mapping[int, FrameSignals | None],
    ) -> frozenset[int]:
        """The tracked frames among `frames` that `frame_idx` would attend to were they all memories."""
        return self.select(window, frame_idx, reverse, prompted, frames).tracked_frames

    def retained(
        self,
        window: MemoryWindow,
        next_frame: int,
        reverse: bool,
        prompted: Sequence[int],
        memories: Mapping[int, FrameSignals | None],
        others: Mapping[int, FrameSignals | None] | None = None,
        anchors: Iterable[int] = (),
    ) -> set[int]:
        """The tracked frames to keep before `next_frame` is tracked in direction `reverse`.

        A memory stays while `next_frame` or the start of a pass at an anchor (a prompted frame, in
        either direction) would select it. An output that is no memory (`others`: the policy did
        not admit it; kept as the previous mask of a correction) stays while it lies where a memory
        would stay.
        """
        anchors = list(anchors)
        keep: set[int] = set()
        memories = as_signal_map(memories)
        pools = [memories] if not others else [memories, {**as_signal_map(others), **memories}]
        for frames in pools:
            keep |= self.reach(window, next_frame, reverse, prompted, frames)
            for p in anchors:
                keep |= self.reach(window, p, False, prompted, frames)
                keep |= self.reach(window, p, True, prompted, frames)
        return keep
