"""Checks shared by the memory-policy tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from maskvos.inference.policies import FrameSignals, MemoryPolicy, MemoryWindow


def assert_window_property(
    policy: MemoryPolicy,
    window: MemoryWindow,
    memories: Mapping[int, FrameSignals | None] | Iterable[int],
    starts: Iterable[int],
    frames: range,
    prompted: Sequence[int] = (),
    span: int = 40,
) -> None:
    """A frame up to `span` frames into a pass (either direction) from each start reaches, of the
    frames before the start, only frames the start reaches (what `MemoryPolicy` requires)."""
    for k in starts:
        for reverse in (False, True):
            at_start = policy.reach(window, k, reverse, prompted, memories)
            step = -1 if reverse else 1
            for f in range(k + step, k + span * step, step):
                if f not in frames:
                    break
                reached = policy.reach(window, f, reverse, prompted, memories)
                before = {t for t in reached if (t > k if reverse else t < k)}
                assert before <= at_start, (k, f, reverse, before - at_start)
