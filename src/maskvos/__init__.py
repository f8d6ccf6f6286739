"""maskvos: video object segmentation from prompts, built on the SAM2 architecture."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from maskvos.errors import MaskvosError

__version__ = "0.1.0"
__all__ = ["MaskvosError", "load_model", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from maskvos.checkpoints import load_model


def __getattr__(name: str) -> Any:
    # Importing the package stays cheap: torch-heavy modules load on first use.
    if name == "load_model":
        from maskvos.checkpoints import load_model

        return load_model
    raise AttributeError(f"module 'maskvos' has no attribute {name!r}")
