"""Runtime policy of a video session (what does not change weights): `InferenceConfig`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maskvos.errors import ConfigError
from maskvos.inference.policies import MemoryPolicy, get_policy


@dataclass(frozen=True)
class InferenceConfig:
    """How a `VideoSession` runs the model. Variants via `dataclasses.replace`.

    Attributes:
        resolution: side of the square model input; None uses the checkpoint's native size (1024).
            Smaller inputs are faster and use less memory; any multiple of 32 works.
        memory_stride: temporal stride of the recent-frame memories (SAM2's default 1).
        max_pointers: most object pointers attended to (SAM2: 16).
        max_prompted_frames: most prompted frames attended to; -1 takes all (SAM2's default).
        memory_dtype: dtype of stored memories; bfloat16 as in the reference halves their size.
        keep_all_memories: never evict (the reference's behaviour; memory then grows with the video).
        overlap: how per-object masks become one label map: "score" (the highest logit wins) or
            "order" (the object prompted last wins).
        memory_batch: objects per memory-attention call; None picks 1 on CPU (faster: the attention is
            compute-bound and one object's working set stays in cache) and all objects on a GPU (the
            GPU default is to be chosen by measurement on a lent GPU: `benchmarks/session_speed.py
            --device cuda` times both).
        compute_dtype: float32 (the default: outputs equal the reference's float32 ones), or bfloat16:
            the image encoder, memory attention, decoder and memory encoder run under
            `torch.autocast(device, bfloat16)`, as the reference is run on a GPU. Masks, scores and
            pointers come back in float32; memories are stored in `memory_dtype` either way.
        compile: compile those per-frame steps with `torch.compile` (`dynamic=False`; memory attention
            gets a memory padded to a fixed layout, so nothing recompiles from frame to frame). The
            first frames are slow while it compiles; outputs equal the uncompiled ones within float
            rounding (padding is masked out).
        feature_cache: image features of this many recent frames stay cached.
        prefetch: frames decoded ahead on a background thread.
        memory_policy: what tracked frames are admitted to memory and what each frame attends to:
            a `MemoryPolicy` (a frozen dataclass) or the name of one (`policies.POLICY_NAMES`);
            a name is replaced by the policy object, so `repr(config)` shows its settings.
    """

    resolution: int | None = None
    memory_stride: int = 1
    max_pointers: int = 16
    max_prompted_frames: int = -1
    memory_dtype: torch.dtype = torch.bfloat16
    keep_all_memories: bool = False
    overlap: str = "score"
    memory_batch: int | None = None
    feature_cache: int = 4
    prefetch: int = 4
    memory_policy: MemoryPolicy | str = "sam2"
    compute_dtype: torch.dtype = torch.float32
    compile: bool = False

    def __post_init__(self) -> None:
        if self.resolution is not None and (self.resolution < 64 or self.resolution % 32):
            raise ConfigError(f"Resolution {self.resolution} is not supported; use a multiple of 32 such as 512, 768 or 1024.")
        if self.memory_stride < 1:
            raise ConfigError(f"Memory stride {self.memory_stride} is not supported; use 1 or more.")
        if self.max_prompted_frames != -1 and self.max_prompted_frames < 2:
            raise ConfigError(
                f"max_prompted_frames {self.max_prompted_frames} is not supported; use -1 (all) or 2 or more."
            )
        if self.max_pointers < 1:
            raise ConfigError(f"max_pointers {self.max_pointers} is not supported; use 1 or more.")
        if self.overlap not in ("score", "order"):
            raise ConfigError(f"Overlap rule '{self.overlap}' is unknown; use 'score' or 'order'.")
        if self.memory_batch is not None and self.memory_batch < 1:
            raise ConfigError(f"memory_batch {self.memory_batch} is not supported; use None or 1 or more.")
        if self.feature_cache < 1:
            raise ConfigError("feature_cache must be at least 1.")
        if self.compute_dtype not in (torch.float32, torch.bfloat16):
            raise ConfigError(f"Compute dtype {self.compute_dtype} is not supported; use torch.float32 or torch.bfloat16.")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"compile={self.compile!r} is not supported; use True or False.")
        object.__setattr__(self, "memory_policy", _resolve_policy(self.memory_policy))


def _resolve_policy(policy: MemoryPolicy | str) -> MemoryPolicy:
    if isinstance(policy, str):
        return get_policy(policy)
    if not isinstance(policy, MemoryPolicy):
        raise ConfigError(f"Memory policy {policy!r} is neither a policy name nor a MemoryPolicy; pass a name such as 'sam2'.")
    params = getattr(type(policy), "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise ConfigError(
            f"Memory policy {type(policy).__name__} is not a frozen dataclass; declare it with "
            "@dataclass(frozen=True) so a configuration prints as a stable run signature."
        )
    return policy
