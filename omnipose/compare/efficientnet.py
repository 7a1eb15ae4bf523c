"""EfficientNet (B0..B7 and Lite0..Lite4) in plain torch (no torchvision, no timm), for inference.

The architecture is read from a state dict's tensor shapes (block count, channels, kernel sizes,
squeeze-excitation), so every B and Lite scaling loads without a table of variants; a variant's
published scaling (``spec_from_name``) checks a file said to hold it.

Input normalisation differs between the two families (``EfficientNetSpec.input_mean``/``input_std``):
- Lite (TF-Lite port, ReLU6, no squeeze-excitation, fixed stem/head): pixels scaled to
  [-1, 1], i.e. mean 0.5 / std 0.5 per channel (the TF builder's 127/128);
- B0..B7 (lukemelas, swish, squeeze-excitation): ImageNet mean/std.
``tests/test_features.py`` checks the Lite choice on ImageNet classes of real photographs.

Convolutions pad like TensorFlow's 'SAME' (asymmetric for stride 2: one more pixel at the bottom
and right), computed from the actual input size, because the weights were trained that way and
the comparison runs at sizes other than 224.

Module attribute names (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...) follow the
lukemelas key layout so that its files load without renaming and ours can be read by it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from omnipose.core.errors import OmniposeError


class WeightsError(OmniposeError):
    """A weights file is missing, unreadable, or not an EfficientNet state dict of the kind expected."""


# Base (B0 / Lite0) stages: (repeats, kernel, stride, expand ratio, input channels, output channels).
_BASE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_STAGE_STRIDES = tuple(stage[2] for stage in _BASE_STAGES)
# (width multiplier, depth multiplier) of each published variant.
_SCALING = {
    "efficientnet-b0": (1.0, 1.0), "efficientnet-b1": (1.0, 1.1), "efficientnet-b2": (1.1, 1.2),
    "efficientnet-b3": (1.2, 1.4), "efficientnet-b4": (1.4, 1.8), "efficientnet-b5": (1.6, 2.2),
    "efficientnet-b6": (1.8, 2.6), "efficientnet-b7": (2.0, 3.1),
    "efficientnet-lite0": (1.0, 1.0), "efficientnet-lite1": (1.0, 1.1), "efficientnet-lite2": (1.1, 1.2),
    "efficientnet-lite3": (1.2, 1.4), "efficientnet-lite4": (1.4, 1.8),
}  # fmt: skip
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which all these weights were trained with


def canonical_name(name: str) -> str:
    """'lite0', 'efficientnet_lite0', 'EfficientNet-B4' -> 'efficientnet-lite0' / 'efficientnet-b4'."""
    key = name.strip().lower().replace("_", "-")
    if not key.startswith("efficientnet-"):
        key = "efficientnet-" + key
    if key not in _SCALING:
        raise WeightsError(
            f"unknown EfficientNet variant '{name}'. Use one of {', '.join(sorted(_SCALING))} "
            "(the lite0/lite2 weights ship with omnipose), or give the path of a state-dict file."
        )
    return key


# ----------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class BlockSpec:
    """One mobile inverted bottleneck (MBConv) block."""

    in_channels: int
    out_channels: int
    expanded_channels: int  # == in_channels when the block has no expansion conv
    kernel_size: int
    stride: int
    squeeze_channels: int = 0  # 0: no squeeze-excitation (Lite)

    @property
    def has_residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


@dataclass(frozen=True)
class EfficientNetSpec:
    """The shape of one EfficientNet: its blocks, stem and head widths, activation and input normalisation."""

    blocks: tuple[BlockSpec, ...]
    stem_channels: int
    head_channels: int
    num_classes: int  # 0: no classifier in the weights (feature extraction only)
    lite: bool  # Lite: ReLU6, no squeeze-excitation, inputs in [-1, 1]; B: swish, SE, ImageNet mean/std

    @property
    def activation(self) -> str:
        return "relu6" if self.lite else "swish"

    @property
    def input_mean(self) -> tuple[float, float, float]:
        return LITE_MEAN if self.lite else IMAGENET_MEAN

    @property
    def input_std(self) -> tuple[float, float, float]:
        return LITE_STD if self.lite else IMAGENET_STD

    def block_strides(self) -> list[int]:
        """Total stride (input pixels per feature cell) at the output of each block."""
        stride, strides = 2, []  # the stem halves the resolution
        for block in self.blocks:
            stride *= block.stride
            strides.append(stride)
        return strides

    def available_strides(self) -> list[int]:
        return sorted(set(self.block_strides()))


def _round_width(channels: int, width: float, divisor: int = 8) -> int:
    """Channels after width scaling, rounded to a multiple of 8 and never more than 10% below."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def spec_from_name(name: str, num_classes: int = 1000) -> EfficientNetSpec:
    """The published architecture of a named variant (B0..B7, Lite0..Lite4).

    Lite keeps the stem (32), head (1280) and the first and last stages' repeats unscaled, and drops
    squeeze-excitation; B scales all of them and uses SE with ratio 0.25 of the block's input.
    """
    key = canonical_name(name)
    width, depth = _SCALING[key]
    lite = "lite" in key
    blocks = []
    last = len(_BASE_STAGES) - 1
    for index, (repeats, kernel, stride, expand, cin, cout) in enumerate(_BASE_STAGES):
        fixed = lite and index in (0, last)
        count = repeats if fixed else int(math.ceil(depth * repeats))
        in_channels = 32 if (lite and index == 0) else _round_width(cin, width)
        out_channels = _round_width(cout, width)
        for repeat in range(count):
            block_in = in_channels if repeat == 0 else out_channels
            squeeze = 0 if lite else max(1, int(block_in * 0.25))
            blocks.append(
                BlockSpec(block_in, out_channels, block_in * expand, kernel, stride if repeat == 0 else 1, squeeze)
            )
    stem = 32 if lite else _round_width(32, width)
    head = 1280 if lite else _round_width(1280, width)
    return EfficientNetSpec(tuple(blocks), stem, head, num_classes, lite)


