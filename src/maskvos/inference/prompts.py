"""User prompts (masks, points, boxes) checked against the frame and converted for the model.

Coordinates are (x, y) pixels of the original frame; the model sees them scaled to its input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from maskvos.errors import MaskvosError

#: Point labels: 1 marks the object (positive click), 0 the background (negative click).
POSITIVE, NEGATIVE = 1, 0
#: Labels the prompt encoder uses for the two corners of a box.
BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 2, 3


class PromptError(MaskvosError):
    """A mask, point or box prompt that does not fit the video."""


def check_mask(mask: np.ndarray | torch.Tensor, height: int, width: int, what: str = "The mask") -> np.ndarray:
    """A prompt mask as bool (H, W); raises for a wrong size or an empty mask."""
    arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise PromptError(f"{what} has shape {tuple(np.shape(mask))}; pass one (H, W) mask per object.")
    if arr.shape != (height, width):
        raise PromptError(
            f"{what} is {arr.shape[1]}x{arr.shape[0]} but the video is {width}x{height}; "
            "give a mask of the frame's size."
        )
    arr = arr > 0
    if not arr.any():
        raise PromptError(f"{what} is empty (no pixel set); draw the object or prompt it with points or a box.")
    return arr


def mask_to_model_input(mask: np.ndarray, resolution: int, device: torch.device) -> torch.Tensor:
    """A bool (H, W) mask as the model's binary mask prompt (1, 1, S, S), resized as SAM2 does."""
    m = torch.from_numpy(mask).to(device=device, dtype=torch.float32)[None, None]
    size = (resolution, resolution)
    if m.shape[-2:] != size:
        m = F.interpolate(m, size=size, mode="bilinear", align_corners=False, antialias=True)
        m = (m >= 0.5).float()
    return m


def points_to_model_input(
    points: Sequence[Sequence[float]] | np.ndarray | None,
    labels: Sequence[int] | np.ndarray | None,
    box: Sequence[float] | np.ndarray | None,
    height: int,
    width: int,
    resolution: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clicks and/or a box as model input: coords (1, P, 2) at model resolution and labels (1, P) int32.

    A box comes first as two corner points, as SAM2 encodes it.
    """
    coords = np.zeros((0, 2), dtype=np.float32)
    lbls = np.zeros((0,), dtype=np.int32)
    if points is not None and len(points) > 0:
        coords = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        if labels is None:
            lbls = np.full(len(coords), POSITIVE, dtype=np.int32)
        else:
            lbls = np.asarray(labels, dtype=np.int32).reshape(-1)
        if len(lbls) != len(coords):
            raise PromptError(f"{len(coords)} points were given with {len(lbls)} labels; give one label per point.")
        bad = [int(v) for v in lbls if v not in (POSITIVE, NEGATIVE)]
        if bad:
            raise PromptError(f"Point label {bad[0]} is not valid; use 1 for the object and 0 for background.")
        _check_inside(coords, height, width, "Point")
    if box is not None:
        corners = np.asarray(box, dtype=np.float32).reshape(-1)
        if corners.shape != (4,):
            raise PromptError(f"A box needs four numbers x0,y0,x1,y1, got {len(corners)}.")
        if corners[2] <= corners[0] or corners[3] <= corners[1]:
            raise PromptError(f"Box {corners.tolist()} is empty; give x0,y0,x1,y1 with x1 > x0 and y1 > y0.")
        _check_inside(corners.reshape(2, 2), height, width, "Box corner")
        coords = np.concatenate([corners.reshape(2, 2), coords])
        lbls = np.concatenate([np.array([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], dtype=np.int32), lbls])
    if len(coords) == 0:
        raise PromptError("The prompt has no points and no box; give at least one point or a box.")
    # Scaled as the reference does: divide by the frame size, then multiply by the input size.
    coords_t = (torch.from_numpy(coords) / torch.tensor([width, height], dtype=torch.float32) * resolution).to(device)[None]
    return coords_t, torch.from_numpy(lbls).to(device)[None]


def _check_inside(coords: np.ndarray, height: int, width: int, what: str) -> None:
    for x, y in coords:
        if not (0 <= x <= width and 0 <= y <= height):
            raise PromptError(
                f"{what} ({x:g}, {y:g}) lies outside the {width}x{height} frame; give (x, y) pixel coordinates inside it."
            )
