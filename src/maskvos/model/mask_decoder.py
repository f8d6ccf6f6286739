"""Mask decoder: output tokens attend to the image; hypernetworks turn them into mask logits.

Configured as SAM2's video predictor uses it: 3 multimask outputs plus a single-mask output, an IoU
head with sigmoid, an object-score MLP, high-resolution skip features, object pointers from the
multimask tokens, and a fall-back from an unstable single mask to the best multimask output.
"""

from __future__ import annotations

import torch
from torch import nn

from maskvos.model.common import MLP, LayerNorm2d
from maskvos.model.two_way_transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """SAM2's mask decoder (key names as in the SAM2 checkpoints)."""

    def __init__(
        self,
        transformer_dim: int = 256,
        num_multimask_outputs: int = 3,
        stability_delta: float = 0.05,
        stability_thresh: float = 0.98,
    ) -> None:
        super().__init__()
        c = transformer_dim
        self.transformer = TwoWayTransformer(depth=2, embedding_dim=c, num_heads=8, mlp_dim=2048)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.obj_score_token = nn.Embedding(1, c)
        self.iou_token = nn.Embedding(1, c)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, c)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(c, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.ConvTranspose2d(c // 4, c // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.conv_s0 = nn.Conv2d(c, c // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(c, c // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(c, c, c // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(c, 256, self.num_mask_tokens, 3, sigmoid_output=True)
        self.pred_obj_score_head = MLP(c, c, 1, 3)
        self.stability_delta = stability_delta
        self.stability_thresh = stability_thresh

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        high_res_features: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict masks.

        Arguments:
            image_embeddings: (B, C, h, w), one row per object.
            image_pe: (1, C, h, w).
            sparse_prompt_embeddings: (B, N, C); dense_prompt_embeddings: (B, C, h, w).
            high_res_features: [(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)] already projected by conv_s0/conv_s1.
        Returns:
            masks (B, M, 4h, 4w) logits, iou_pred (B, M), sam_tokens (B, M', C) for the object pointer,
            object_score_logits (B, 1); M = M' = 3 with multimask output, else 1.
        """
        masks, iou_pred, mask_tokens, obj_scores = self._predict(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, high_res_features
        )
        if multimask_output:
            return masks[:, 1:], iou_pred[:, 1:], mask_tokens[:, 1:], obj_scores
        masks, iou_pred = self._single_or_best_multimask(masks, iou_pred)
        return masks, iou_pred, mask_tokens[:, 0:1], obj_scores

    def _predict(
        self,
        image: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        high_res: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All 4 masks and IoUs, the mask tokens (B, 4, C) and the object score (B, 1)."""
        b = sparse.shape[0]
        out_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight])
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        src = image + dense
        _, c, h, w = src.shape
        hs, src_tokens = self.transformer(src, image_pe.expand(b, -1, -1, -1), tokens)
        mask_tokens = hs[:, 2 : 2 + self.num_mask_tokens]
        src = src_tokens.transpose(1, 2).reshape(b, c, h, w)
        up1, norm1, act1, up2, act2 = self.output_upscaling
        feat_s0, feat_s1 = high_res
        upscaled = act1(norm1(up1(src) + feat_s1))
        upscaled = act2(up2(upscaled) + feat_s0)
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        _, cu, hu, wu = upscaled.shape
        masks = (hyper @ upscaled.reshape(b, cu, hu * wu)).reshape(b, -1, hu, wu)
        iou_pred = self.iou_prediction_head(hs[:, 1])
        obj_scores = self.pred_obj_score_head(hs[:, 0])
        return masks, iou_pred, mask_tokens, obj_scores

    def stability_scores(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """IoU between the masks thresholded at +delta and -delta; (B, M, H, W) -> (B, M)."""
        flat = mask_logits.flatten(-2)
        inner = (flat > self.stability_delta).sum(-1).float()
        outer = (flat > -self.stability_delta).sum(-1).float()
        return torch.where(outer > 0, inner / outer, 1.0)

    def _single_or_best_multimask(
        self, masks: torch.Tensor, iou_pred: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The single-mask output where it is stable, else the multimask output with the best IoU."""
        rows = torch.arange(masks.shape[0], device=masks.device)
        best = torch.argmax(iou_pred[:, 1:], dim=-1) + 1
        is_stable = self.stability_scores(masks[:, 0:1]) >= self.stability_thresh  # (B, 1)
        chosen_masks = torch.where(is_stable[..., None, None], masks[:, 0:1], masks[rows, best].unsqueeze(1))
        chosen_iou = torch.where(is_stable, iou_pred[:, 0:1], iou_pred[rows, best].unsqueeze(1))
        return chosen_masks, chosen_iou
