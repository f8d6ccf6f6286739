"""The plain ViT image encoder of EfficientTAM, and its one-level neck.

16 x 16 patches, 12 pre-norm blocks (LayerNorm eps 1e-6, exact GELU, no layer scale, no relative
positions); blocks at `global_blocks` attend over the whole grid, the others inside 14 x 14 windows
(the grid zero-padded to whole windows after the norm, the padding attended to, then cropped). A
learned absolute position embedding of the 14 x 14 pre-training grid (plus an unused class slot) is
resized bicubically to the feature grid on every call. The trunk returns one stride-16 map; the neck
projects it to the model width (1x1 and 3x3 convolutions without bias, each followed by a channel
LayerNorm) and adds its sine position encoding. Module names follow EfficientTAM's checkpoint keys
(`image_encoder.trunk.*`, `image_encoder.neck.convs.0.*`). Token layout BHWC inside the trunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maskvos.model.common import MLP, LayerNorm2d
from maskvos.model.config import ViTConfig
from maskvos.model.position_encoding import SinePositionEncoding2d


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H/p, W/p, C)."""
        return self.proj(images).permute(0, 2, 3, 1)


class ViTAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (`qkv`, `proj`)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) tokens attending among themselves -> (B, H, W, C)."""
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, h, w, c))


class ViTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ViTAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dim, 2, activation=F.gelu)
        self.window = window  # 0: global attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        if self.window:
            b, height, width, c = h.shape
            s = self.window
            pad_h, pad_w = -height % s, -width % s
            if pad_h or pad_w:
                h = F.pad(h, (0, 0, 0, pad_w, 0, pad_h))
            ph, pw = height + pad_h, width + pad_w
            windows = (h.view(b, ph // s, s, pw // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s, s, c))
            out = self.attn(windows)
            out = out.view(b, ph // s, pw // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
            h = out[:, :height, :width]
        else:
            h = self.attn(h)
        x = x + h
        return x + self.mlp(self.norm2(x))


class ViTTrunk(nn.Module):
    """(B, 3, H, W) -> [(B, C, H/16, W/16)]."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.patch_embed = PatchEmbed(config.patch_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.pretrain_grid**2 + 1, dim))
        self.blocks = nn.ModuleList(
            ViTBlock(dim, config.num_heads, config.mlp_ratio, 0 if i in config.global_blocks else config.window_size)
            for i in range(config.depth)
        )

    def position_embedding(self, height: int, width: int) -> torch.Tensor:
        """The pre-training grid's embedding (class slot dropped) resized to H x W: (1, H, W, C)."""
        g = self.config.pretrain_grid
        grid = self.pos_embed[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
        if (height, width) != (g, g):
            grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
        return grid.permute(0, 2, 3, 1)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(images)
        x = x + self.position_embedding(x.shape[1], x.shape[2])
        for block in self.blocks:
            x = block(x)
        return [x.permute(0, 3, 1, 2).contiguous()]


class _NeckLevel(nn.Module):
    def __init__(self, dim_in: int, d_model: int) -> None:
        super().__init__()
        self.conv_1x1 = nn.Conv2d(dim_in, d_model, kernel_size=1, bias=False)
        self.norm_0 = LayerNorm2d(d_model)
        self.conv_3x3 = nn.Conv2d(d_model, d_model, kernel_size=3, padding=1, bias=False)
        self.norm_1 = LayerNorm2d(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_1(self.conv_3x3(self.norm_0(self.conv_1x1(x))))


class SingleLevelNeck(nn.Module):
    """The ViT's one map projected to the model width, with its sine position encoding."""

    def __init__(self, dim_in: int, d_model: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList([_NeckLevel(dim_in, d_model)])
        self.position_encoding = SinePositionEncoding2d(d_model)

    def forward(self, stage_feats: list[torch.Tensor], num_levels: int = 1) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feat = self.convs[0](stage_feats[-1])
        return [feat], [self.position_encoding(feat).to(feat.dtype)]
