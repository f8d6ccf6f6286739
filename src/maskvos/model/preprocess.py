"""SAM2's input preprocessing of one frame, equal to the reference video loader."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from maskvos.model.sam2 import PIXEL_MEAN, PIXEL_STD


def to_model_input(frame: np.ndarray, image_size: int) -> torch.Tensor:
    """An RGB uint8 frame (H, W, 3) as the model's input (3, S, S): bicubic resize, [0, 1], ImageNet norm."""
    resized = Image.fromarray(frame).resize((image_size, image_size), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(resized, dtype=np.float64) / 255.0).float().permute(2, 0, 1)
    mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(3, 1, 1)
    return (x - mean) / std