_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.")


def spec_from_state_dict(state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> EfficientNetSpec:
    """Read the architecture from the tensor shapes of a lukemelas-layout state dict.

    Stages are where a block changes the channel count (true of every published variant); their
    strides are the fixed (1, 2, 2, 2, 1, 2, 1). Raises WeightsError naming the missing keys when
    the dict is not an EfficientNet of this layout.
    """
    required = ("_conv_stem.weight", "_bn0.weight", "_conv_head.weight", "_bn1.weight")
    missing = [key for key in required if key not in state_dict]
    if missing:
        sample = ", ".join(list(state_dict)[:4]) or "nothing"
        raise WeightsError(
            f"{source} is not an EfficientNet state dict in the lukemelas/efficientnet_pytorch layout: it lacks "
            f"{', '.join(missing)} (its first keys are {sample}). Expected keys such as _conv_stem.weight, "
            "_blocks.0._depthwise_conv.weight, _conv_head.weight, _fc.weight."
        )
    count = 1 + max((int(m.group(1)) for key in state_dict if (m := _BLOCK_KEY.match(key))), default=-1)
    if count == 0:
        raise WeightsError(f"{source} has no _blocks.N.* keys: it is not an EfficientNet state dict.")
    blocks: list[BlockSpec] = []
    stage = -1
    for index in range(count):
        prefix = f"_blocks.{index}."
        try:
            depthwise = state_dict[prefix + "_depthwise_conv.weight"]
            project = state_dict[prefix + "_project_conv.weight"]
        except KeyError as error:
            raise WeightsError(f"{source} lacks {error.args[0]}: block {index} is incomplete.") from None
        expanded, kernel = int(depthwise.shape[0]), int(depthwise.shape[-1])
        out_channels = int(project.shape[0])
        expand_key = prefix + "_expand_conv.weight"
        in_channels = int(state_dict[expand_key].shape[1]) if expand_key in state_dict else expanded
        squeeze_key = prefix + "_se_reduce.weight"
        squeeze = int(state_dict[squeeze_key].shape[0]) if squeeze_key in state_dict else 0
        if in_channels != out_channels or index == 0:
            stage += 1
        if stage >= len(_STAGE_STRIDES):
            raise WeightsError(
                f"{source} has more than {len(_STAGE_STRIDES)} stages: not a B0..B7 / Lite EfficientNet."
            )
        first_of_stage = index == 0 or in_channels != out_channels
        stride = _STAGE_STRIDES[stage] if first_of_stage else 1
        blocks.append(BlockSpec(in_channels, out_channels, expanded, kernel, stride, squeeze))
    if stage != len(_STAGE_STRIDES) - 1:
        raise WeightsError(
            f"{source} has {stage + 1} stages, expected {len(_STAGE_STRIDES)}: not a B0..B7 / Lite EfficientNet."
        )
    has_se = [block.squeeze_channels > 0 for block in blocks]
    if any(has_se) and not all(has_se):
        raise WeightsError(f"{source} has squeeze-excitation in some blocks only: not a B0..B7 / Lite EfficientNet.")
    num_classes = int(state_dict["_fc.weight"].shape[0]) if "_fc.weight" in state_dict else 0
    return EfficientNetSpec(
        tuple(blocks),
        stem_channels=int(state_dict["_conv_stem.weight"].shape[0]),
        head_channels=int(state_dict["_conv_head.weight"].shape[0]),
        num_classes=num_classes,
        lite=not has_se[0],
    )


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding for the actual input size (extra pixel bottom/right)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ):
        # Stride 1 pads symmetrically, which nn.Conv2d does natively (and faster than F.pad).
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding=kernel_size // 2 if stride == 1 else 0,
            groups=groups,
            bias=bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            pads = []
            for size, kernel, stride in (
                (x.shape[-1], self.kernel_size[1], self.stride[1]),
                (x.shape[-2], self.kernel_size[0], self.stride[0]),
            ):
                total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


