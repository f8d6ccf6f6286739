"""Runtime policy of a video session (what does not change weights): `InferenceConfig`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maskvos.errors import ConfigError

RESOLUTIONS = (512, 768, 1024)


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
            compute-bound and one object's working set stays in cache) and all objects on a GPU.
        feature_cache: image features of this many recent frames stay cached.
        prefetch: frames decoded ahead on a background thread.
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

    def __post_init__(self) -> None:
        if self.resolution is not None and (self.resolution < 64 or self.resolution % 32):
            raise ConfigError(f"Resolution {self.resolution} is not supported; use a multiple of 32 such as 512, 768 or 1024.")
        if self.memory_stride < 1:
            raise ConfigError(f"Memory stride {self.memory_stride} is not supported; use 1 or more.")
        if self.max_pointers < 1:
            raise ConfigError(f"max_pointers {self.max_pointers} is not supported; use 1 or more.")
        if self.overlap not in ("score", "order"):
            raise ConfigError(f"Overlap rule '{self.overlap}' is unknown; use 'score' or 'order'.")
        if self.memory_batch is not None and self.memory_batch < 1:
            raise ConfigError(f"memory_batch {self.memory_batch} is not supported; use None or 1 or more.")
        if self.feature_cache < 1:
            raise ConfigError("feature_cache must be at least 1.")
