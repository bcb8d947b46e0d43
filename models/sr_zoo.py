"""Super-resolution networks of the zoo: input a low-resolution RGB image in [0, 1], output the image S times
larger. Both upsample by pixel shuffle, which the ONNX exporters write as DepthToSpace, and take any input
size (their ONNX export has symbolic height and width).

* ``espcn`` — ESPCN (Shi et al., CVPR 2016): conv 5×5 → 64, conv 3×3 → 32, conv 3×3 → 3·S², pixel shuffle.
  ReLU replaces the paper's tanh, so the hidden features have the zeros Feature Regularization works on.
* ``edsr-small`` — EDSR's baseline form (Lim et al., CVPRW 2017) at 32 channels and 8 residual blocks: mean
  shift, head conv, blocks of conv-ReLU-conv plus the identity (no BatchNorm), a body conv with a long skip,
  and an upsampler of conv → pixel shuffle (×2 or ×3; ×4 as two ×2 stages), then the mean back.

Sources: docs/sources.md.
"""

from __future__ import annotations

from torch import nn

RGB_MEAN = 0.45  # EDSR subtracts the training set's RGB mean; one value for all channels here (an assumption)


class ESPCN(nn.Module):
    image_to_image = True  # exported with symbolic height and width, output ``image`` (models/train.py)

    def __init__(self, scale: int = 2, in_channels: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 5, padding=2), nn.ReLU(inplace=True),
            nn.Conv2d(64, 32, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.upsample = nn.Sequential(nn.Conv2d(32, in_channels * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x):
        return self.upsample(self.features(x))


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


def _upsampler(channels: int, scale: int, out_channels: int) -> nn.Sequential:
    stages = [2, 2] if scale == 4 else [scale]
    layers: list[nn.Module] = []
    for factor in stages:
        layers += [nn.Conv2d(channels, channels * factor * factor, 3, padding=1), nn.PixelShuffle(factor)]
    layers.append(nn.Conv2d(channels, out_channels, 3, padding=1))
    return nn.Sequential(*layers)


class EDSR(nn.Module):
    image_to_image = True

    def __init__(self, scale: int = 2, in_channels: int = 3, channels: int = 32, blocks: int = 8):
        super().__init__()
        self.head = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(channels) for _ in range(blocks)], nn.Conv2d(channels, channels, 3, padding=1))
        self.tail = _upsampler(channels, scale, in_channels)

    def forward(self, x):
        h = self.head(x - RGB_MEAN)
        return self.tail(h + self.body(h)) + RGB_MEAN


def espcn(scale: int = 2, in_channels: int = 3) -> nn.Module:
    return ESPCN(scale, in_channels)


def edsr_small(scale: int = 2, in_channels: int = 3) -> nn.Module:
    return EDSR(scale, in_channels, channels=32, blocks=8)
