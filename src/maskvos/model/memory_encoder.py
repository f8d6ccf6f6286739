"""Memory encoder: a frame's features fused with its (soft) object mask, compressed to memory width."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maskvos.model.common import LayerNorm2d
from maskvos.model.position_encoding import SinePositionEncoding2d


class MaskDownSampler(nn.Module):
    """Four stride-2 3x3 convolutions (each followed by layer norm and GELU) then a 1x1 projection.

    (B, 1, 16h, 16w) -> (B, embed_dim, h, w); channels grow 1 -> 4 -> 16 -> 64 -> 256.
    """

    def __init__(self, embed_dim: int = 256, num_stages: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        chans = 1
        for _ in range(num_stages):
            layers += [nn.Conv2d(chans, chans * 4, 3, stride=2, padding=1), LayerNorm2d(chans * 4), nn.GELU()]
            chans *= 4
        layers.append(nn.Conv2d(chans, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        return self.encoder(masks)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 conv, layer norm, pointwise MLP (x4), layer scale, residual."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: BCHW -> BCHW."""
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(y))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    """A stack of CXBlocks."""

    def __init__(self, dim: int = 256, num_layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Encode (frame features, mask) into a memory of width `out_dim`."""

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
            pix_feats: (B, in_dim, h, w) image features.
            masks: (B, 1, 16h, 16w) masks already in the encoder's input scale (sigmoid * 20 - 10).
        Returns:
            memory features (B, out_dim, h, w) and their position encoding (B, out_dim, h, w).
        """
        x = self.pix_feat_proj(pix_feats) + self.mask_downsampler(masks)
        x = self.out_proj(self.fuser(x))
        return x, self.position_encoding(x).to(x.dtype)
