"""Multi-head attention with projections (SAM-style) and axial rotary position encoding (RoPE).

Parameter names (`q_proj`, `k_proj`, `v_proj`, `out_proj`) follow the SAM2 checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Attention whose inner width may be smaller than the embedding (`downsample_rate`).

    Keys and values may come from a space of another width (`kv_in_dim`).
    """

    def __init__(
        self, embedding_dim: int, num_heads: int, downsample_rate: int = 1, kv_in_dim: int | None = None
    ) -> None:
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide the attention's internal width")
        self.num_heads = num_heads
        kv_dim = embedding_dim if kv_in_dim is None else kv_in_dim
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(kv_dim, self.internal_dim)
        self.v_proj = nn.Linear(kv_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, heads, N, C/heads)."""
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, heads, N, c) -> (B, N, heads*c)."""
        b, h, n, c = x.shape
        return x.transpose(1, 2).reshape(b, n, h * c)

    def project(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Project token-last inputs (B, N, C) into heads (B, heads, N, c)."""
        return self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Scaled dot-product attention on heads, then the output projection: (B, Nq, embedding_dim)."""
        return self.out_proj(self._merge(F.scaled_dot_product_attention(q, k, v)))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B, Nq, C), k and v (B, Nk, C_kv) -> (B, Nq, C)."""
        return self.attend(*self.project(q, k, v))


class AxialRotaryEncoding:
    """2-D axial RoPE: the first half of each head's channel pairs rotate with x, the second with y.

    Rotations are unit complex numbers, cached per (grid, number of repeats, device).
    """

    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        if head_dim % 4:
            raise ValueError("RoPE head width must be a multiple of 4")
        self.head_dim = head_dim
        self.theta = theta
        self._cache: dict[tuple[int, int, int, str], torch.Tensor] = {}

    def rotations(self, height: int, width: int, device: torch.device, repeats: int = 1) -> torch.Tensor:
        """Unit complex rotations (repeats * H * W, head_dim / 2) for an H x W grid (row-major),
        the grid repeated `repeats` times."""
        key = (height, width, repeats, str(device))
        if key not in self._cache:
            if repeats > 1:
                self._cache[key] = self.rotations(height, width, device).repeat(repeats, 1)
            else:
                quarter = self.head_dim // 4
                exponents = torch.arange(0, self.head_dim, 4, device=device)[:quarter].float() / self.head_dim
                freqs = 1.0 / (self.theta**exponents)
                idx = torch.arange(height * width, device=device, dtype=torch.float32)
                xs = idx % width
                ys = torch.div(idx, width, rounding_mode="floor")
                angles = torch.cat([torch.outer(xs, freqs), torch.outer(ys, freqs)], dim=-1)
                self._cache[key] = torch.polar(torch.ones_like(angles), angles)
        return self._cache[key]

    @staticmethod
    def rotate(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
        """Rotate channel pairs (2i, 2i+1) of x (B, heads, N, c) by complex `rotations` (N, c/2)."""
        pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(pairs * rotations).flatten(-2).to(x.dtype)


class RoPEAttention(Attention):
    """Attention with axial RoPE on queries and keys.

    With `repeat_for_keys`, the keys are several frames of the query grid one after another (the
    query grid's rotation repeats for each frame); the last `num_k_exclude_rope` keys (object pointer
    tokens) are not rotated.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        kv_in_dim: int | None = None,
        rope_theta: float = 10000.0,
        repeat_for_keys: bool = False,
    ) -> None:
        super().__init__(embedding_dim, num_heads, kv_in_dim=kv_in_dim)
        self.rope = AxialRotaryEncoding(self.internal_dim // num_heads, rope_theta)
        self.repeat_for_keys = repeat_for_keys

    def forward(  # type: ignore[override]
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        feat_size: tuple[int, int],
        num_k_exclude_rope: int = 0,
    ) -> torch.Tensor:
        """q (B, H*W, C) on a grid of `feat_size` = (H, W); k, v (B, Nk, C_kv) -> (B, H*W, C)."""
        q, k, v = self.project(q, k, v)
        q = self.rope.rotate(q, self.rope.rotations(*feat_size, q.device))
        num_rope = k.shape[-2] - num_k_exclude_rope
        if num_rope > 0:
            repeats = num_rope // q.shape[-2]
            if repeats * q.shape[-2] != num_rope or (repeats > 1 and not self.repeat_for_keys):
                raise ValueError("rotary keys must be whole frames of the query grid")
            rotations = self.rope.rotations(*feat_size, q.device, repeats)
            if num_k_exclude_rope:
                # k is this call's own projection: rotate its spatial part in place
                k[:, :, :num_rope] = self.rope.rotate(k[:, :, :num_rope], rotations)
            else:
                k = self.rope.rotate(k, rotations)
        return self.attend(q, k, v)
