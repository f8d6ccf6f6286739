"""The SAM decoder's two-way transformer: prompt tokens and image tokens attend to each other.

Each block runs four steps: token self-attention, token -> image cross-attention, a token MLP,
and image -> token cross-attention; a final token -> image attention follows the blocks. Position
encodings are added to queries and keys only, never to values.

Image tokens stay strided views of the (B, C, h, w) input, as in the reference: a linear layer on a
strided input runs as matmul-then-bias rather than a fused addmm, which rounds differently (1 ulp),
so keeping the reference's memory layouts keeps the results bit-identical to it.
"""

from __future__ import annotations

import torch
from torch import nn

from maskvos.model.attention import Attention
from maskvos.model.common import MLP


class TwoWayAttentionBlock(nn.Module):
    """One two-way block. Parameter names follow the SAM2 checkpoints.

    The first block of the stack (`skip_first_pe`) runs its self-attention without position
    encodings and without a residual connection, as SAM does.
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int, skip_first_pe: bool) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_dim, dim, num_layers=2)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate)
        self.skip_first_pe = skip_first_pe

    def forward(
        self, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor, image_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update both streams.

        Arguments:
            tokens: (B, N, C) prompt and output tokens; token_pe: (B, N, C) their initial values.
            image: (B, HW, C) image tokens; image_pe: (1 or B, HW, C) their position encoding.
        Returns:
            tokens (B, N, C) and image tokens (B, HW, C).
        """
        if self.skip_first_pe:
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            with_pe = tokens + token_pe
            tokens = tokens + self.self_attn(with_pe, with_pe, tokens)
        tokens = self.norm1(tokens)

        image_with_pe = image + image_pe  # keys of step 2 and queries of step 4 (image is unchanged in between)
        tokens = self.norm2(tokens + self.cross_attn_token_to_image(tokens + token_pe, image_with_pe, image))
        tokens = self.norm3(tokens + self.mlp(tokens))

        update = self.cross_attn_image_to_token(image_with_pe, tokens + token_pe, tokens)
        del image_with_pe
        update += image  # the residual, in place (addition is commutative, so bit-identical)
        return tokens, self.norm4(update)


class TwoWayTransformer(nn.Module):
    """A stack of two-way blocks and a final token -> image attention (SAM2: depth 2, 8 heads, MLP 2048)."""

    def __init__(
        self,
        depth: int = 2,
        embedding_dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, downsample_rate, skip_first_pe=(i == 0))
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Let tokens and image attend to each other.

        Arguments:
            image: (B, C, h, w) image embedding (with the dense prompt added).
            image_pe: (1 or B, C, h, w) its position encoding.
            tokens: (B, N, C) output and prompt tokens; they also serve as the tokens' position encoding.
        Returns:
            tokens (B, N, C) and image tokens (B, hw, C), token-first.
        """
        image = image.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(2).transpose(1, 2)
        queries = tokens
        for layer in self.layers:
            queries, image = layer(queries, image, tokens, image_pe)
        attn = self.final_attn_token_to_image(queries + tokens, image + image_pe, image)
        return self.norm_final_attn(queries + attn), image
