"""Memory policies: what a tracked frame leaves in memory and what each frame attends to.

`get_policy(name)` turns a name of `POLICY_NAMES` into a policy; any `MemoryPolicy` object can be
given to `InferenceConfig(memory_policy=...)` directly. How to write one: see `MemoryPolicy`.
"""

from __future__ import annotations

from maskvos.errors import ConfigError
from maskvos.inference.policies.base import (
    PROMPT_SCORE,
    FrameSignals,
    MaskCandidates,
    MaskChoice,
    MemoryPlan,
    MemoryPolicy,
    MemoryWindow,
)
from maskvos.inference.policies.confident import ConfidentPolicy, StrictConfidentPolicy
from maskvos.inference.policies.dam4sam import DAM4SAMPolicy
from maskvos.inference.policies.sam2 import SAM2Policy
from maskvos.inference.policies.sam2long import SAM2LongPolicy
from maskvos.inference.policies.samurai import SamuraiPolicy

_POLICIES: dict[str, type[MemoryPolicy]] = {
    p.name: p for p in (SAM2Policy, ConfidentPolicy, StrictConfidentPolicy, SamuraiPolicy, SAM2LongPolicy, DAM4SAMPolicy)
}
#: The names `get_policy` knows.
POLICY_NAMES: tuple[str, ...] = tuple(_POLICIES)

__all__ = [
    "POLICY_NAMES",
    "PROMPT_SCORE",
    "ConfidentPolicy",
    "DAM4SAMPolicy",
    "FrameSignals",
    "MaskCandidates",
    "MaskChoice",
    "MemoryPlan",
    "MemoryPolicy",
    "MemoryWindow",
    "SAM2LongPolicy",
    "SAM2Policy",
    "SamuraiPolicy",
    "StrictConfidentPolicy",
    "get_policy",
]


def get_policy(name: str) -> MemoryPolicy:
    """The policy called `name`, with its default settings."""
    try:
        return _POLICIES[name]()
    except KeyError:
        raise ConfigError(f"Memory policy '{name}' is unknown; use one of {', '.join(POLICY_NAMES)}.") from None
