"""Torch definitions of the CNNs pimc is tested on, written from scratch (no torchvision)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..compiler.errors import PimcError
from .sr_zoo import edsr_small, espcn


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + ReLU with 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Classifier(nn.Module):
    """Feature extractor, global average pool, flatten, linear head."""

    def __init__(self, features: nn.Module, width: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of NCHW images."""
        x = torch.flatten(self.pool(self.features(x)), 1)
        return self.fc(self.dropout(x))


class LeNet5(nn.Module):
    """LeNet-5: two 5x5 conv + max-pool stages and three fully connected layers (32x32 input)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(inplace=True),
            nn.Linear(120, 84), nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of 32x32 images."""
        return self.classifier(torch.flatten(self.features(x), 1))


class LeNet5Caffe(nn.Module):
    """Caffe's LeNet-5 (``examples/mnist/lenet_train_test.prototxt``), the model ADMM-NN prunes 85×:
    conv 20@5x5 → max-pool 2 → conv 50@5x5 → max-pool 2 → FC 800→500 → ReLU → FC 500→10 on 28x28 input.

    As in the prototxt there is no ReLU after the convs (the max-pools are the only non-linearity there);
    430,500 weights + 580 biases (the classic ``lenet5`` has 61,470 weights).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 20, 5), nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(50 * 4 * 4, 500), nn.ReLU(inplace=True),
                                        nn.Linear(500, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of 28x28 images."""
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs) with a 1x1 conv shortcut when the shape changes."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual output."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """ResNet bottleneck block (1x1, 3x3, 1x1) with 4x expansion."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual output."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    """Identity, or a 1x1 conv + BN projection (option B) when the shape changes."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


