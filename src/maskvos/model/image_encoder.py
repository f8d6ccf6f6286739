"""Image encoder: a Hiera trunk and a feature-pyramid neck.

The trunk works on channel-last token maps (B, H, W, C). A 7x7 stride-4 convolution embeds patches and
a learned position embedding is added: a coarse background map resized (bicubic) to the token grid plus
a small window-sized map tiled over it. Then come stages of pre-norm transformer blocks, each attending
within non-overlapping windows or over the whole map. The first block of every later stage max-pools
its queries (and its shortcut) by `q_stride`, halving the resolution, and widens the channels by
`dim_mul` and the heads by `head_mul`; that block still uses the previous stage's window size.

The neck projects each stage to `d_model` channels (1x1), adds nearest-upsampled coarser features at
the `fpn_top_down_levels`, gives each level a sine position encoding, and drops the coarsest level
(stride 32), as SAM2's `scalp=1` does. Parameter names follow the SAM2 checkpoints (`image_encoder.*`).

Numerics follow the reference's order of operations; the differences are rearrangements that change
only float rounding (about 1e-6): the bicubic resize is done as two matrix products, the 1x1 lateral
convolutions as matrix products on channel-last tokens, max pooling as strided maxima, the window
merge fused into the residual sum, and the nearest upsampling as a broadcast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maskvos.errors import ConfigError
from maskvos.model.common import MLP
from maskvos.model.config import HieraConfig, RepViTConfig, Trunk, ViTConfig
from maskvos.model.position_encoding import SinePositionEncoding2d

# The input size must be a multiple of this: the window position embedding tiles the stride-4 grid in
# steps of 8 tokens, and every stage must halve exactly for the top-down sum.
SIZE_MULTIPLE = 32


def _padded(length: int, size: int) -> int:
    """`length` rounded up to a multiple of `size`."""
    return length + (-length % size)


def _split_windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """Cut a (B, H, W, C) map into size x size windows, zero-padding bottom/right first.

    Returns (B * windows, size, size, C), windows in row-major order per image.
    """
    b, h, w, c = x.shape
    hp, wp = _padded(h, size), _padded(w, size)
    if (hp, wp) != (h, w):
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    grid = x.view(b, hp // size, size, wp // size, size, c).transpose(2, 3)
    return grid.reshape(-1, size, size, c)


def _add_windows(base: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """`base` (B, H, W, C) plus the map that `windows` (B * n, s, s, C) tile (padding cut off).

    When no padding is involved the window layout is undone inside the sum, without a separate copy.
    """
    b, h, w, c = base.shape
    size = windows.shape[1]
    hp, wp = _padded(h, size), _padded(w, size)
    grid = windows.view(b, hp // size, wp // size, size, size, c).transpose(2, 3)  # (B, H/s, s, W/s, s, C)
    if (hp, wp) == (h, w):
        return (base.view(b, h // size, size, w // size, size, c) + grid).reshape(b, h, w, c)
    return base + grid.reshape(b, hp, wp, c)[:, :h, :w]


def _max_pool(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Max-pool a (B, H, W, ...) map over non-overlapping stride windows (remainder rows/cols dropped).

    Returns (B, H // sh, W // sw, ...), contiguous; the same values as `max_pool2d(kernel=stride)`.
    """
    sh, sw = stride
    h, w = x.shape[1] // sh * sh, x.shape[2] // sw * sw
    out = None
    for i in range(sh):
        for j in range(sw):
            part = x[:, i:h:sh, j:w:sw]
            out = part if out is None else torch.maximum(out, part)
    return out.contiguous()


class PooledSelfAttention(nn.Module):
    """Multi-head self-attention on a (B, H, W, C) map whose queries may be max-pooled by `q_stride`,
    which downsamples the output map."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: tuple[int, int] | None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H', W', C_out); H' = H / q_stride with pooling, else H."""
        b, h, w, _ = x.shape
        q, k, v = self.qkv(x).view(b, h, w, 3, self.num_heads, -1).unbind(3)  # (B, H, W, heads, c)
        if self.q_stride is not None:
            q = _max_pool(q, self.q_stride)
        hq, wq = q.shape[1:3]
        head_dim = q.shape[-1]
        out = F.scaled_dot_product_attention(
            q.reshape(b, hq * wq, self.num_heads, head_dim).transpose(1, 2),
            k.reshape(b, h * w, self.num_heads, head_dim).transpose(1, 2),
            v.reshape(b, h * w, self.num_heads, head_dim).transpose(1, 2),
        )  # (B, heads, N, c)
        return self.proj(out.transpose(1, 2).reshape(b, hq, wq, -1))


