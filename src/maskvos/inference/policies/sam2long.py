"""`SAM2LongPolicy`: SAM2Long's constrained memory tree (Ding et al., "SAM2Long: Enhancing SAM 2 for
Long Video Segmentation with a Training-Free Memory Tree", 2024), per object, streaming. Written from
the paper and the facts of the authors' code (CC BY-NC: nothing is taken from it but its rules and
numbers).

Each object keeps `pathways` (P) hypotheses, each with its own memory lineage. On every frame each
pathway attends to its own memories and the decoder gives 3 candidates; a candidate scores its
pathway's cumulative score plus log(predicted IoU + 1e-5), and the P best of the 3P survive, each
extending the lineage of its parent (`inference.pathways`). When every pathway is uncertain (|object
score| at most `uncertainty`) the survivors must differ in predicted IoU (rounded to 2 decimals,
signed by presence), so that different hypotheses live on. The first frame after a prompt keeps the
best candidate only.

Memory, per lineage: the nearest recent slot takes the frame just before, the others the most
recent frames before it that were admitted (predicted IoU above `min_iou`, object score above
`min_object_score`); object pointers come from the same frames, nearest first, their temporal
positions by rank. In memory attention the keys of the memory frames are scaled by rank of their
object scores from `key_scale[0]` (lowest) to `key_scale[1]` (highest), a prompt counting 10, and
likewise the pointers' keys.

Streaming: SAM2Long gives masks only at the end of the video. Here a frame is output as soon as all
surviving pathways share it (every lineage holds the same candidate there, so the whole past up to
it is decided); a frame still undecided `lag` frames later is decided by the best pathway, and
pathways that disagree there are replaced by copies of it. `lag` bounds the delay and the extra
memory; the session counts the forced decisions (`VideoSession.pathway_stats`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from maskvos.errors import ConfigError
from maskvos.inference.policies.base import FrameSignals, MemoryPlan, MemoryPolicy, MemoryWindow
from maskvos.inference.policies.sam2 import nearest_before, plan_pointers, select_prompted_frames


@dataclass(frozen=True)
class SAM2LongPolicy(MemoryPolicy):
    """SAM2Long's memory tree (defaults: the authors' documented settings).

    Attributes:
        pathways: P, the hypotheses kept per object.
        min_iou: predicted IoU a frame must exceed to be a memory of its lineage.
        min_object_score: object score it must exceed.
        uncertainty: every pathway with |object score| at most this is uncertain.
        key_scale: (lowest, highest) scale of memory keys, by rank of object score.
        lag: frames after which an undecided frame is decided by the best pathway.
    """

    name: ClassVar[str] = "sam2long"
    chooses_masks: ClassVar[bool] = True
    pathways: int = 3
    min_iou: float = 0.1
    min_object_score: float = 0.0
    uncertainty: float = 2.0
    key_scale: tuple[float, float] = (0.95, 1.05)
    lag: int = 16

    def __post_init__(self) -> None:
        if self.pathways < 1:
            raise ConfigError(f"SAM2Long pathways {self.pathways} is not supported; use 1 or more.")
        if self.lag < 1:
            raise ConfigError(f"SAM2Long pathway lag {self.lag} is not supported; use 1 or more frames.")

    @property
    def num_pathways(self) -> int:
        return self.pathways

    def is_admitted(self, signals: FrameSignals | None) -> bool:
        """Whether a tracked frame may fill a recent slot (beyond the frame just before)."""
        if signals is None or signals.iou is None:
            return False
        return signals.iou > self.min_iou and signals.object_score > self.min_object_score

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
        # Nearest first: the frame before (its place is kept even where it holds no memory, so that a
        # later frame never reaches further back), then the admitted ones before it.
        chain: list[tuple[int, bool | None]] = []
        if previous in memories:
            chain.append((previous, False))
        elif previous in prompted:
            chain.append((previous, True))
        else:
            chain.append((previous, None))
        limit = max(window.num_maskmem - 1, window.max_pointers - 1)
        admitted = nearest_before(previous, reverse, memories, limit - 1, lambda t: self.is_admitted(memories[t]))
        chain += [(t, False) for t in admitted]
        spatial = [(t, 0, True) for t in selected]
        for rank, (t, is_prompted) in enumerate(chain[: window.num_maskmem - 1]):
            if is_prompted is None or (is_prompted and t not in unselected):
                continue  # nothing there, or a prompt attended to as one
            spatial.append((t, window.num_maskmem - 1 - rank, is_prompted))
        prompt_ptrs, max_distance = plan_pointers(window, frame_idx, reverse, selected, {})
        pointers = list(prompt_ptrs)
        for rank, (t, is_prompted) in enumerate(chain[: window.max_pointers - 1], start=1):
            if is_prompted is None or (is_prompted and t in selected):
                continue
            pointers.append((t, rank, is_prompted))
        return MemoryPlan(tuple(spatial), tuple(pointers), max_distance)

    def memory_key_scales(self, frame_scores: Sequence[float], pointer_scores: Sequence[float]) -> tuple[list[float], list[float]] | None:
        """Scales of the memory frames' and the pointers' keys: each group ranked by object score
        (ties in order), the lowest `key_scale[0]`, the highest `key_scale[1]`, evenly between; none
        with a single memory frame."""
        if len(frame_scores) <= 1:
            return None
        return _ranked(frame_scores, self.key_scale), _ranked(pointer_scores, self.key_scale)


def _ranked(scores: Sequence[float], bounds: tuple[float, float]) -> list[float]:
    n = len(scores)
    if n == 0:
        return []
    levels = np.linspace(bounds[0], bounds[1], n, dtype=np.float32)
    order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")
    out = np.empty(n, dtype=np.float32)
    out[order] = levels
    return [float(v) for v in out]
