"""The small random-weight SAM2 model the behaviour tests run (parity tests build their own pairs)."""

from __future__ import annotations

import dataclasses

import torch

from maskvos.model.config import get_config
from maskvos.model.sam2 import SAM2Model


def tiny_sam2(image_size: int = 128) -> SAM2Model:
    """SAM2.1-tiny with seed-0 random weights at a small input size, in eval mode, with the
    object-score head biased so objects are judged present and masks are not all empty."""
    torch.manual_seed(0)
    model = SAM2Model(dataclasses.replace(get_config("sam2.1-tiny"), image_size=image_size)).eval()
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[2].bias.fill_(5.0)
    return model
