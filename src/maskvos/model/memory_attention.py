"""Memory attention: condition the current frame's features on the memory of earlier frames.

A stack of pre-norm layers, each made of
  1. self-attention among the frame's H*W tokens, with 2-D axial rotary position encoding (RoPE);
  2. cross-attention from the frame's tokens to the memory tokens, keys = memory + its position
     encoding. The memory is T frames of spatial memories on the same H x W grid (T*H*W tokens,
     frame after frame), whose keys get the query grid's rotation once per frame, followed by
     object-pointer tokens whose keys are not rotated;
  3. a ReLU feed-forward block;
and a final layer norm. The frame's own position encoding is only added, scaled by 0.1, at the input.

Layout is batch-first throughout: tokens (B, N, C), row-major over the grid. Inference only: the
reference's dropout (p=0.1) is inactive in eval mode and is not modelled. Parameter names follow
the SAM2 checkpoints' `memory_attention.*` keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from maskvos.model.attention import Attention

_POS_AT_INPUT_SCALE = 0.1


class AxialRope:
    """2-D axial rotary encoding tables for an H x W grid of tokens (row-major).

    A head of width D holds D/2 channel pairs (2i, 2i+1), read as complex numbers re + i*im. Pair
    i < D/4 rotates by the angle x * f_i, pair D/4 + i by y * f_i, with f_i = theta^(-4i/D), x the
    column and y the row of the token. Tables are unit complex numbers computed in float32 (as the
    reference computes them) and cached per (H, W, device).
    """

    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        if head_dim % 4:
            raise ValueError(f"RoPE needs a head width divisible by 4, got {head_dim}")
        self.head_dim = head_dim
        self.theta = theta
        self._cache: dict[tuple[int, int, str], torch.Tensor] = {}

    def rotations(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """Unit complex rotations (H*W, D/2), complex64."""
        key = (height, width, str(device))
        cached = self._cache.get(key)
        if cached is None:
            quarter = self.head_dim // 4
            steps = torch.arange(0, self.head_dim, 4, device=device)[:quarter].float()
            freqs = 1.0 / (self.theta ** (steps / self.head_dim))
            idx = torch.arange(height * width, device=device, dtype=torch.float32)
            cols = idx % width
            rows = torch.div(idx, width, rounding_mode="floor")
            angles = torch.cat([torch.outer(cols, freqs), torch.outer(rows, freqs)], dim=-1)
            cached = torch.polar(torch.ones_like(angles), angles)
            self._cache[key] = cached
        return cached


def rotate_pairs_(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate the channel pairs (2i, 2i+1) of x in place by complex multiplication.

    Arguments:
        x: (..., N, heads, D) with a unit last stride and even other strides (a slice of a projection).
        rotations: (N, 1, D/2) complex64, broadcast over the leading dimensions and the heads.
    Returns:
        x, rotated. Reduced-precision inputs are rotated in float32 and written back, as in the reference.
    """
    if x.dtype != torch.float32:
        return x.copy_(rotate_pairs_(x.float(), rotations))
    torch.view_as_complex(x.unflatten(-1, (-1, 2))).mul_(rotations)
    return x


