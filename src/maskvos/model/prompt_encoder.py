"""Prompt encoder: points and boxes become sparse tokens, a mask prompt becomes a dense map.

The model-input size is an argument of each call (the reference fixes it in its constructor), so
one module serves any input resolution; the feature grid is the input size / 16.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from maskvos.model.common import LayerNorm2d

#: Point labels.
LABEL_PADDING, LABEL_NEGATIVE, LABEL_POSITIVE, LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT = -1, 0, 1, 2, 3
#: Stride of the image embedding the prompts are matched to.
EMBEDDING_STRIDE = 16


class RandomFourierEncoding(nn.Module):
    """Position encoding with random spatial frequencies: a fixed Gaussian (2, C/2) matrix from the checkpoint.

    A point (x, y) normalised to [0, 1] becomes [sin(a), cos(a)] with a = 2 pi ((2 (x, y) - 1) @ G).
    """

    def __init__(self, num_pos_feats: int = 128) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))
        # grid encodings, per (h, w, device, dtype), with the matrix they were computed from
        self._grid_cache: dict[tuple[int, int, str, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) float32 coordinates (x, y) normalised to [0, 1] -> (..., C)."""
        angles = 2 * math.pi * ((2 * coords - 1) @ self.positional_encoding_gaussian_matrix)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    @torch.no_grad()
    def grid(self, height: int, width: int) -> torch.Tensor:
        """Encoding of the cell centres of an h x w grid, (C, h, w). Cached; do not modify in place."""
        matrix = self.positional_encoding_gaussian_matrix
        key = (height, width, str(matrix.device), matrix.dtype)
        cached = self._grid_cache.get(key)
        if cached is not None and torch.equal(cached[0], matrix):
            return cached[1]
        ys = (torch.arange(height, device=matrix.device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=matrix.device, dtype=torch.float32) + 0.5) / width
        coords = torch.stack([xs[None, :].expand(height, width), ys[:, None].expand(height, width)], dim=-1)
        encoding = self.encode(coords).permute(2, 0, 1)
        self._grid_cache[key] = (matrix.clone(), encoding)
        return encoding

    def points(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, P, 2) pixel coordinates (x, y) in an image of `image_size` = (H, W) -> (B, P, C)."""
        dtype = coords.dtype if coords.is_floating_point() else torch.float32
        size_xy = torch.tensor([image_size[1], image_size[0]], dtype=dtype, device=coords.device)
        return self.encode((coords / size_xy).float())


class PromptEncoder(nn.Module):
    """Encodes point, box and mask prompts for the mask decoder.

    Parameter names follow the `sam_prompt_encoder.*` checkpoint keys: `point_embeddings.{0..3}` are
    added to negative, positive, box top-left and box bottom-right points; `not_a_point_embed` replaces
    padding points; `no_mask_embed` is the dense embedding when there is no mask prompt.
    """

    def __init__(self, embed_dim: int = 256, mask_in_chans: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.pe_layer = RandomFourierEncoding(embed_dim // 2)
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
        """The feature grid (h, w) of a model input of `image_size` = (H, W)."""
        return image_size[0] // EMBEDDING_STRIDE, image_size[1] // EMBEDDING_STRIDE

    def dense_pe(self, image_size: tuple[int, int]) -> torch.Tensor:
        """Position encoding of the feature grid of a model input of `image_size` = (H, W): (1, C, h, w)."""
        return self.pe_layer.grid(*self.embedding_size(image_size)).unsqueeze(0)

    def embed_points(
        self, coords: torch.Tensor, labels: torch.Tensor, image_size: tuple[int, int], pad: bool
    ) -> torch.Tensor:
        """(B, P, 2) pixel coordinates (x, y) and (B, P) labels -> (B, P, C) tokens, or (B, P + 1, C) with `pad`.

        With `pad` (no box given) one padding point is appended, as SAM does.
        """
        coords = coords + 0.5  # pixel centres
        if pad:
            coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), LABEL_PADDING)], dim=1)
        tokens = self.pe_layer.points(coords, image_size)
        labels = labels[..., None]
        tokens = torch.where(labels == LABEL_PADDING, self.not_a_point_embed.weight.expand_as(tokens), tokens)
        for label, table in enumerate(self.point_embeddings):  # labels 0..3
            tokens = torch.where(labels == label, tokens + table.weight, tokens)
        return tokens

    def embed_boxes(self, boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, 4) boxes x0 y0 x1 y1 in pixels -> (B, 2, C) corner tokens."""
        corners = self.pe_layer.points(boxes.reshape(-1, 2, 2) + 0.5, image_size)
        top_left = self.point_embeddings[LABEL_BOX_TOP_LEFT].weight
        bottom_right = self.point_embeddings[LABEL_BOX_BOTTOM_RIGHT].weight
        corner_embeds = torch.cat([top_left, bottom_right])  # (2, C)
        return corners + corner_embeds

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
        image_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed prompts.

        Arguments:
            points: coords (B, P, 2) float in model-input pixels (x, y) and labels (B, P) int
                (1 positive, 0 negative, -1 padding, 2/3 box corners).
            boxes: (B, 4) x0 y0 x1 y1 in model-input pixels.
            masks: (B, 1, 4h, 4w) mask logits.
            image_size: (H, W) of the model input; h = H // 16, w = W // 16.
        Returns:
            sparse (B, N, C) tokens: the points (plus one padding point when `boxes` is None), then
            the two box corners; dense (B, C, h, w): the embedded mask, or `no_mask_embed` everywhere.
        """
        batch = next((x.shape[0] for x in (points and points[0], boxes, masks) if x is not None), 1)
        sparse_parts = []
        if points is not None:
            sparse_parts.append(self.embed_points(points[0], points[1], image_size, pad=boxes is None))
        if boxes is not None:
            sparse_parts.append(self.embed_boxes(boxes, image_size))
        if sparse_parts:
            sparse = torch.cat(sparse_parts, dim=1) if len(sparse_parts) > 1 else sparse_parts[0]
        else:
            sparse = self.no_mask_embed.weight.new_empty(batch, 0, self.embed_dim)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.embedding_size(image_size)
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)
        return sparse, dense