def _stage(block: type[nn.Module], cin: int, width: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    """A stage of ``blocks`` residual blocks; returns it and its output channel count."""
    layers = []
    for i in range(blocks):
        layers.append(block(cin, width, stride if i == 0 else 1))
        cin = width * block.expansion
    return nn.Sequential(*layers), cin


def _resnet(
    block: type[nn.Module], stem: nn.Module, stem_width: int, widths: list[int], blocks: list[int],
    num_classes: int,
) -> Classifier:
    """Stem + residual stages (first at stride 1, the rest at stride 2) + classifier head."""
    layers: list[nn.Module] = [stem]
    cin = stem_width
    for i, (width, count) in enumerate(zip(widths, blocks, strict=True)):
        stage, cin = _stage(block, cin, width, count, 1 if i == 0 else 2)
        layers.append(stage)
    return Classifier(nn.Sequential(*layers), cin, num_classes)


def lenet5(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """LeNet-5 for 32x32 inputs."""
    return LeNet5(num_classes, in_channels)


def lenet5_caffe(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Caffe LeNet-5 (ADMM-NN's LeNet-5) for 28x28 inputs."""
    return LeNet5Caffe(num_classes, in_channels)


def resnet20(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """CIFAR ResNet-20: 3 stages of 3 basic blocks, 16/32/64 channels."""
    return _resnet(BasicBlock, conv_bn_relu(in_channels, 16), 16, [16, 32, 64], [3, 3, 3], num_classes)


def resnet18(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """CIFAR ResNet-18: 3x3 stem, 4 stages of 2 basic blocks, 64..512 channels."""
    return _resnet(BasicBlock, conv_bn_relu(in_channels, 64), 64, [64, 128, 256, 512], [2, 2, 2, 2], num_classes)


def resnet50(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """ImageNet ResNet-50: 7x7/2 stem + max-pool, bottleneck stages 3/4/6/3."""
    stem = nn.Sequential(conv_bn_relu(in_channels, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
    return _resnet(Bottleneck, stem, 64, [64, 128, 256, 512], [3, 4, 6, 3], num_classes)


VGG16_LAYOUT: list[int | str] = [
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
]


def vgg16(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """CIFAR VGG-16 with BatchNorm and a single linear classifier."""
    layers: list[nn.Module] = []
    cin = in_channels
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers.append(conv_bn_relu(cin, int(item)))
            cin = int(item)
    return Classifier(nn.Sequential(*layers), cin, num_classes)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection, residual when possible."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [conv_bn_relu(cin, hidden, 1)] if expand != 1 else []
        layers += [
            conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output."""
        out = self.block(x)
        return x + out if self.residual else out


MOBILENETV2_CIFAR: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
]


def mobilenetv2(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """CIFAR MobileNetV2 (stride-1 stem and second stage, ReLU instead of ReLU6 for simpler graphs)."""
    layers: list[nn.Module] = [conv_bn_relu(in_channels, 32)]
    cin = 32
    for expand, cout, repeats, stride in MOBILENETV2_CIFAR:
        for i in range(repeats):
            layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
            cin = cout
    layers.append(conv_bn_relu(cin, 1280, 1))
    return Classifier(nn.Sequential(*layers), 1280, num_classes)


def digits_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Small CNN for 8x8 digits: three 3x3 conv+BN+ReLU layers, one max-pool, GAP, linear."""
    features = nn.Sequential(
        conv_bn_relu(in_channels, 16), conv_bn_relu(16, 32), nn.MaxPool2d(2), conv_bn_relu(32, 64),
    )
    return Classifier(features, 64, num_classes)


def _cmpnet(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    from .cmpnet import build_cmpnet

    return build_cmpnet(num_classes=num_classes, in_channels=in_channels)


def _cmpnet_cnn(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    from .cmpnet import build_cmpnet_cnn

    return build_cmpnet_cnn(num_classes=num_classes, in_channels=in_channels)


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry: how to build the model and what it expects. A super-resolution model (``task="sr"``) is
    built with ``scale`` instead of a class count; its input shape is the low-resolution training patch."""

    name: str
    builder: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]
    num_classes: int
    description: str
    task: str = "classify"


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("lenet5", lenet5, (1, 32, 32), 10, "LeNet-5, 5x5 convs, 32x32 grayscale"),
        ModelSpec("lenet5_caffe", lenet5_caffe, (1, 28, 28), 10,
                  "Caffe LeNet-5 (ADMM-NN's LeNet-5): conv 20/50@5x5, FC 800-500-10, 28x28 grayscale"),
        ModelSpec("resnet20", resnet20, (3, 32, 32), 10, "CIFAR ResNet-20, 16/32/64 channels"),
        ModelSpec("resnet18", resnet18, (3, 32, 32), 10, "CIFAR ResNet-18, 64..512 channels"),
        ModelSpec("vgg16", vgg16, (3, 32, 32), 10, "CIFAR VGG-16 with BatchNorm"),
        ModelSpec("mobilenetv2", mobilenetv2, (3, 32, 32), 10, "CIFAR MobileNetV2, depthwise separable"),
        ModelSpec("resnet50", resnet50, (3, 224, 224), 1000, "ImageNet ResNet-50, bottleneck blocks"),
        ModelSpec("digits_cnn", digits_cnn, (1, 8, 8), 10, "small CNN for sklearn 8x8 digits"),
        ModelSpec("cmpnet", _cmpnet, (3, 32, 32), 10,
                  "CMPNET-style LBC network (depthwise ternary anchors, binary comparators)"),
        ModelSpec("cmpnet_cnn", _cmpnet_cnn, (3, 32, 32), 10, "plain-CNN twin of cmpnet (ordinary convs)"),
        ModelSpec("espcn", espcn, (3, 24, 24), 2, "ESPCN super-resolution (x2 by default), 64/32 channels, "
                  "pixel shuffle", task="sr"),
        ModelSpec("edsr-small", edsr_small, (3, 24, 24), 2, "EDSR baseline form, 32 channels, 8 residual blocks, "
                  "pixel shuffle (x2 by default)", task="sr"),
    ]
}


def get_spec(name: str) -> ModelSpec:
    """The zoo entry called ``name``, or a PimcError listing the known ones."""
    if name not in MODELS:
        raise PimcError(f"unknown model '{name}' (known: {', '.join(MODELS)})")
    return MODELS[name]


def model_input_shape(name: str, in_channels: int | None = None) -> tuple[int, int, int]:
    """The (C, H, W) input of a zoo model, with the channel count overridden if given."""
    channels, height, width = get_spec(name).input_shape
    return (in_channels or channels, height, width)


def build_model(name: str, num_classes: int | None = None, in_channels: int | None = None,
                scale: int | None = None) -> nn.Module:
    """Build zoo model ``name`` with its default or the given class and channel counts (a super-resolution
    model: its ``scale``)."""
    spec = get_spec(name)
    if spec.task == "sr":
        return spec.builder(scale=scale or spec.num_classes, in_channels=in_channels or spec.input_shape[0])
    classes = num_classes if num_classes is not None else spec.num_classes
    channels = in_channels if in_channels is not None else spec.input_shape[0]
    if classes < 1 or channels < 1:
        raise PimcError(f"model '{name}': num_classes and in_channels must be positive")
    return spec.builder(num_classes=classes, in_channels=channels)
