"""RepViT, the convolutional trunk of EdgeTAM's image encoder (RepViT-M1 in EdgeTAM's checkpoint).

A stride-4 stem of two 3x3 convolutions, then four stages; every stage after the first starts by
halving the resolution. A block mixes space with a depthwise 3x3 + 1x1 pair around an identity
(the re-parameterisable "RepVGG" mixer), optionally re-weights channels (squeeze-excite, every other
block), then adds a 1x1 MLP. Every convolution is followed by batch norm (inference statistics).
Module names follow the checkpoint's `image_encoder.trunk.body.*` keys (timm's layout).
Layout BCHW (stored channels-last inside the trunk); the trunk returns the four stage outputs,
contiguous, finest first (strides 4..32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maskvos.model.config import RepViTConfig


class ConvNorm(nn.Module):
    """A bias-free convolution followed by batch norm (`c`, `bn`). (Folding the batch norm into the
    convolution is 8 % faster but moves features by 1e-6 and whole-video logits by 2e-4 against the
    reference, so it is not done.)"""

    def __init__(self, dim_in: int, dim_out: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(dim_in, dim_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.c(x))


class TokenMixer(nn.Module):
    """Depthwise 3x3 and depthwise 1x1 convolutions (each with batch norm) plus the identity."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = ConvNorm(dim, dim, 3, groups=dim)
        self.conv1 = ConvNorm(dim, dim, 1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.conv1(x) + x


class SqueezeExcite(nn.Module):
    """Channel gates from the spatial mean: 1x1 down, ReLU, 1x1 up, sigmoid."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * gate.sigmoid()


class ConvMlp(nn.Module):
    """1x1 expansion, GELU, 1x1 projection (each with batch norm)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(dim, hidden)
        self.conv2 = ConvNorm(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.gelu(self.conv1(x)))


def _se_width(dim: int) -> int:
    """A quarter of the channels rounded to a multiple of 8 (never below 8): 48 -> 16, 96 -> 24."""
    quarter = dim * 0.25
    return max(8, int(quarter + 4) // 8 * 8)


class RepViTBlock(nn.Module):
    """Token mixer, optional squeeze-excite, then a residual channel MLP."""

    def __init__(self, dim: int, mlp_ratio: int, use_se: bool) -> None:
        super().__init__()
        self.token_mixer = TokenMixer(dim)
        self.se = SqueezeExcite(dim, _se_width(dim)) if use_se else None
        self.channel_mixer = ConvMlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        if self.se is not None:
            x = self.se(x)
        return x + self.channel_mixer(x)


class Downsample(nn.Module):
    """A block at the old width, a strided depthwise 3x3, a 1x1 to the new width, a residual MLP."""

    def __init__(self, dim_in: int, dim_out: int, mlp_ratio: int) -> None:
        super().__init__()
        self.pre_block = RepViTBlock(dim_in, mlp_ratio, use_se=False)
        self.spatial_downsample = ConvNorm(dim_in, dim_in, 3, stride=2, groups=dim_in)
        self.channel_downsample = ConvNorm(dim_in, dim_out)
        self.ffn = ConvMlp(dim_out, dim_out * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel_downsample(self.spatial_downsample(self.pre_block(x)))
        return x + self.ffn(x)


class Stage(nn.Module):
    """An optional downsampling step, then blocks whose squeeze-excite alternates (on, off, on...)."""

    def __init__(self, dim_in: int, dim_out: int, depth: int, mlp_ratio: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = Downsample(dim_in, dim_out, mlp_ratio) if downsample else None
        self.blocks = nn.Sequential(*(RepViTBlock(dim_out, mlp_ratio, use_se=i % 2 == 0) for i in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        return self.blocks(x)


class Stem(nn.Module):
    """Two stride-2 3x3 convolutions (to half the first width, then the first width) with a GELU between."""

    def __init__(self, dim_out: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(3, dim_out // 2, 3, stride=2)
        self.conv2 = ConvNorm(dim_out // 2, dim_out, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.gelu(self.conv1(x)))


class _Body(nn.Module):
    def __init__(self, config: RepViTConfig) -> None:
        super().__init__()
        dims = config.embed_dims
        self.stem = Stem(dims[0])
        for i, (dim, depth) in enumerate(zip(dims, config.depths)):
            self.add_module(f"stages_{i}", Stage(dims[max(i - 1, 0)], dim, depth, config.mlp_ratio, downsample=i > 0))
        self.num_stages = len(dims)


class RepViTTrunk(nn.Module):
    """RepViT feature extractor: (B, 3, H, W) -> four BCHW maps at strides 4, 8, 16, 32."""

    channels_last = False

    def __init__(self, config: RepViTConfig) -> None:
        super().__init__()
        self.body = _Body(config)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        # channels-last activations: the depthwise convolutions run about 15 % faster on CPUs
        x = self.body.stem(images.contiguous(memory_format=torch.channels_last))
        outputs = []
        for i in range(self.body.num_stages):
            x = getattr(self.body, f"stages_{i}")(x)
            outputs.append(x.contiguous())
        return outputs
