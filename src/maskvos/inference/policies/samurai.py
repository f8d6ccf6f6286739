"""`SamuraiPolicy`: SAMURAI's motion-aware mask choice and memory (Yang et al., "SAMURAI: Adapting
Segment Anything Model for Zero-Shot Visual Tracking with Motion-Aware Memory", 2024), per object.

Mask choice. Each object's box is followed by a constant-velocity Kalman filter (`motion`). After a
prompt the filter starts from the first candidate chosen; until the track is *stable* (`stable_frames`
consecutive frames whose chosen mask has predicted IoU above `stable_iou`) the decoder's candidate
of highest predicted IoU is taken, as in SAM2, and fed to the filter. Once stable, the candidate
maximising `motion_weight * IoU(predicted box, candidate box) + (1 - motion_weight) * predicted IoU`
is taken; a chosen mask whose predicted IoU falls below `stable_iou` makes the track unstable again
(the filter restarts on the next frame).

Memory. Every tracked frame is encoded (its object pointer is used as in SAM2). The nearest
recent-frame slot takes the frame just before, confident or not; the other `num_maskmem - 2` take
the most recent frames before it whose output was confident: predicted IoU above `min_iou`, object
score above `min_object_score` and, where the filter was stable, motion score above `min_motion`.
(The authors' code keeps the last `num_maskmem - 1` of the confident frames with the frame before
appended when it is not among them: the same frames.) This keeps the window property, so eviction
and rebuilds stay exact.

What differs from the authors' code (SAMURAI's `sam2` package, which the parity tests run): there the
filter lives on the model and reads the first object of a batch only, and survives from one video to
the next; here each object has its own, carried from frame to frame with the object's outputs (so
objects tracked together equal one-object runs, a saved session resumes exactly and a rebuild
recomputes it), and it restarts at every prompt. Their scan of earlier frames also skips the frame
right after the prompt (its loop stops at frame 2 for a prompt on frame 0); `skip_after_prompt`
keeps that for parity. Reverse tracking mirrors the rule (theirs tracks forward only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from maskvos.errors import ConfigError
from maskvos.inference.policies import motion
from maskvos.inference.policies.base import (
    FrameSignals,
    MaskCandidates,
    MaskChoice,
    MemoryPlan,
    MemoryPolicy,
    MemoryWindow,
)
from maskvos.inference.policies.sam2 import nearest_before, plan_pointers, select_prompted_frames

#: `motion_weight` of SAMURAI's configurations: 0.15 for large models, 0.25 for the others.
MOTION_WEIGHT_LARGE = 0.15
MOTION_WEIGHT = 0.25


@dataclass(frozen=True)
class SamuraiPolicy(MemoryPolicy):
    """SAMURAI's motion-aware mask choice and memory selection (defaults: the authors' configurations).

    Attributes:
        motion_weight: weight of the motion IoU in the choice; None: 0.15 for large models, 0.25
            otherwise (resolved by `for_model`).
        stable_frames: consecutive confident frames after which the motion term is used.
        stable_iou: predicted IoU above which a frame counts towards stability.
        min_iou, min_object_score, min_motion: what a frame needs to be a recent memory.
        presence_logit: object-score logit above which the decoder counts the object present
            (SAMURAI's configurations lower SAM2's 0 to -1).
        skip_after_prompt: the frame right after a prompt (in the direction of tracking) is
            attended to only as the previous frame, as in the authors' code.
    """

    name: ClassVar[str] = "samurai"
    chooses_masks: ClassVar[bool] = True
    motion_weight: float | None = None
    stable_frames: int = 15
    stable_iou: float = 0.3
    min_iou: float = 0.5
    min_object_score: float = 0.0
    min_motion: float = 0.0
    presence_logit: float = -1.0
    skip_after_prompt: bool = True

    def __post_init__(self) -> None:
        if self.motion_weight is not None and not 0.0 <= self.motion_weight <= 1.0:
            raise ConfigError(f"SAMURAI motion_weight {self.motion_weight} is not supported; use a value in 0..1.")
        if self.stable_frames < 1:
            raise ConfigError(f"SAMURAI stable_frames {self.stable_frames} is not supported; use 1 or more.")

    def for_model(self, model_name: str) -> SamuraiPolicy:
        if self.motion_weight is not None:
            return self
        weight = MOTION_WEIGHT_LARGE if model_name.endswith("large") else MOTION_WEIGHT
        return dataclasses.replace(self, motion_weight=weight)

    def presence_threshold(self) -> float:
        return self.presence_logit

    # ------------------------------------------------------------------ mask choice
    def choose_mask(self, candidates: MaskCandidates, state: tuple[float, ...] | None) -> MaskChoice:
        """The candidate SAMURAI takes, and the filter after it.

        `state` is (stable count, then the filter's 72 floats), or None after a prompt."""
        ious = candidates.ious
        best_iou = int(np.argmax(np.asarray(ious, dtype=np.float32)))
        stable = 0 if state is None else int(state[0])
        if stable == 0:
            track = motion.initiate(_box(candidates.boxes[best_iou]))
            return MaskChoice(best_iou, _state(1, track))
        track = motion.predict(motion.BoxTrack.from_floats(state[1:]))
        if stable < self.stable_frames:
            if ious[best_iou] > self.stable_iou:
                return MaskChoice(best_iou, _state(stable + 1, motion.update(track, _box(candidates.boxes[best_iou]))))
            return MaskChoice(best_iou, _state(0, track))
        predicted = track.box()
        motion_ious = np.asarray([motion.box_iou(predicted, b) for b in candidates.boxes], dtype=np.float32)
        weight = MOTION_WEIGHT if self.motion_weight is None else self.motion_weight
        # float32 as the authors' code computes it, so that near ties fall the same way.
        scores = np.float32(weight) * motion_ious + np.float32(1 - weight) * np.asarray(ious, dtype=np.float32)
        chosen = int(np.argmax(scores))
        score = float(motion_ious[chosen])
        if ious[chosen] < self.stable_iou:
            return MaskChoice(chosen, _state(0, track), score)
        return MaskChoice(chosen, _state(stable, motion.update(track, _box(candidates.boxes[chosen]))), score)

    # ------------------------------------------------------------------ memory
    def is_confident(self, signals: FrameSignals | None) -> bool:
        """Whether a tracked frame may fill a recent slot (beyond the frame just before)."""
        if signals is None or signals.iou is None:
            return False
        if signals.iou <= self.min_iou or signals.object_score <= self.min_object_score:
            return False
        return signals.motion is None or signals.motion > self.min_motion

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
        step = 1 if reverse else -1
        previous = frame_idx + step
        # The nearest slot is the frame just before's, confident or not (a prompted frame left out by
        # `max_prompted_frames` fills it too, as in SAM2; another prompt leaves it empty); the other
        # slots take the most recent confident frames before that one, nearest first.
        nearest = window.num_maskmem - 1
        if previous in memories:
            spatial.append((previous, nearest, False))
        elif previous in unselected:
            spatial.append((previous, nearest, True))
        prompts = set(prompted)

        def usable(t: int) -> bool:
            return not (self.skip_after_prompt and t + step in prompts) and self.is_confident(memories[t])

        for i, t in enumerate(nearest_before(previous, reverse, memories, nearest - 1, usable)):
            spatial.append((t, nearest - 1 - i, False))
        pointers, max_distance = plan_pointers(window, frame_idx, reverse, selected, memories, unselected)
        return MemoryPlan(tuple(spatial), tuple(pointers), max_distance)


def _box(box: tuple[int, int, int, int] | None) -> tuple[float, float, float, float]:
    """An empty candidate's box is (0, 0, 0, 0), as the authors' code takes it."""
    return (0.0, 0.0, 0.0, 0.0) if box is None else tuple(float(v) for v in box)


def _state(stable: int, track: motion.BoxTrack) -> tuple[float, ...]:
    return (float(stable), *track.to_floats())
