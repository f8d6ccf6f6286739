"""Memory encoder: fuse a frame's image features with its object mask into a narrow memory.

    masks (B, 1, 16h, 16w) --mask_downsampler--> (B, C, h, w) --+
    pix_feats (B, C, h, w) --pix_feat_proj (1x1)--------------> + --fuser (2 ConvNeXt blocks)
        --out_proj (1x1)--> memory (B, D, h, w), with a sine position encoding of its grid.

The masks come in already scaled for the encoder (the caller maps probabilities or binarised masks
to p * 20 - 10); no sigmoid is applied here. Parameter names follow the SAM2 checkpoints'
`memory_encoder.*` keys.

Channel layer norms are computed with `F.layer_norm` on a channels-last view rather than with
`LayerNorm2d.forward` (same function, one fused kernel instead of nine passes; the modules stay as
the holders of the checkpoint's norm parameters). This changes results by float32 rounding only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maskvos.model.common import LayerNorm2d
from maskvos.model.position_encoding import SinePositionEncoding2d


def channel_norm_last(x: torch.Tensor, norm: LayerNorm2d) -> torch.Tensor:
    """Layer norm of a BHWC tensor over C with the parameters of a `LayerNorm2d`: BHWC -> BHWC."""
    return F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps)


class MaskDownSampler(nn.Module):
    """Downsample a mask 16x with four stride-2 3x3 convolutions, each followed by a channel layer
    norm and GELU, then a 1x1 projection.

    Channels grow 1 -> 4 -> 16 -> 64 -> 256 (x4 per halving), then project to `embed_dim`.
    `encoder` is a flat Sequential so that its indices match the checkpoints (`encoder.{0,1,3,...}`).
    """

    def __init__(self, embed_dim: int = 256, num_halvings: int = 4) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        channels = 1
        for _ in range(num_halvings):
            stages.append(nn.Conv2d(channels, 4 * channels, kernel_size=3, stride=2, padding=1))
            stages.append(LayerNorm2d(4 * channels))
            stages.append(nn.GELU())
            channels *= 4
        stages.append(nn.Conv2d(channels, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*stages)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        """masks (B, 1, 16h, 16w) -> (B, embed_dim, h, w), in channels-last memory format."""
        *stages, projection = self.encoder
        x = masks
        for conv, norm, act in zip(stages[0::3], stages[1::3], stages[2::3]):
            x = act(channel_norm_last(conv(x).permute(0, 2, 3, 1), norm)).permute(0, 3, 1, 2)
        return projection(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 conv, channel layer norm, pointwise MLP (C -> 4C -> C) with GELU,
    per-channel layer scale `gamma`, residual."""

    def __init__(self, dim: int = 256, kernel_size: int = 7) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: BCHW -> BCHW."""
        y = channel_norm_last(self.dwconv(x).permute(0, 2, 3, 1), self.norm)  # BHWC
        y = self.pwconv2(F.gelu(self.pwconv1(y)))
        y = y * self.gamma
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    """ConvNeXt blocks applied one after another to the fused features."""

    def __init__(self, dim: int = 256, num_layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: BCHW -> BCHW."""
        for block in self.layers:
            x = block(x)
        return x


class MemoryEncoder(nn.Module):
    """Encode a frame's features and its object mask into a memory of width `out_dim`."""

    def __init__(self, in_dim: int = 256, out_dim: int = 64) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(in_dim)
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(in_dim, num_layers=2)
        self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1)
        self.position_encoding = SinePositionEncoding2d(out_dim)

    def forward(self, pix_feats: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a memory.

        Arguments:
            pix_feats: (B, in_dim, h, w) the frame's lowest-resolution image features.
            masks: (B, 1, 16h, 16w) the object masks, already in the encoder's input scale
                (probabilities or binarised masks mapped to p * 20 - 10).
        Returns:
            memory_feats: (B, out_dim, h, w).
            memory_pos_enc: (B, out_dim, h, w) float32, the sine encoding of the grid. It is an expanded
                view of a cached tensor: do not modify it in place.
        """
        fused = self.pix_feat_proj(pix_feats) + self.mask_downsampler(masks)
        memory_feats = self.out_proj(self.fuser(fused))
        return memory_feats, self.position_encoding(memory_feats)
