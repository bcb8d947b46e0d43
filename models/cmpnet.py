"""A CMPNET-style network (CMP-PIM, DAC 2018) and its plain-CNN twin, for 32×32×3 inputs (SVHN-sized).

Every 3×3 convolution, the stem included, is an LBC layer in depthwise-separable form: a fixed
depthwise sparse ternary anchor conv (q kernels per input channel, density 0.9), the binary comparison
bit [a > 0] (local-binary-pattern style, so no multiplication remains: the 1×1 conv only adds the
weights its input bits select), and a learnable 1×1 conv. A block is BN → LBC → BN → ReLU with a
parameter-free shortcut (identity, or stride-2 subsampling plus zero channels when the shape changes,
ResNet option A), so no ordinary multiply-accumulate conv is left except the classifier.

``build_cmpnet_cnn`` is the same configuration with ordinary 3×3 convs in place of the LBC layers: the
``cnn`` comparison (accuracy here; cost via the cmp-pim target's cnn baseline).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..passes.comparator.config import LBCConfig
from ..passes.comparator.exporter import LBConv2d

ConvFactory = Callable[[int, int, int, int], nn.Module]

#: (output channels, stride) of the residual blocks after the stem.
CMPNET_LAYOUT: tuple[tuple[int, int], ...] = ((16, 1), (32, 2), (32, 1), (64, 2), (64, 1))
STEM_WIDTH = 16
ANCHORS_PER_CHANNEL = 8
COMPARATOR = "binary"
INPUT_SHAPE = (3, 32, 32)


class ZeroPadShortcut(nn.Module):
    """Parameter-free shortcut: subsample by ``stride`` and append zero channels (ResNet option A)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.extra = cout - cin
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shortcut of the block."""
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra > 0:
            x = torch.cat([x, torch.zeros_like(x[:, : self.extra])], dim=1)
        return x


class CmpBlock(nn.Module):
    """BN → conv (LBC or ordinary) → BN → + shortcut → ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, conv: ConvFactory, index: int):
        super().__init__()
        self.bn_in = nn.BatchNorm2d(cin)
        self.conv = conv(cin, cout, stride, index)
        self.bn = nn.BatchNorm2d(cout)
        self.shortcut = ZeroPadShortcut(cin, cout, stride) if (stride != 1 or cin != cout) else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output."""
        return self.relu(self.bn(self.conv(self.bn_in(x))) + self.shortcut(x))


class CmpNet(nn.Module):
    """Stem conv + residual blocks + global average pool + linear classifier."""

    def __init__(self, conv: ConvFactory, num_classes: int, in_channels: int, stem: ConvFactory | None = None):
        super().__init__()
        stem_conv = (stem or conv)(in_channels, STEM_WIDTH, 1, 0)
        self.stem = nn.Sequential(stem_conv, nn.BatchNorm2d(STEM_WIDTH), nn.ReLU())
        blocks = []
        cin = STEM_WIDTH
        for index, (cout, stride) in enumerate(CMPNET_LAYOUT, start=1):
            blocks.append(CmpBlock(cin, cout, stride, conv, index))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of NCHW images."""
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def lbc_factory(anchors_per_channel: int, density: float, comparator: str, seed: int) -> ConvFactory:
    def make(cin: int, cout: int, stride: int, index: int) -> nn.Module:
        return LBConv2d(cin, cout, 3, stride, anchors=anchors_per_channel, density=density, separable=True,
                        comparator=comparator, seed=seed * 1000 + index)

    return make


def _plain_conv(cin: int, cout: int, stride: int, index: int) -> nn.Module:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def build_cmpnet(
    num_classes: int = 10, in_channels: int = 3, anchors_per_channel: int = ANCHORS_PER_CHANNEL,
    density: float = LBCConfig.density, comparator: str = COMPARATOR, seed: int = 0, lbc_stem: bool = True,
) -> nn.Module:
    """CMPNET-style network: depthwise ternary anchors, binary comparators, 1×1 convs.

    ``lbc_stem=False`` keeps the first conv (on the raw image) an ordinary conv.
    """
    factory = lbc_factory(anchors_per_channel, density, comparator, seed)
    return CmpNet(factory, num_classes, in_channels, stem=None if lbc_stem else _plain_conv)


def build_cmpnet_cnn(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """The plain-CNN twin: the same configuration with ordinary 3×3 convs."""
    return CmpNet(_plain_conv, num_classes, in_channels)
