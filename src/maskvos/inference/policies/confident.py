"""`ConfidentPolicy`: only confident frames become memories, so an occluder, a look-alike or a
lost object is not written into memory, and the last confident memories are what the object is
searched with when it comes back.

Admission: a tracked frame enters memory only when the object is judged present (object score
above `min_object_score`) and the engine's confidence is high enough: SAM2's predicted IoU at least
`min_iou`, featmatch's matching confidence (the mean best affinity of the object's pixels) at least
`min_confidence`. Prompted frames always stay (they are conditioning frames, never tracked ones).

Selection: as SAM2 for the prompted frames and the object pointers; the recent-frame slots take the
`num_maskmem - 1` most recent *admitted* frames, scanning back from the frame before (up to `scan`
frames; None: however far back the last confident ones are), nearest first in the nearest slot. An
object hidden for a while thus attends to its last confident memories and its prompts, never to the
frames where it was absent, and SAM2's global memory attention can find it again anywhere in the
frame. The scan keeps the window property (a later frame selects, of the frames before a pass's
start, only the most recent of those the start selects), so retention and rebuilds stay exact.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from maskvos.errors import ConfigError
from maskvos.inference.policies.base import FrameSignals, MemoryPlan, MemoryPolicy, MemoryWindow
from maskvos.inference.policies.sam2 import nearest_before, plan_pointers, select_prompted_frames


@dataclass(frozen=True)
class ConfidentPolicy(MemoryPolicy):
    """Admit confident frames only; attend to the most recent admitted ones.

    Attributes:
        min_object_score: presence logit a frame must exceed (SAM2: > 0 means present).
        min_iou: the decoder's predicted IoU a SAM2 frame needs (SAMURAI uses 0.5).
        min_confidence: the matching confidence (0..1) a featmatch frame needs; below it featmatch
            also judges the object absent (`present`).
        min_relative: the least ratio of that confidence to the one of the object's recent memories
            (`FrameSignals.reference`); below it the object is judged absent. featmatch's confidence
            (the object's likeness to its prompt) drifts slowly as an object changes (0.83 to 0.40
            over paragliding's 70 frames, a few per cent between neighbours) and drops by a quarter
            or more within a few frames where an occluder is taken for it.
        min_continuity: an object whose continuity (`FrameSignals.continuity`) is at least this is
            present whatever its drop against its prompt: an object that turns, blurs or changes
            scale fast still looks like itself on the last frames (0.65 to 0.75 there on
            davis2016-train where the drop rule judged such objects absent), while an occluder or
            the background taken for it does not (0.13 to 0.59 behind the occluders of the stress
            sets). None (default): no such rule. Measured with 0.65 on davis2016-train: plain J&F
            0.637 to 0.710, but behind one occluder (bus) the occluder taken for the object keeps
            looking like the object's last frames, so its ghost stays (false-positive area while
            hidden 0.000 to 0.096 over the 15 occlusion sets).
        min_rise: an object judged absent is present again when its confidence rises this much
            above its absent floor (`FrameSignals.absent_floor`): behind an occluder featmatch's
            confidence stays within about 0.01 of a floor for tens of frames (0.32 to 0.64 by
            sequence), and rises by 0.05 to 0.15 within a few frames of the object coming back,
            where a look changed over the occlusion can keep it below `min_relative` times the
            confidence before it for good.
        max_shrink: a present object whose confidence drops below `min_relative` times its
            reference stays present when the drop is a drift of its look, not something else taken
            for it: the drop was gradual (its confidence is not below `min_relative` times that of
            its last few memories, `FrameSignals.recent_reference`), it still looks like its recent
            memories (continuity at least `drift_continuity`) and its area is more than this times
            its recent area (`FrameSignals.area_reference`; an occluder sliding over an object
            shrinks what is seen of it). On davis2016-train's fast-changing objects (a turn, a
            zoom, blur) the likeness to the prompt falls by a quarter within 15 frames a few per
            cent at a time, keeping the area and a continuity of 0.65 to 0.75, where the occluders
            of the stress sets took 1 to 5 frames and left 0.03 to 0.57. None (`confident-strict`):
            every such drop makes the object absent. Measured (featmatch, davis2016-train): plain
            J&F 0.637 to 0.751; behind a 40-frame occluder J&F 0.837 to 0.813, the false-positive
            area while hidden 0.000 to 0.096 (one of 15: bus, where the occluder taken for the bus
            grows its mask gradually and keeps looking like its last frames).
        drift_continuity: the continuity a drift needs (see `max_shrink`).
        scan: frames scanned back for admitted memories; None scans without limit (the memories
            kept are still at most `num_maskmem - 1` frames).
    """

    name: ClassVar[str] = "confident"
    min_object_score: float = 0.0
    min_iou: float = 0.5
    min_confidence: float = 0.3
    min_relative: float = 0.75
    min_continuity: float | None = None
    min_rise: float = 0.04
    max_shrink: float | None = 0.5
    drift_continuity: float = 0.6
    scan: int | None = None

    def __post_init__(self) -> None:
        if self.scan is not None and self.scan < 1:
            raise ConfigError(f"ConfidentPolicy scan {self.scan} is not supported; use None (no limit) or 1 or more.")
        if self.max_shrink is not None and not 0 < self.max_shrink <= 1:
            raise ConfigError(f"ConfidentPolicy max_shrink {self.max_shrink} is not supported; use None (no drift rule) "
                              "or a fraction of the recent area in (0, 1].")

    def admits(self, signals: FrameSignals) -> bool:
        if signals.object_score <= self.min_object_score:
            return False
        if signals.iou is not None and signals.iou < self.min_iou:
            return False
        return self.present(signals)

    def present(self, signals: FrameSignals) -> bool:
        """An object whose pixels look too little like the prompted object is judged absent (an
        occluder or background taken for it): a matching confidence below `min_confidence`, or below
        `min_relative` times the confidence of its recent memories (a sudden drop; a slow change of
        appearance keeps the ratio near 1, as the memories follow it), unless the drop is a drift
        (`max_shrink`). An object judged absent is present again once its confidence rises
        `min_rise` above its absent floor."""
        c = signals.confidence
        if c is None:
            return True
        if c < self.min_confidence:
            return False
        if signals.reference is None or c >= self.min_relative * signals.reference:
            return True
        if self._drifted(signals):
            return True
        if None not in (signals.continuity, self.min_continuity) and signals.continuity >= self.min_continuity:
            return True
        return signals.absent_floor is not None and c >= signals.absent_floor + self.min_rise

    def _drifted(self, signals: FrameSignals) -> bool:
        """Whether a present object's drop below `min_relative` times its reference is a drift of
        its look rather than something else taken for it (`max_shrink`): the drop was not sudden
        (not below `min_relative` times its last few memories), it still looks like its recent
        memories (continuity at least `drift_continuity`) and its area kept more than `max_shrink`
        times its recent area."""
        if self.max_shrink is None or signals.area_reference is None or signals.recent_reference is None:
            return False
        if signals.confidence < self.min_relative * signals.recent_reference:
            return False
        if signals.continuity is None or signals.continuity < self.drift_continuity:
            return False
        return signals.area is not None and signals.area > self.max_shrink * signals.area_reference

    def select(
        self,
        window: MemoryWindow,
        frame_idx: int,
        reverse: bool,
        prompted: Sequence[int],
        memories: Mapping[int, FrameSignals | None],
    ) -> MemoryPlan:
        selected, _ = select_prompted_frames(frame_idx, prompted, window.max_prompted_frames)
        spatial = [(t, 0, True) for t in selected]
        for i, t in enumerate(self.recent_memories(frame_idx, reverse, memories, window.num_maskmem - 1)):
            spatial.append((t, window.num_maskmem - 1 - i, False))
        pointers, max_distance = plan_pointers(window, frame_idx, reverse, selected, memories)
        return MemoryPlan(tuple(spatial), tuple(pointers), max_distance)

    def recent_memories(self, frame_idx: int, reverse: bool, memories: Collection[int], count: int) -> list[int]:
        """The `count` admitted frames nearest before `frame_idx` in the tracking direction, nearest
        first, within `scan` frames."""
        sign = 1 if reverse else -1
        if self.scan is not None:
            near = [frame_idx + sign * d for d in range(1, self.scan + 1)]
            return [t for t in near if t in memories][:count]
        return nearest_before(frame_idx, reverse, memories, count, lambda t: True)


@dataclass(frozen=True)
class StrictConfidentPolicy(ConfidentPolicy):
    """`ConfidentPolicy` without the drift rule (`max_shrink=None`): every drop of a quarter against
    the object's recent memories makes it absent. No ghost behind any of the 40-frame occluders of
    davis2016-train's stress sets, but fast-changing objects are lost on plain video (J&F 0.637)."""

    name: ClassVar[str] = "confident-strict"
    max_shrink: float | None = None

