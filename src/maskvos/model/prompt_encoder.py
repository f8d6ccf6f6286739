"""Prompt encoder: points and boxes become sparse tokens, a mask prompt becomes a dense map.

The model-input size is an argument of each call, so one module serves any input resolution.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from maskvos.model.common import LayerNorm2d

#: Point labels.
LABEL_PADDING, LABEL_NEGATIVE, LABEL_POSITIVE, LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT = -1, 0, 1, 2, 3


class RandomFourierEncoding(nn.Module):
    """Position encoding with random spatial frequencies (a fixed Gaussian matrix from the checkpoint)."""

    def __init__(self, num_pos_feats: int = 128) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates normalised to [0, 1] (x, y) -> (..., 2 * num_pos_feats)."""
        angles = 2 * math.pi * ((2 * coords - 1) @ self.positional_encoding_gaussian_matrix)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def grid(self, height: int, width: int) -> torch.Tensor:
        """Encoding of the centres of an H x W grid, shape (C, H, W)."""
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        coords = torch.stack([xs[None, :].expand(height, width), ys[:, None].expand(height, width)], dim=-1)
        return self.encode(coords).permute(2, 0, 1)

    def points(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, P, 2) pixel coordinates (x, y) of an image of `image_size` = (H, W) -> (B, P, C)."""
        scale = torch.tensor([image_size[1], image_size[0]], dtype=torch.float32, device=coords.device)
        return self.encode(coords.float() / scale)


class PromptEncoder(nn.Module):
    """Encodes point, box and mask prompts for the mask decoder (key names as in SAM2 checkpoints)."""

    def __init__(self, embed_dim: int = 256, mask_in_chans: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.pe_layer = RandomFourierEncoding(embed_dim // 2)
        # negative point, positive point, box top-left, box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    @staticmethod
    def embedding_size(image_size: tuple[int, int]) -> tuple[int, int]:
        """The feature grid (h, w) of a model input of `image_size` (stride 16)."""
        return image_size[0] // 16, image_size[1] // 16

    def dense_pe(self, image_size: tuple[int, int]) -> torch.Tensor:
        """Position encoding of the feature grid, (1, C, h, w)."""
        return self.pe_layer.grid(*self.embedding_size(image_size)).unsqueeze(0)

    def embed_points(
        self, coords: torch.Tensor, labels: torch.Tensor, image_size: tuple[int, int], pad: bool
    ) -> torch.Tensor:
        """(B, P, 2) pixel coordinates and (B, P) labels -> (B, P(+1), C) tokens.

        With `pad`, one padding point is appended (SAM does this when no box is given).
        """
        coords = coords + 0.5  # pixel centres
        if pad:
            coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, -labels.new_ones(labels.shape[0], 1)], dim=1)
        emb = self.pe_layer.points(coords, image_size)
        labels = labels[..., None]
        emb = torch.where(labels == LABEL_PADDING, self.not_a_point_embed.weight.expand_as(emb), emb)
        for label, table in enumerate(self.point_embeddings):
            emb = torch.where(labels == label, emb + table.weight, emb)
        return emb

    def embed_boxes(self, boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, 4) boxes x0 y0 x1 y1 in pixels -> (B, 2, C) corner tokens."""
        corners = self.pe_layer.points(boxes.reshape(-1, 2, 2) + 0.5, image_size)
        return corners + torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])[None]

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
        image_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed prompts.

        Arguments:
            points: coords (B, P, 2) in model-input pixels (x, y) and labels (B, P) int
                (1 positive, 0 negative, -1 padding, 2/3 box corners).
            boxes: (B, 4) x0 y0 x1 y1 in model-input pixels.
            masks: (B, 1, 4h, 4w) mask logits.
            image_size: (H, W) of the model input; h = H/16, w = W/16.
        Returns:
            sparse (B, N, C) and dense (B, C, h, w) embeddings.
        """
        batch = next((x.shape[0] for x in (points[0] if points else None, boxes, masks) if x is not None), 1)
        device = self.no_mask_embed.weight.device
        sparse = [torch.empty(batch, 0, self.embed_dim, device=device)]
        if points is not None:
            sparse.append(self.embed_points(points[0], points[1], image_size, pad=boxes is None))
        if boxes is not None:
            sparse.append(self.embed_boxes(boxes, image_size))
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.embedding_size(image_size)
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)
        return torch.cat(sparse, dim=1), dense