class RopeAttention(Attention):
    """Single- or multi-head attention with query/key/value/output projections and axial RoPE.

    Queries lie on an H x W grid. The first `num_rope_frames` * H*W keys are that many frames of the
    same grid and are rotated like the queries; keys after them (object pointers) are not rotated.
    """

    def __init__(self, embed_dim: int, num_heads: int, kv_in_dim: int | None = None, pooling: int = 0) -> None:
        super().__init__(embed_dim, num_heads, kv_in_dim=kv_in_dim)
        self.pooling = pooling  # EfficientTAM's pooled memory keys and values (see `_pooled_attention`)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, heads, C/heads), a view."""
        return x.unflatten(-1, (self.num_heads, -1))

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        rotations: torch.Tensor,
        num_rope_frames: int,
        layout: KeyLayout | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from grid tokens to (partly rotated) keys.

        Arguments:
            queries: (B, HW, C) tokens of an H x W grid, row-major.
            keys, values: (B, Nk, C_kv) with Nk >= num_rope_frames * tokens per frame.
            rotations: (HW, D/2) complex RoPE table of the grid (D = C / heads).
            num_rope_frames: how many leading frames of keys to rotate.
            layout: how a frame's keys are laid out (None: HW tokens on the query grid, all rotated
                with `rotations`).
            key_mask: (B, Nk) bool, True for the keys attended to (None: all); padding keys of a
                fixed-size memory are False.
        Returns:
            (B, HW, C).
        """
        batch, num_q, _ = queries.shape
        rotations = rotations.unsqueeze(1)  # (HW, 1, D/2): broadcast over heads
        q = rotate_pairs_(self._split(self.q_proj(queries)), rotations)
        k = self._split(self.k_proj(keys))
        per_frame = num_q if layout is None else layout.tokens_per_frame
        num_rope = num_rope_frames * per_frame
        if num_rope:
            # (B, T, per_frame, heads, D) view of the frames' keys; the tables broadcast over the T frames
            spatial = k[:, :num_rope].unflatten(1, (num_rope_frames, per_frame))
            if layout is None:
                rotate_pairs_(spatial, rotations)
            else:
                rotate_pairs_(spatial[:, :, layout.unrotated :], layout.rotations.unsqueeze(1))
        v = self._split(self.v_proj(values))
        if self.pooling and num_rope_frames >= 2 and layout is None:
            out = self._pooled_attention(q, k, v, num_rope_frames, rotations.shape[0], key_mask)
        else:
            mask = None if key_mask is None else key_mask[:, None, None, :]
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, num_q, -1))

    def _pooled_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        frames: int,
        per_frame: int,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """EfficientTAM's memory cross-attention: each frame's (rotated) keys and values averaged over
        2x2 cells of its square grid, object-pointer tokens kept as they are; a pooled token stands
        for 4, so ln 4 is added to its logits (pooling 1) or, as the second variant does, to every
        channel of its key (pooling 2).

        Arguments: q (B, HW, heads, D); k, v (B, T*HW + P, heads, D); frames T; per_frame HW;
            key_mask (B, T*HW + P) bool or None, whole frames masked (a pooled token takes its frame's).
        Returns: (B, heads, HW, D).
        """
        side = round(per_frame**0.5)
        if side * side != per_frame or side % 2:
            raise ValueError(f"pooled memory attention needs an even square grid, got {per_frame} tokens per frame")
        b, _, heads, d = k.shape
        spatial = frames * per_frame

        def pool(x: torch.Tensor) -> torch.Tensor:
            grid = x[:, :spatial].reshape(b, frames, side // 2, 2, side // 2, 2, heads, d)
            return grid.mean((3, 5)).reshape(b, spatial // 4, heads, d)

        k_pooled, v_pooled = pool(k), pool(v)
        bias = 2 * math.log(2)
        if self.pooling == 2:
            k_pooled = k_pooled + bias
        keys = torch.cat([k_pooled, k[:, spatial:]], dim=1).transpose(1, 2)
        vals = torch.cat([v_pooled, v[:, spatial:]], dim=1).transpose(1, 2)
        mask = None
        if self.pooling == 1:
            mask = q.new_zeros(1, 1, 1, keys.shape[2])
            mask[..., : spatial // 4] = bias
        if key_mask is not None:
            pooled = key_mask[:, :spatial].reshape(b, frames, per_frame)[:, :, : per_frame // 4].reshape(b, -1)
            valid = torch.cat([pooled, key_mask[:, spatial:]], dim=1)[:, None, None, :]
            blocked = torch.zeros_like(valid, dtype=q.dtype).masked_fill(~valid, float("-inf"))
            mask = blocked if mask is None else mask + blocked
        return F.scaled_dot_product_attention(q.transpose(1, 2), keys, vals, attn_mask=mask)


@dataclass(frozen=True)
class KeyLayout:
    """How each memory frame's keys are laid out when they are not the query grid's tokens
    (EdgeTAM's perceiver tokens): `tokens_per_frame` tokens, of which the first `unrotated` get no
    rotation and the rest are rotated with `rotations` ((tokens_per_frame - unrotated, D/2) complex,
    the table of their own grid)."""

    tokens_per_frame: int
    unrotated: int
    rotations: torch.Tensor


class MemoryAttentionLayer(nn.Module):
    """RoPE self-attention, RoPE cross-attention to memory, feed-forward; pre-norm residuals."""

    def __init__(self, d_model: int, mem_dim: int, num_heads: int, dim_feedforward: int, pooling: int = 0) -> None:
        super().__init__()
        self.self_attn = RopeAttention(d_model, num_heads)
        self.cross_attn_image = RopeAttention(d_model, num_heads, kv_in_dim=mem_dim, pooling=pooling)
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
        rotations: torch.Tensor,
        num_mem_frames: int,
        layout: KeyLayout | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One layer (`layout`: the memory frames' key layout, None for the query grid's; `key_mask`:
        (B, M) bool, the memory tokens attended to, None for all).

        Arguments:
            x: (B, HW, C) the frame's tokens.
            memory: (B, M, D) memory tokens (the cross-attention values).
            memory_keys: (B, M, D) memory + its position encoding (the cross-attention keys).
            rotations: (HW, C/heads/2) complex RoPE table of the grid.
            num_mem_frames: T, the number of spatial memory frames at the start of the memory.
        Returns:
            (B, HW, C).
        """
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, rotations, num_rope_frames=1)
        h = self.norm2(x)
        x = x + self.cross_attn_image(
            h, memory_keys, memory, rotations, num_rope_frames=num_mem_frames, layout=layout, key_mask=key_mask
        )
        h = self.norm3(x)
        return x + self.linear2(F.relu_(self.linear1(h)))


class MemoryAttention(nn.Module):
    """Condition the current frame's lowest-resolution features on the memory bank."""

    def __init__(
        self,
        d_model: int = 256,
        mem_dim: int = 64,
        num_layers: int = 4,
        num_heads: int = 1,
        dim_feedforward: int = 2048,
        rope_theta: float = 10000.0,
        pooling: int = 0,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(d_model, mem_dim, num_heads, dim_feedforward, pooling) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.rope = AxialRope(d_model // num_heads, rope_theta)

    def forward(
        self,
        curr_feats: torch.Tensor,
        curr_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_obj_ptr_tokens: int,
        feat_size: tuple[int, int],
        key_scales: torch.Tensor | None = None,
        memory_tokens: tuple[int, int, tuple[int, int]] | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Memory-conditioned features of the current frame.

        Arguments:
            curr_feats, curr_pos: (B, HW, C) the frame's lowest-resolution features and their position
                encoding, on a grid of feat_size = (H, W), row-major.
            memory, memory_pos: (B, M, D) the memory tokens and their position encoding: spatial
                memories of T frames (T*H*W tokens, frame after frame) followed by
                `num_obj_ptr_tokens` object-pointer tokens.
            num_obj_ptr_tokens: how many trailing memory tokens are object pointers (not rotated).
            feat_size: (H, W) of the current frame's grid.
            key_scales: (B, M) factors on the cross-attention keys (memory + position) of each
                memory token before their projection (SAM2Long's ranking of memories); None: 1.
            memory_tokens: (tokens per frame, unrotated tokens, (h, w) grid of the rotated ones) when
                a memory frame is not h*w tokens of the query grid (EdgeTAM's perceiver: (512, 256,
                (16, 16))); None: frames of the query grid.
            memory_mask: (B, M) bool, True for the memory tokens attended to; None: all. A memory
                padded to a fixed size (so that a compiled step keeps its shapes) masks its padding.
        Returns:
            (B, HW, C) memory-conditioned features.
        """
        height, width = feat_size
        num_tokens = height * width
        if curr_feats.shape[1] != num_tokens:
            raise ValueError(f"curr_feats has {curr_feats.shape[1]} tokens, feat_size {feat_size} needs {num_tokens}")
        layout = None
        per_frame = num_tokens
        if memory_tokens is not None:
            per_frame, unrotated, (grid_h, grid_w) = memory_tokens
            if per_frame - unrotated != grid_h * grid_w:
                raise ValueError(f"{per_frame - unrotated} rotated tokens per frame do not fill a {grid_h}x{grid_w} grid")
            layout = KeyLayout(per_frame, unrotated, self.rope.rotations(grid_h, grid_w, curr_feats.device))
        num_spatial = memory.shape[1] - num_obj_ptr_tokens
        num_mem_frames = num_spatial // per_frame
        if num_spatial < 0 or num_mem_frames * per_frame != num_spatial:
            raise ValueError(
                f"memory has {memory.shape[1]} tokens: {num_obj_ptr_tokens} pointer tokens do not leave "
                f"whole frames of {per_frame} spatial memory tokens"
            )
        if memory.shape[0] != curr_feats.shape[0]:
            raise ValueError(f"batch sizes differ: current frame {curr_feats.shape[0]}, memory {memory.shape[0]}")

        rotations = self.rope.rotations(height, width, curr_feats.device)
        x = curr_feats + _POS_AT_INPUT_SCALE * curr_pos
        memory_keys = memory + memory_pos
        if key_scales is not None:
            memory_keys = memory_keys * key_scales.unsqueeze(-1)
        for layer in self.layers:
            x = layer(x, memory, memory_keys, rotations, num_mem_frames, layout, memory_mask)
        return self.norm(x)
