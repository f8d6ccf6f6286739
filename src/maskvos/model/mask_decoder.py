"""Mask decoder: output tokens attend to the image; hypernetworks turn them into mask logits.

Configured as SAM2's video predictor builds it: 3 multimask outputs plus a single-mask output, an
IoU head with a sigmoid, an object-score MLP, high-resolution skip features, object pointers from
the multimask tokens, and a fall-back from an unstable single mask to the best multimask output.

Output tokens, in order: object score, IoU, single mask, then the multimask tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from maskvos.model.common import MLP, LayerNorm2d
from maskvos.model.two_way_transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """SAM2's mask decoder; parameter names follow the `sam_mask_decoder.*` checkpoint keys.

    `conv_s0` and `conv_s1` project the stride-4 and stride-8 image features to C/8 and C/4
    channels; the caller applies them once per image and passes the results as `high_res_features`.
    """

    def __init__(
        self,
        transformer_dim: int = 256,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        stability_delta: float = 0.05,
        stability_thresh: float = 0.98,
        use_high_res_features: bool = True,
    ) -> None:
        super().__init__()
        c = transformer_dim
        self.transformer = TwoWayTransformer(depth=2, embedding_dim=c, num_heads=8, mlp_dim=2048)
        self.num_mask_tokens = num_multimask_outputs + 1
        # registration order follows the checkpoint's key order
        self.iou_token = nn.Embedding(1, c)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, c)
        self.obj_score_token = nn.Embedding(1, c)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(c, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.ConvTranspose2d(c // 4, c // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(c, c // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(c, c // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(c, c, c // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(
            c, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth, sigmoid_output=True
        )
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
        """Predict masks for a batch of objects.

        Arguments:
            image_embeddings: (B, C, h, w), one row per object.
            image_pe: (1, C, h, w) position encoding of the feature grid.
            sparse_prompt_embeddings: (B, N, C) point and box tokens.
            dense_prompt_embeddings: (B, C, h, w) mask-prompt embedding.
            multimask_output: return the 3 multimask outputs instead of one mask.
            high_res_features: [(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)], already projected by conv_s0 / conv_s1.
        Returns:
            masks: (B, M, 4h, 4w) logits; M = 3 with `multimask_output`, else 1.
            iou_pred: (B, M) predicted IoU (0..1).
            sam_tokens: (B, M, C) output tokens for the object pointer: the multimask tokens with
                `multimask_output`, else the single-mask token.
            object_score_logits: (B, 1), > 0 where the object is present.

        Without `multimask_output` (in eval mode), a row whose single mask is unstable (see
        `stability_scores`) gets the multimask output with the highest predicted IoU instead;
        its token is still the single-mask token.
        """
        masks, iou_pred, mask_tokens, object_score_logits = self._predict_all(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, high_res_features
        )
        if multimask_output:
            return masks[:, 1:], iou_pred[:, 1:], mask_tokens[:, 1:], object_score_logits
        if self.training:
            masks, iou_pred = masks[:, 0:1], iou_pred[:, 0:1]
        else:
            masks, iou_pred = self._single_or_best_multimask(masks, iou_pred)
        return masks, iou_pred, mask_tokens[:, 0:1], object_score_logits

    def _predict_all(
        self,
        image: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        high_res: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All mask outputs: masks (B, 4, 4h, 4w), IoUs (B, 4), mask tokens (B, 4, C), object score (B, 1)."""
        b, c, h, w = image.shape
        out_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight])
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        hs, image_tokens = self.transformer(image + dense, image_pe, tokens)
        mask_tokens = hs[:, 2 : 2 + self.num_mask_tokens]

        # (B, hw, C) token-first is (B, C, h, w) in channels-last memory: a view, no copy
        upscaled = self._upscale(image_tokens.transpose(1, 2).view(b, c, h, w), high_res)
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        _, c_up, h_up, w_up = upscaled.shape
        masks = (hyper @ upscaled.view(b, c_up, h_up * w_up)).view(b, -1, h_up, w_up)
        iou_pred = self.iou_prediction_head(hs[:, 1])
        object_score_logits = self.pred_obj_score_head(hs[:, 0])
        return masks, iou_pred, mask_tokens, object_score_logits

    def _upscale(self, image: torch.Tensor, high_res: list[torch.Tensor]) -> torch.Tensor:
        """(B, C, h, w) -> (B, C/8, 4h, 4w), adding the high-res features after each transposed conv.

        Without autograd the residual adds and the last GELU run in place (same values, fewer
        large allocations).
        """
        up1, norm1, act1, up2, act2 = self.output_upscaling
        if not high_res:  # no high-resolution features (EfficientTAM): plain upsampling
            return act2(up2(act1(norm1(up1(image)))))
        feat_s0, feat_s1 = high_res
        if torch.is_grad_enabled():
            x = act1(norm1(up1(image) + feat_s1))
            return act2(up2(x) + feat_s0)
        x = up1(image)
        x += feat_s1
        x = act1(norm1(x))
        x = up2(x)
        x += feat_s0
        return torch.ops.aten.gelu_(x) if isinstance(act2, nn.GELU) and act2.approximate == "none" else act2(x)

    def stability_scores(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """IoU of the masks thresholded at +delta and at -delta; (B, M, H, W) -> (B, M).

        1.0 where no logit exceeds -delta.
        """
        flat = mask_logits.flatten(-2)
        inner_area = (flat > self.stability_delta).sum(-1).float()
        outer_area = (flat > -self.stability_delta).sum(-1).float()
        return torch.where(outer_area > 0, inner_area / outer_area, 1.0)

    def _single_or_best_multimask(
        self, masks: torch.Tensor, iou_pred: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: the single-mask output (index 0) where it is stable, else the multimask output
        (indices 1..) with the highest predicted IoU. (B, 4, H, W), (B, 4) -> (B, 1, H, W), (B, 1)."""
        rows = torch.arange(masks.shape[0], device=masks.device)
        best = torch.argmax(iou_pred[:, 1:], dim=-1) + 1
        is_stable = self.stability_scores(masks[:, 0:1]) >= self.stability_thresh  # (B, 1)
        chosen_masks = torch.where(is_stable[..., None, None], masks[:, 0:1], masks[rows, best].unsqueeze(1))
        chosen_iou = torch.where(is_stable, iou_pred[:, 0:1], iou_pred[rows, best].unsqueeze(1))
        return chosen_masks, chosen_iou
