"""Post-processing between a session and the writers: an ordered chain of `PostProcessor`s.

Each processor sees the results of a pass in order and hands on results in the same order; it may
hold a bounded number of frames back (`max_delay`) to look ahead, and gives them up on `flush()`,
which the application layer calls at the end of every pass (frames of different passes are not
neighbours). A processor never alters an object's mask on a frame where that object was prompted
(`FrameResult.is_prompt`). A processor that holds frames or state saves it in `state_dict()`, so an
interrupted run resumes exactly.

`OverlapResolver` is the chain's last step by default: it decides the label map (who owns a pixel
claimed by two objects) by the run's overlap rule.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterable

from maskvos.errors import ConfigError
from maskvos.inference.api import FrameResult

OVERLAP_RULES = ("score", "order")


class PostProcessor(ABC):
    """One step of the chain. Subclasses implement `process`; those that hold frames or learn state
    across frames also implement `flush`, `state_dict` and `load_state_dict`.

    Attributes:
        max_delay: the most frames this step holds back at any time.
    """

    max_delay: int = 0

    @abstractmethod
    def process(self, result: FrameResult) -> list[FrameResult]:
        """Take the next result of the pass; return the results now ready, in order."""

    def flush(self) -> list[FrameResult]:
        """The end of a pass: return every result still held, in order, and forget the pass."""
        return []

    def state_dict(self) -> dict:
        """What this step holds (results held back, running statistics), as plain containers."""
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027 - stateless steps restore nothing
        """Restore a `state_dict`."""


@dataclasses.dataclass(frozen=True)
class OverlapResolver(PostProcessor):
    """Decides each frame's label map: a pixel claimed by two objects goes to the higher mask logit
    ("score") or to the object listed last ("order"). Per-object masks are left as the engine gave
    them (SAM2's objects may overlap); the label map, and so the palette PNGs and the overlay, have
    one owner per pixel."""

    rule: str = "score"

    def __post_init__(self) -> None:
        if self.rule not in OVERLAP_RULES:
            raise ConfigError(f"Overlap rule '{self.rule}' is unknown; use 'score' or 'order'.")

    def process(self, result: FrameResult) -> list[FrameResult]:
        if not result.obj_ids:
            return [result]
        return [dataclasses.replace(result, overlap=self.rule, labels=result.label_map(self.rule))]


class PostChain:
    """Processors applied in order; identity when empty."""

    def __init__(self, processors: Iterable[PostProcessor] = ()) -> None:
        self.processors: list[PostProcessor] = list(processors)

    def __repr__(self) -> str:
        return f"PostChain({self.processors!r})"

    def process(self, result: FrameResult) -> list[FrameResult]:
        """Feed one result; the results that come out of the last step, in order."""
        current = [result]
        for processor in self.processors:
            current = [ready for r in current for ready in processor.process(r)]
        return current

    def flush(self) -> list[FrameResult]:
        """End of a pass: everything still held, through the rest of the chain, in order."""
        out: list[FrameResult] = []
        for processor in self.processors:
            out = [ready for r in out for ready in processor.process(r)] + processor.flush()
        return out

    def state_dict(self) -> dict:
        return {"processors": [p.state_dict() for p in self.processors]}

    def load_state_dict(self, state: dict) -> None:
        saved = state["processors"]
        if len(saved) != len(self.processors):
            raise ValueError("the saved post-processing chain has another length")
        for processor, s in zip(self.processors, saved):
            processor.load_state_dict(s)

