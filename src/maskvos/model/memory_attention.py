"""Memory attention: condition the current frame's features on memories of earlier frames.

Each layer: RoPE self-attention over the frame's tokens, RoPE cross-attention from them to the
memory tokens (spatial memories of several frames, then object-pointer tokens that are not
rotated), and a feed-forward block; pre-norm residuals throughout. Layout is batch-first:
(B, N, C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maskvos.model.attention import RoPEAttention


class MemoryAttentionLayer(nn.Module):
    """One memory-attention layer (key names as in the SAM2 checkpoints)."""

    def __init__(self, d_model: int, mem_dim: int, num_heads: int, dim_feedforward: int, rope_theta: float) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(d_model, num_heads, rope_theta=rope_theta)
        self.cross_attn_image = RoPEAttention(
            d_model, num_heads, kv_in_dim=mem_dim, rope_theta=rope_theta, repeat_for_keys=True
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_keys: torch.Tensor,
        feat_size: tuple[int, int],
        num_obj_ptr_tokens: int,
    ) -> torch.Tensor:
        """x (B, HW, C); memory (B, M, D) values; memory_keys (B, M, D) = memory + its position encoding."""
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, feat_size)
        h = self.norm2(x)
        x = x + self.cross_attn_image(h, memory_keys, memory, feat_size, num_k_exclude_rope=num_obj_ptr_tokens)
        h = self.norm3(x)
        return x + self.linear2(F.relu(self.linear1(h)))


class MemoryAttention(nn.Module):
    """A stack of memory-attention layers with a final layer norm."""

    def __init__(
        self,
        d_model: int = 256,
        mem_dim: int = 64,
        num_layers: int = 4,
        num_heads: int = 1,
        dim_feedforward: int = 2048,
        rope_theta: float = 10000.0,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(d_model, mem_dim, num_heads, dim_feedforward, rope_theta) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        curr_feats: torch.Tensor,
        curr_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_obj_ptr_tokens: int,
        feat_size: tuple[int, int],
    ) -> torch.Tensor:
        """Condition a frame's tokens on memory.

        Arguments:
            curr_feats, curr_pos: (B, HW, C) the frame's lowest-resolution features and position
                encoding, on a grid of feat_size = (H, W), row-major.
            memory, memory_pos: (B, M, D): spatial memories of T frames (T*HW tokens, frame after frame)
                followed by `num_obj_ptr_tokens` object-pointer tokens.
        Returns:
            (B, HW, C) memory-conditioned features.
        """
        x = curr_feats + 0.1 * curr_pos
        memory_keys = memory + memory_pos
        for layer in self.layers:
            x = layer(x, memory, memory_keys, feat_size, num_obj_ptr_tokens)
        return self.norm(x)