def _activation(lite: bool) -> nn.Module:
    # In place is safe: every activation here follows a freshly computed batch norm.
    return nn.ReLU6(inplace=True) if lite else nn.SiLU(inplace=True)


class MBConvBlock(nn.Module):
    """Inverted bottleneck: 1x1 expand, depthwise kxk, optional squeeze-excitation, 1x1 project, residual."""

    def __init__(self, spec: BlockSpec, lite: bool):
        super().__init__()
        self.spec = spec
        if spec.expanded_channels != spec.in_channels:
            self._expand_conv = SameConv2d(spec.in_channels, spec.expanded_channels, 1)
            self._bn0 = nn.BatchNorm2d(spec.expanded_channels, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(
            spec.expanded_channels, spec.expanded_channels, spec.kernel_size, spec.stride, groups=spec.expanded_channels
        )
        self._bn1 = nn.BatchNorm2d(spec.expanded_channels, eps=BN_EPS)
        if spec.squeeze_channels:
            self._se_reduce = nn.Conv2d(spec.expanded_channels, spec.squeeze_channels, 1, bias=True)
            self._se_expand = nn.Conv2d(spec.squeeze_channels, spec.expanded_channels, 1, bias=True)
        self._project_conv = SameConv2d(spec.expanded_channels, spec.out_channels, 1)
        self._bn2 = nn.BatchNorm2d(spec.out_channels, eps=BN_EPS)
        self.act = _activation(lite)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, H, W) -> (B, out_channels, ceil(H / stride), ceil(W / stride))."""
        y = x
        if self.spec.expanded_channels != self.spec.in_channels:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        if self.spec.squeeze_channels:
            gate = self._se_expand(self.act(self._se_reduce(y.mean((2, 3), keepdim=True))))
            y = y * torch.sigmoid(gate)
        y = self._bn2(self._project_conv(y))
        # Drop-connect is a training regulariser; this module only ever runs inference.
        return y + x if self.spec.has_residual else y


class EfficientNet(nn.Module):
    """EfficientNet (B or Lite) for inference: ImageNet logits or multi-scale feature maps.

    Inputs are already normalised (see ``spec.input_mean`` / ``input_std``); ``FeatureExtractor``
    does that for images in [0, 1].
    """

    def __init__(self, spec: EfficientNetSpec):
        super().__init__()
        self.spec = spec
        self._conv_stem = SameConv2d(3, spec.stem_channels, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(spec.stem_channels, eps=BN_EPS)
        self._blocks = nn.ModuleList(MBConvBlock(block, spec.lite) for block in spec.blocks)
        self._conv_head = SameConv2d(spec.blocks[-1].out_channels, spec.head_channels, 1)
        self._bn1 = nn.BatchNorm2d(spec.head_channels, eps=BN_EPS)
        if spec.num_classes:
            self._fc = nn.Linear(spec.head_channels, spec.num_classes)
        self.act = _activation(spec.lite)

    def stride_outputs(self, strides: Sequence[int]) -> list[int]:
        """Index of the last block at each requested total stride (the deepest features at that scale)."""
        block_strides = self.spec.block_strides()
        indices = []
        for stride in strides:
            matches = [i for i, s in enumerate(block_strides) if s == stride]
            if not matches:
                raise WeightsError(
                    f"no feature map at stride {stride}: this network offers strides {self.spec.available_strides()}."
                )
            indices.append(matches[-1])
        return indices

    def forward_features(self, x: torch.Tensor, strides: Sequence[int]) -> list[torch.Tensor]:
        """Feature maps at the given total strides.

        x: (B, 3, H, W) normalised. Returns one (B, C_s, ceil(H / s), ceil(W / s)) per stride s,
        in the order asked; only the blocks needed for the deepest stride run.
        """
        wanted = self.stride_outputs(strides)
        last = max(wanted)
        outputs: dict[int, torch.Tensor] = {}
        x = self.act(self._bn0(self._conv_stem(x)))
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in wanted:
                outputs[index] = x
            if index == last:
                break
        return [outputs[i] for i in wanted]

    def fuse_batchnorm(self) -> "EfficientNet":
        """Fold every batch norm into the convolution before it (in place), for faster inference.

        The outputs stay the same up to float rounding; the state dict then has conv biases and no
        ``_bn*`` keys, so save weights from an unfused network (``load_efficientnet``).
        """
        pairs = [(self, "_conv_stem", "_bn0"), (self, "_conv_head", "_bn1")]
        for block in self._blocks:
            if hasattr(block, "_expand_conv"):
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        with torch.no_grad():
            for owner, conv_name, bn_name in pairs:
                conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
                if isinstance(bn, nn.Identity):
                    continue
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                bias = bn.bias - bn.running_mean * scale
                if conv.bias is not None:
                    bias = bias + conv.bias * scale
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter(bias, requires_grad=False)
                setattr(owner, bn_name, nn.Identity())
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits. x: (B, 3, H, W) normalised -> (B, num_classes)."""
        if not self.spec.num_classes:
            raise WeightsError("these weights carry no classifier (_fc): use forward_features instead.")
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))
