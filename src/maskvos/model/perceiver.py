"""EdgeTAM's spatial perceiver: compresses each frame's memory (B, D, h, w) into a few tokens before it
is stored, so memory attention reads 512 tokens per frame instead of h*w.

Two sets of learned latents read the memory through the same layers:
- 256 "global" latents attend to all h*w memory tokens, whose position encoding is added to the
  projected keys and values; they carry no position encoding of their own afterwards (zeros);
- 256 "window" latents, one per cell of a 16 x 16 grid of windows over the memory, each attending only
  to the (h/16) x (w/16) tokens of its window; their position encoding is the sine encoding of the
  16 x 16 grid.
Each layer is pre-norm: cross-attention from the latents, feed-forward, self-attention among the
latents, feed-forward, each residual; one final layer norm. Linear layers have no bias. Parameter
names follow the checkpoint's `spatial_perceiver.*` keys. Inference only (dropout inactive).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maskvos.model.config import PerceiverConfig
from maskvos.model.position_encoding import SinePositionEncoding2d


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    """LayerNorm, Linear up, GELU, Linear down (the checkpoint's `ff.0/1/3` names)."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


class _Attention(nn.Module):
    """Multi-head attention with bias-free projections; keys and values from one projection."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, N, d)

    def attend(self, queries: torch.Tensor, inputs: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """(B, Nq, C) queries (normalised), (B, N, C) inputs (normalised); `pos` (B, N, inner) is added to
        the projected keys and values."""
        q = self._split(self.to_q(queries))
        k, v = (self._split(t) for t in self.to_kv(inputs).chunk(2, dim=-1))
        if pos is not None:
            pos = self._split(pos)
            k, v = k + pos, v + pos
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).flatten(2))


class PerceiverCrossAttention(_Attention):
    """Latents attend to inputs (each normalised by its own layer norm)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__(dim, heads, dim_head)
        self.norm_x = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)

    def forward(self, latents: torch.Tensor, x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        return self.attend(self.norm_latents(latents), self.norm_x(x), pos)


class PerceiverSelfAttention(_Attention):
    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__(dim, heads, dim_head)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return self.attend(h, h)


class PerceiverLayer(nn.Module):
    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__()
        dim, heads, dim_head, mult = config.dim, config.heads, config.dim_head, config.ff_mult
        self.attn = PerceiverCrossAttention(dim, heads, dim_head)
        self.ff = feed_forward(dim, mult)
        self.self_attn = PerceiverSelfAttention(dim, heads, dim_head)
        self.self_ff = feed_forward(dim, mult)

    def forward(self, latents: torch.Tensor, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        latents = latents + self.attn(latents, x, pos)
        latents = latents + self.ff(latents)
        latents = latents + self.self_attn(latents)
        return latents + self.self_ff(latents)


class SpatialPerceiver(nn.Module):
    """(B, D, h, w) memory and its position encoding -> (B, N, D) tokens and their position encoding,
    N = global latents + window latents (256 + 256 for EdgeTAM)."""

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__()
        self.config = config
        self.latents = nn.Parameter(torch.zeros(config.num_latents, config.dim))
        self.latents_2d = nn.Parameter(torch.zeros(config.windows_per_side**2, config.dim))
        self.layers = nn.ModuleList(PerceiverLayer(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)
        self.position_encoding = SinePositionEncoding2d(config.dim)

    @property
    def num_tokens(self) -> int:
        return self.config.num_latents + self.config.windows_per_side**2

    def forward(self, memory: torch.Tensor, memory_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Compress memories.

        Arguments:
            memory: (B, D, h, w) memory-encoder features; h and w multiples of `windows_per_side`.
            memory_pos: (B or 1, D, h, w) their sine position encoding.
        Returns:
            tokens (B, N, D) (global latents first, then the window latents row-major over their grid)
            and their position encoding (B, N, D).
        """
        b, d, h, w = memory.shape
        side = self.config.windows_per_side
        if h % side or w % side:
            raise ValueError(f"memory grid {h}x{w} is not divisible into {side}x{side} windows")
        tokens = memory.flatten(2).transpose(1, 2)  # (B, hw, D)
        pos = memory_pos.flatten(2).transpose(1, 2).expand(b, -1, -1)
        global_latents = self.latents.unsqueeze(0).expand(b, -1, -1)
        for layer in self.layers:
            global_latents = layer(global_latents, tokens, pos)
        wh, ww = h // side, w // side
        windows = (memory.permute(0, 2, 3, 1).reshape(b, side, wh, side, ww, d)
                   .permute(0, 1, 3, 2, 4, 5).reshape(b * side * side, wh * ww, d))
        window_latents = self.latents_2d.unsqueeze(0).expand(b, -1, -1).reshape(b * side * side, 1, d)
        for layer in self.layers:
            window_latents = layer(window_latents, windows)
        window_latents = window_latents.view(b, side * side, d)
        grid_pos = self.position_encoding.encode_grid(side, side, memory.device)  # (D, side, side)
        grid_pos = grid_pos.to(memory.dtype).flatten(1).transpose(0, 1).unsqueeze(0).expand(b, -1, -1)
        out = self.norm(torch.cat([global_latents, window_latents], dim=1))
        out_pos = torch.cat([grid_pos.new_zeros(b, self.config.num_latents, d), grid_pos], dim=1)
        return out, out_pos
