"""Image encoder: the Hiera trunk and an FPN neck.

Hiera is a hierarchical vision transformer working on channel-last token maps (B, H, W, C): a strided
patch embedding, then stages of blocks with windowed or global attention; the first block of each
later stage halves the resolution by max-pooling its queries and widens the channels. The neck
projects each stage to `d_model` channels, adds top-down features at chosen levels, and gives each
level a sine position encoding. The lowest-resolution level is dropped (SAM2's `scalp=1`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maskvos.model.common import MLP
from maskvos.model.config import HieraConfig
from maskvos.model.position_encoding import SinePositionEncoding2d


def _pad_to_multiple(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a (B, H, W, C) map at the bottom/right so H and W are multiples of `size`."""
    pad_h = -x.shape[1] % size
    pad_w = -x.shape[2] % size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return x


def to_windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of `size` -> (B * windows, size, size, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // size, size, w // size, size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, size, size, c)


def from_windows(windows: torch.Tensor, size: int, padded_hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of `to_windows` for a padded map of `padded_hw`: -> (B, Hp, Wp, C)."""
    hp, wp = padded_hw
    b = windows.shape[0] // ((hp // size) * (wp // size))
    x = windows.reshape(b, hp // size, wp // size, size, size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)


def _max_pool(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Max-pool a (B, H, W, C) map by `stride`."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), kernel_size=stride, stride=stride).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Self-attention on a (B, H, W, C) map whose queries may be max-pooled (downsampling the output)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: tuple[int, int] | None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H', W', C_out); H' = H / q_stride when pooling."""
        b, h, w, _ = x.shape
        qkv = self.qkv(x).view(b, h * w, 3, self.num_heads, -1)
        q, k, v = qkv.unbind(2)  # (B, HW, heads, c)
        if self.q_stride is not None:
            q = _max_pool(q.reshape(b, h, w, -1), self.q_stride)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


class MultiScaleBlock(nn.Module):
    """A Hiera block: (windowed) attention and an MLP, pre-norm, with a pooled/projected shortcut
    where the block changes resolution or width."""

    def __init__(
        self, dim: int, dim_out: int, num_heads: int, window_size: int, q_stride: tuple[int, int] | None
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.window_size = window_size
        self.q_stride = q_stride
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, 4 * dim_out, dim_out, num_layers=2, activation=F.gelu)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H', W', C_out)."""
        normed = self.norm1(x)
        shortcut = x
        if hasattr(self, "proj"):
            shortcut = self.proj(normed)
            if self.q_stride is not None:
                shortcut = _max_pool(shortcut, self.q_stride)
        size = self.window_size
        if size > 0:
            padded = _pad_to_multiple(normed, size)
            attn = self.attn(to_windows(padded, size))
            out_size = size // self.q_stride[0] if self.q_stride is not None else size
            out_h, out_w = shortcut.shape[1:3]
            padded_hw = (out_h + (-out_h % out_size), out_w + (-out_w % out_size))
            attn = from_windows(attn, out_size, padded_hw)[:, :out_h, :out_w]
        else:
            attn = self.attn(normed)
        x = shortcut + attn
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """7x7 stride-4 convolution: (B, 3, H, W) -> (B, H/4, W/4, C)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Hiera(nn.Module):
    """The Hiera trunk; returns one BCHW map per stage, highest resolution first."""

    def __init__(self, cfg: HieraConfig) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.embed_dim, *cfg.window_pos_embed_bkg_spatial_size))
        win0 = cfg.window_spec[0]
        self.pos_embed_window = nn.Parameter(torch.zeros(1, cfg.embed_dim, win0, win0))
        stage_ends = [sum(cfg.stages[: i + 1]) - 1 for i in range(len(cfg.stages))]
        pool_blocks = [end + 1 for end in stage_ends[:-1]][: cfg.q_pool]
        self.stage_ends = stage_ends
        dim, heads, stage = cfg.embed_dim, cfg.num_heads, 0
        blocks = []
        for i in range(sum(cfg.stages)):
            # A stage's first block still uses the previous stage's window (its queries are pooled).
            window = 0 if i in cfg.global_att_blocks else cfg.window_spec[stage]
            dim_out = dim
            if i - 1 in stage_ends:
                dim_out = int(dim * cfg.dim_mul)
                heads = int(heads * cfg.head_mul)
                stage += 1
            q_stride = cfg.q_stride if i in pool_blocks else None
            blocks.append(MultiScaleBlock(dim, dim_out, heads, window, q_stride))
            dim = dim_out
        self.blocks = nn.ModuleList(blocks)

    def position_embedding(self, height: int, width: int) -> torch.Tensor:
        """The background embedding resized to (H, W) plus the tiled window embedding: (1, H, W, C)."""
        pos = F.interpolate(self.pos_embed, size=(height, width), mode="bicubic")
        win = self.pos_embed_window
        reps_h = -(-height // win.shape[-2])
        reps_w = -(-width // win.shape[-1])
        pos = pos + win.tile(1, 1, reps_h, reps_w)[:, :, :height, :width]
        return pos.permute(0, 2, 3, 1)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> [(B, C_i, H/4/2^i, W/4/2^i) for each stage i]."""
        x = self.patch_embed(images)
        x = x + self.position_embedding(x.shape[1], x.shape[2])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs


class FpnNeck(nn.Module):
    """1x1 lateral projections with nearest-neighbour top-down fusion at chosen levels."""

    def __init__(self, d_model: int, backbone_channel_list: tuple[int, ...], top_down_levels: tuple[int, ...]) -> None:
        super().__init__()
        # convs[0] projects the lowest-resolution stage (checkpoint order)
        self.convs = nn.ModuleList(
            nn.Sequential() for _ in backbone_channel_list
        )
        for seq, dim in zip(self.convs, backbone_channel_list):
            seq.add_module("conv", nn.Conv2d(dim, d_model, kernel_size=1))
        self.top_down_levels = set(top_down_levels)
        self.position_encoding = SinePositionEncoding2d(d_model)

    def forward(self, stage_feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Stage maps, highest resolution first -> (features, position encodings), same order."""
        n = len(stage_feats) - 1
        outs: list[torch.Tensor] = [stage_feats[0]] * (n + 1)
        prev = None
        for level in range(n, -1, -1):
            lateral = self.convs[n - level](stage_feats[level])
            if level in self.top_down_levels and prev is not None:
                prev = lateral + F.interpolate(prev.float(), scale_factor=2.0, mode="nearest")
            else:
                prev = lateral
            outs[level] = prev
        pos = [self.position_encoding(x).to(x.dtype) for x in outs]
        return outs, pos


class ImageEncoder(nn.Module):
    """Hiera + FPN; returns the three highest-resolution levels (strides 4, 8, 16)."""

    def __init__(self, trunk: HieraConfig, d_model: int = 256, fpn_top_down_levels: tuple[int, ...] = (2, 3)) -> None:
        super().__init__()
        self.trunk = Hiera(trunk)
        self.neck = FpnNeck(d_model, trunk.channel_list, fpn_top_down_levels)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """images: (B, 3, H, W) normalised, H and W multiples of 32.

        Returns:
            (fpn_feats, pos_encs): 3 levels each, highest resolution first (strides 4, 8, 16), each
            (B, d_model, H/s, W/s).
        """
        if images.shape[-1] % 32 or images.shape[-2] % 32:
            raise ValueError(f"image size {tuple(images.shape[-2:])} must be a multiple of 32")
        feats, pos = self.neck(self.trunk(images))
        return feats[:-1], pos[:-1]
