"""Fixed (non-learned) position encodings: 2-D sine maps and 1-D sine vectors."""

from __future__ import annotations

import math

import torch
from torch import nn


def _sine_frequencies(num_feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    """Per-channel divisors temperature^(2*floor(i/2)/num_feats), shape (num_feats,)."""
    idx = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / num_feats)


class SinePositionEncoding2d(nn.Module):
    """DETR-style normalised 2-D sine encoding of a feature map's grid.

    The output has `num_pos_feats` channels: the first half encodes y, the second x;
    within each half, even channels are sines and odd channels cosines. It has no
    parameters and depends only on the grid size, so results are cached per (H, W, device).
    """

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError("num_pos_feats must be even")
        self.half = num_pos_feats // 2
        self.temperature = temperature
        self.scale = 2 * math.pi
        self._cache: dict[tuple[int, int, str], torch.Tensor] = {}

    @torch.no_grad()
    def encode_grid(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """Encoding of an H x W grid, shape (C, H, W), float32."""
        key = (height, width, str(device))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        eps = 1e-6
        ys = torch.arange(1, height + 1, dtype=torch.float32, device=device)
        xs = torch.arange(1, width + 1, dtype=torch.float32, device=device)
        ys = ys / (height + eps) * self.scale
        xs = xs / (width + eps) * self.scale
        freqs = _sine_frequencies(self.half, self.temperature, device)
        pos_y = _interleave_sin_cos(ys[:, None] / freqs)  # (H, half)
        pos_x = _interleave_sin_cos(xs[:, None] / freqs)  # (W, half)
        grid = torch.cat(
            [
                pos_y[:, None, :].expand(height, width, self.half),
                pos_x[None, :, :].expand(height, width, self.half),
            ],
            dim=-1,
        )
        out = grid.permute(2, 0, 1).contiguous()
        self._cache[key] = out
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: BCHW feature map -> its encoding, shape (B, num_pos_feats, H, W), float32."""
        enc = self.encode_grid(x.shape[-2], x.shape[-1], x.device)
        return enc.unsqueeze(0).expand(x.shape[0], -1, -1, -1)


def _interleave_sin_cos(angles: torch.Tensor) -> torch.Tensor:
    """(N, F) angles -> (N, F) with sin of even columns and cos of odd columns, interleaved."""
    sin = angles[:, 0::2].sin()
    cos = angles[:, 1::2].cos()
    return torch.stack([sin, cos], dim=2).flatten(1)


def sine_encoding_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Transformer-style 1-D sine encoding.

    Arguments:
        positions: (N,) float positions.
        dim: output width; the first half are sines, the second half cosines.
    Returns:
        (N, dim) float32.
    """
    freqs = _sine_frequencies(dim // 2, temperature, positions.device)
    angles = positions.float().unsqueeze(-1) / freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)
