"""maskvos: video object segmentation from prompts, built on the SAM2 architecture."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from maskvos.errors import MaskvosError

__version__ = "0.1.0"
__all__ = ["InferenceConfig", "MaskvosError", "VideoSession", "__version__", "load_model"]

if TYPE_CHECKING:  # pragma: no cover
    from maskvos.checkpoints import load_model
    from maskvos.inference.config import InferenceConfig
    from maskvos.inference.session import VideoSession


def __getattr__(name: str) -> Any:
    # Importing the package stays cheap: torch-heavy modules load on first use.
    if name == "load_model":
        from maskvos.checkpoints import load_model

        return load_model
    if name == "VideoSession":
        from maskvos.inference.session import VideoSession

        return VideoSession
    if name == "InferenceConfig":
        from maskvos.inference.config import InferenceConfig

        return InferenceConfig
    raise AttributeError(f"module 'maskvos' has no attribute {name!r}")
