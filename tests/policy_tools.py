"""Checks shared by the memory-policy tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch

from maskvos.inference.memory_bank import MemoryBank, MemoryEntry
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


def prompted_banks(window: MemoryWindow, policy: MemoryPolicy) -> tuple[MemoryBank, MemoryBank]:
    """Two banks with object 1 prompted on frame 0: one that evicts, one that keeps every memory."""
    banks = MemoryBank(window, policy), MemoryBank(window, policy, keep_all=True)
    for bank in banks:
        bank.stage_prompt(1, 0, MemoryEntry(torch.zeros(1, 1, 4, 4), torch.zeros(1, 8), torch.ones(1, 1)))
        bank.promote(1, 0, torch.zeros(1, 4, 1, 1))
    return banks


def admit_output(bank: MemoryBank, frame_idx: int, signals: FrameSignals) -> None:
    """Object 1's output on `frame_idx`, tracked forward, with these signals (tensors are dummies)."""
    entry = MemoryEntry(torch.zeros(1, 1, 4, 4), torch.zeros(1, 8), torch.ones(1, 1), signals=signals)
    bank.admit(frame_idx, False, [(1, entry)], lambda rows: [torch.zeros(1, 4, 1, 1) for _ in rows])
