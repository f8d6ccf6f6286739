"""SAM2's training losses for one frame: focal + dice on the mask (the best of the multimask
candidates), L1 on every candidate's predicted IoU, cross-entropy on the object score.

Weights as SAM2.1's training configuration: mask (focal) 20, dice 1, IoU 1, object score 1; focal
alpha 0.25, gamma 2. Mask and IoU losses count only objects present in the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from maskvos.model.sam2 import TrackOutput

WEIGHT_MASK, WEIGHT_DICE, WEIGHT_IOU, WEIGHT_SCORE = 20.0, 1.0, 1.0, 1.0
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0


@dataclass
class FrameLoss:
    """The weighted loss of one frame (a scalar with grad) and its parts (plain floats, for logs)."""

    total: torch.Tensor
    focal: float
    dice: float
    iou: float
    score: float


def focal_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(..., N) logits and 0/1 targets -> (...) sigmoid focal loss averaged over the N pixels."""
    probs = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probs * targets + (1 - probs) * (1 - targets)
    loss = ce * (1 - p_t) ** FOCAL_GAMMA
    alpha_t = FOCAL_ALPHA * targets + (1 - FOCAL_ALPHA) * (1 - targets)
    return (alpha_t * loss).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(..., N) logits and 0/1 targets -> (...) 1 - soft Dice."""
    probs = torch.sigmoid(logits)
    inter = (probs * targets).sum(-1)
    return 1 - (2 * inter + 1) / (probs.sum(-1) + targets.sum(-1) + 1)


def frame_loss(out: TrackOutput, targets: torch.Tensor) -> FrameLoss:
    """The loss of one tracked frame.

    Arguments:
        out: the model's output for B objects (M candidates).
        targets: (B, 1, S, S) 0/1 ground truth at model input size.
    """
    size = targets.shape[-2:]
    cands = out.multimask_logits
    if cands.shape[-2:] != size:
        cands = F.interpolate(cands, size=size, mode="bilinear", align_corners=False)
    b, m = cands.shape[:2]
    flat = cands.reshape(b, m, -1)
    target = targets.reshape(b, 1, -1).expand(b, m, -1)
    focal, dice = focal_loss(flat, target), dice_loss(flat, target)  # (B, M)
    combined = WEIGHT_MASK * focal + WEIGHT_DICE * dice
    best = combined.argmin(dim=1)
    rows = torch.arange(b)
    with torch.no_grad():
        pred = flat > 0
        inter = (pred & (target > 0)).sum(-1).float()
        union = (pred | (target > 0)).sum(-1).float()
        actual_iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    iou = (out.iou_scores.float() - actual_iou).abs().mean(dim=1)
    present = (targets.reshape(b, -1).sum(-1) > 0).float()
    score = F.binary_cross_entropy_with_logits(out.object_score_logits[:, 0].float(), present, reduction="none")
    per_object = present * (combined[rows, best] + WEIGHT_IOU * iou) + WEIGHT_SCORE * score
    n_present = present.sum().clamp(min=1)
    total = per_object.mean()
    with torch.no_grad():
        return FrameLoss(
            total=total,
            focal=float((present * focal[rows, best]).sum() / n_present),
            dice=float((present * dice[rows, best]).sum() / n_present),
            iou=float((present * iou).sum() / n_present),
            score=float(score.mean()),
        )