class HieraBlock(nn.Module):
    """Pre-norm attention (windowed when `window_size` > 0, else global) and MLP, each with a residual.

    A block that changes width projects its shortcut from the normed input (`proj`); one that pools its
    queries max-pools the shortcut too (also without `proj`, where the reference would fail on a shape
    mismatch; no published configuration pools without widening).
    """

    def __init__(
        self, dim: int, dim_out: int, num_heads: int, window_size: int, q_stride: tuple[int, int] | None
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = PooledSelfAttention(dim, dim_out, num_heads, q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, 4 * dim_out, dim_out, num_layers=2, activation=F.gelu)
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H', W', C_out)."""
        normed = self.norm1(x)
        shortcut = x
        if self.proj is not None:
            shortcut = self.proj(normed)
            if self.q_stride is not None:
                shortcut = _max_pool(shortcut, self.q_stride)
        elif self.q_stride is not None:
            shortcut = _max_pool(x, self.q_stride)
        if self.window_size > 0:
            x = _add_windows(shortcut, self.attn(_split_windows(normed, self.window_size)))
        else:
            x = shortcut + self.attn(normed)
        return x + self.mlp(self.norm2(x))


def _stage_plan(cfg: HieraConfig) -> list[tuple[int, int, int, int, bool]]:
    """Per block: (dim_in, dim_out, heads, window size, pools queries)."""
    stage_ends = [sum(cfg.stages[: i + 1]) - 1 for i in range(len(cfg.stages))]
    pooling_blocks = {end + 1 for end in stage_ends[: cfg.q_pool]}
    dim, heads, stage = cfg.embed_dim, cfg.num_heads, 0
    plan = []
    for i in range(sum(cfg.stages)):
        window = 0 if i in cfg.global_att_blocks else cfg.window_spec[stage]
        dim_out = dim
        if i - 1 in stage_ends:  # first block of a later stage: widen, keep the old window
            dim_out = int(dim * cfg.dim_mul)
            heads = int(heads * cfg.head_mul)
            stage += 1
        plan.append((dim, dim_out, heads, window, i in pooling_blocks))
        dim = dim_out
    return plan


class _PatchEmbed(nn.Module):
    """7x7 stride-4 convolution (a module of its own for the checkpoint's `patch_embed.proj` names)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H/4, W/4, C), contiguous."""
        x = self.proj(images.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)
        return x.contiguous()  # a no-op where the convolution kept the channels-last layout


class HieraTrunk(nn.Module):
    """The Hiera backbone: images -> one channel-last map per stage."""

    def __init__(self, cfg: HieraConfig) -> None:
        super().__init__()
        self.patch_embed = _PatchEmbed(cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.embed_dim, *cfg.window_pos_embed_bkg_spatial_size))
        first_window = cfg.window_spec[0]
        self.pos_embed_window = nn.Parameter(torch.zeros(1, cfg.embed_dim, first_window, first_window))
        plan = _stage_plan(cfg)
        self.blocks = nn.ModuleList(
            HieraBlock(dim, dim_out, heads, window, cfg.q_stride if pools else None)
            for dim, dim_out, heads, window, pools in plan
        )
        self.stage_ends = [sum(cfg.stages[: i + 1]) - 1 for i in range(len(cfg.stages))]
        self._resize_cache: dict[tuple[int, int, str], torch.Tensor] = {}

    def _bicubic_matrix(self, size_in: int, size_out: int, device: torch.device) -> torch.Tensor:
        """(size_out, size_in) weights of a 1-D bicubic resize as `F.interpolate` does it
        (align_corners=False, borders clamped); cached per size."""
        key = (size_in, size_out, str(device))
        matrix = self._resize_cache.get(key)
        if matrix is None:
            # a normal tensor even when first asked for under inference mode: later calls with autograd
            # on save it for the backward pass
            with torch.inference_mode(False), torch.no_grad():
                basis = torch.eye(size_in, device=device)[:, None, :, None]  # (in, 1, in, 1): unit impulses
                resized = F.interpolate(basis, size=(size_out, 1), mode="bicubic", align_corners=False)
                matrix = resized[:, 0, :, 0].t().contiguous()
            self._resize_cache[key] = matrix
        return matrix

    def position_embedding(self, height: int, width: int) -> torch.Tensor:
        """The background embedding resized (bicubic) to (H, W) plus the tiled window embedding.

        Returns (H, W, C), contiguous, in the parameters' dtype (autocast off, as the reference's
        interpolation is). H and W must be multiples of the window embedding's size.
        """
        bkg = self.pos_embed[0].permute(1, 2, 0)  # (h, w, C)
        win = self.pos_embed_window[0].permute(1, 2, 0)  # (s, s, C)
        h_in, w_in, c = bkg.shape
        s = win.shape[0]
        with torch.autocast(bkg.device.type, enabled=False):
            rows = self._bicubic_matrix(h_in, height, bkg.device).to(bkg.dtype)  # (H, h)
            cols = self._bicubic_matrix(w_in, width, bkg.device).to(bkg.dtype)  # (W, w)
            resized = torch.matmul(rows, bkg.reshape(h_in, w_in * c)).view(height, w_in, c)
            resized = torch.matmul(cols, resized)  # (H, W, C)
        tiled = resized.view(height // s, s, width // s, s, c) + win.view(1, s, 1, s, c)
        return tiled.view(height, width, c)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> [(B, H_i, W_i, C_i) for each stage], highest resolution first
        (strides 4, 8, 16, 32)."""
        x = self.patch_embed(images)
        x = x + self.position_embedding(x.shape[1], x.shape[2])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x)
        return outputs


class _Lateral(nn.Module):
    """A 1x1 projection (a module of its own for the checkpoint's `convs.N.conv` names)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, kernel_size=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Channel-last (B, H, W, C) -> BCHW (B, D, H, W), contiguous, as a matrix product."""
        b, h, w, c = tokens.shape
        weight = self.conv.weight.view(-1, c)
        out = torch.baddbmm(
            self.conv.bias.view(1, -1, 1), weight.expand(b, -1, -1), tokens.reshape(b, h * w, c).transpose(1, 2)
        )
        return out.view(b, -1, h, w)


class FeaturePyramidNeck(nn.Module):
    """1x1 lateral projections with top-down fusion (nearest 2x upsampling, sum) at chosen levels.

    `convs[0]` projects the coarsest stage (the checkpoint's order); level 0 is the finest.
    """

    def __init__(
        self, d_model: int, stage_dims: tuple[int, ...], top_down_levels: tuple[int, ...], channels_last: bool = True
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_Lateral(dim, d_model) for dim in reversed(stage_dims))
        self.channels_last = channels_last
        self.top_down_levels = frozenset(top_down_levels)
        self.position_encoding = SinePositionEncoding2d(d_model)

    def forward(
        self, stage_feats: list[torch.Tensor], num_levels: int
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Fuse stage maps, finest first: channel-last (B, H_i, W_i, C_i) (Hiera), or BCHW when the neck
        was built with `channels_last=False` (RepViT).

        Returns the features (B, D, H_i, W_i) of the `num_levels` finest levels and their sine
        position encodings (float32, cast to the features' dtype as the reference does).
        """
        coarsest = len(stage_feats) - 1
        fused: list[torch.Tensor] = []  # coarsest first
        above = None
        for level in range(coarsest, -1, -1):
            proj = self.convs[coarsest - level]
            lateral = proj(stage_feats[level]) if self.channels_last else proj.conv(stage_feats[level])
            if level in self.top_down_levels and above is not None:
                b, d, h, w = lateral.shape
                # nearest 2x upsampling of the coarser level, in float32 as the reference does
                upsampled = above.float().view(b, d, h // 2, 1, w // 2, 1)
                above = (lateral.view(b, d, h // 2, 2, w // 2, 2) + upsampled).view(b, d, h, w)
            else:
                above = lateral
            fused.append(above)
        feats = fused[::-1][:num_levels]
        return feats, [self.position_encoding(f).to(f.dtype) for f in feats]


class ImageEncoder(nn.Module):
    """Trunk (Hiera, or EdgeTAM's RepViT) + FPN neck, returning the three finest levels (strides 4, 8,
    16); or EfficientTAM's ViT + its one-level neck, returning the stride-16 level only."""

    def __init__(self, trunk: Trunk, d_model: int = 256, fpn_top_down_levels: tuple[int, ...] = (2, 3)) -> None:
        super().__init__()
        self.num_levels = len(trunk.stages) - 1  # the coarsest level is dropped (the reference's scalp=1)
        if isinstance(trunk, ViTConfig):
            from maskvos.model.vit import SingleLevelNeck, ViTTrunk

            self.trunk: nn.Module = ViTTrunk(trunk)
            self.neck: nn.Module = SingleLevelNeck(trunk.embed_dim, d_model)
            self.num_levels = 1
            return
        if isinstance(trunk, RepViTConfig):
            from maskvos.model.repvit import RepViTTrunk

            self.trunk = RepViTTrunk(trunk)
            channels_last = False
        else:
            self.trunk = HieraTrunk(trunk)
            channels_last = True
        self.neck = FeaturePyramidNeck(d_model, tuple(reversed(trunk.channel_list)), fpn_top_down_levels, channels_last)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Encode normalised images.

        Arguments:
            images: (B, 3, H, W) normalised; H and W multiples of 32 (any aspect ratio).
        Returns:
            fpn_feats: 3 levels, finest first (strides 4, 8, 16), each (B, d_model, H/s, W/s), contiguous.
            pos_encs: their sine position encodings, same shapes, float32 (the features' dtype); batch-
                expanded views of a cached tensor, not to be modified in place.
        """
        height, width = images.shape[-2:]
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
            raise ConfigError(
                f"Image size {height}x{width} is not a multiple of {SIZE_MULTIPLE}; "
                f"resize the input to a multiple of {SIZE_MULTIPLE} pixels."
            )
        return self.neck(self.trunk(images), self.num_levels)
