"""Multi-head attention with input/output projections (SAM-style).

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
