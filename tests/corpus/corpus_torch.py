"""torch models of the corpus, exported in the test's folder: legacy (TorchScript) exports at opsets 11,
13 and 17 and dynamo exports (opset 18+). ``TORCH_BUILDERS`` maps a case name to (builder, slow)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as fn


def _randomize_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


class ResBlock(nn.Module):
    def __init__(self, c: int, stride: int = 1) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(c, c * stride, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(c * stride)
        self.c2 = nn.Conv2d(c * stride, c * stride, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(c * stride)
        self.short = nn.Sequential(nn.Conv2d(c, c * stride, 1, stride, bias=False), nn.BatchNorm2d(c * stride)) \
            if stride > 1 else nn.Identity()

    def forward(self, x):
        y = fn.relu(self.b1(self.c1(x)))
        return fn.relu(self.b2(self.c2(y)) + self.short(x))


def resnet_tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU(), ResBlock(8), ResBlock(8, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand → depthwise 3x3 → 1x1 project (+ residual), ReLU6 (Clip)."""

    def __init__(self, c: int, expand: int = 3) -> None:
        super().__init__()
        h = c * expand
        self.body = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c),
        )

    def forward(self, x):
        return x + self.body(x)


def mobilenet_tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU6(), InvertedResidual(8),
                         InvertedResidual(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


class UNetTiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.e1 = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.ReLU())
        self.e2 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.up = nn.ConvTranspose2d(8, 4, 2, 2)
        self.d1 = nn.Sequential(nn.Conv2d(8, 4, 3, 1, 1), nn.ReLU(), nn.Conv2d(4, 2, 1))

    def forward(self, x):
        a = self.e1(x)
        return self.d1(torch.cat([self.up(self.e2(a)), a], dim=1))


class DenseTiny(nn.Module):
    def __init__(self, growth: int = 4, layers: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(8 + i * growth), nn.ReLU(), nn.Conv2d(8 + i * growth, growth, 3, 1, 1))
            for i in range(layers))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8 + layers * growth, 3))

    def forward(self, x):
        feats = [self.stem(x)]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, dim=1)))
        return self.head(torch.cat(feats, dim=1))


class SEBlock(nn.Module):
    def __init__(self, c: int = 8, r: int = 4) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, c, 3, 1, 1), nn.ReLU())
        self.fc1, self.fc2 = nn.Linear(c, c // r), nn.Linear(c // r, c)
        self.head = nn.Sequential(nn.Conv2d(c, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        y = self.conv(x)
        s = torch.sigmoid(self.fc2(fn.relu(self.fc1(y.mean(dim=(2, 3))))))
        return self.head(y * s[:, :, None, None])


class ConvAttention(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1), nn.ReLU())
        self.qkv = nn.Linear(c, 3 * c)
        self.out = nn.Linear(c, 4)

    def forward(self, x):
        t = self.conv(x).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(t).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)
        return self.out((a @ v + t).mean(dim=1))


class TwoInTwoOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, 1, 1)
        self.b = nn.Conv2d(1, 6, 3, 1, 1)
        self.fc = nn.Linear(6, 2)

    def forward(self, x, m):
        y = torch.relu(self.a(x)) * torch.sigmoid(self.b(m))
        return self.fc(y.mean(dim=(2, 3))), y.amax(dim=1, keepdim=True)


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(2, 8, 5, padding=2), nn.BatchNorm1d(8), nn.ReLU(),
                                  nn.Conv1d(8, 8, 3, stride=2, dilation=2, groups=4), nn.ReLU(),
                                  nn.ConvTranspose1d(8, 4, 4, stride=2, padding=1), nn.AdaptiveAvgPool1d(1),
                                  nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        return self.body(x)


def conv3d_net() -> nn.Module:
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(), nn.MaxPool3d(2),
                         nn.Conv3d(4, 4, 3, padding=1, groups=2), nn.ReLU(),
                         nn.ConvTranspose3d(4, 2, 2, stride=2))


def activations_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 6, 3, 1, 1), nn.Hardswish(), nn.Conv2d(6, 6, 3, 1, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(6, 6, 3, 1, 2, dilation=2), nn.Sigmoid(), nn.Conv2d(6, 6, 1), nn.SiLU(),
                         nn.Conv2d(6, 6, 3, 1, 1), nn.Hardtanh(-1, 1), nn.AvgPool2d(2), nn.Conv2d(6, 2, 1))


def classifier_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 2 * 2, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 10))


class UpsamplePad(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 4, 3, 2, 1), nn.Conv2d(4, 4, 3)
        self.c3 = nn.Conv2d(4, 2, 3, padding=1, padding_mode="reflect")

    def forward(self, x):
        y = fn.interpolate(torch.relu(self.c1(x)), scale_factor=2, mode="bilinear", align_corners=False)
        y = self.c2(fn.pad(y, (1, 1, 1, 1), mode="replicate"))
        return self.c3(fn.interpolate(y, size=(10, 10), mode="nearest"))


def grouped_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(4, 8, 3, 1, 1, groups=2), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, 1, 2, dilation=2, groups=4), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, 2, 1, groups=8), nn.Conv2d(8, 4, 1))


def decoder_net() -> nn.Module:
    """An autoencoder whose decoder is mostly ConvTranspose MACs."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                         nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.ConvTranspose2d(8, 3, 3, 2, 1, output_padding=1, groups=1), nn.Sigmoid())


# ----------------------------------------------------------------------------------------------------
# export


def _inputs(shapes: list[tuple[int, ...]]) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(*s, generator=g) for s in shapes)


def export(make: Callable[[], nn.Module], shapes: list[tuple[int, ...]], name: str, *, opset: int = 17,
           dynamo: bool = False, **kwargs) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        torch.manual_seed(0)
        model = make()
        _randomize_bn(model)
        model.eval()
        path = folder / f"{name}.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if dynamo:
                torch.onnx.export(model, _inputs(shapes), str(path), dynamo=True, opset_version=opset,
                                  verbose=False, **kwargs)
            else:
                torch.onnx.export(model, _inputs(shapes), str(path), dynamo=False, opset_version=opset,
                                  training=torch.onnx.TrainingMode.PRESERVE, **kwargs)
        return path

    return build


_IMG = [(1, 3, 16, 16)]
_NCHW = ["N", "C", "H", "W"]

TORCH_BUILDERS: dict[str, tuple[Callable[[Path], Path], bool]] = {
    "torch_resnet_o17": (export(resnet_tiny, _IMG, "torch_resnet_o17", opset=17), False),
    "torch_resnet_o11": (export(resnet_tiny, _IMG, "torch_resnet_o11", opset=11), False),
    "torch_mobilenet_o11": (export(mobilenet_tiny, _IMG, "torch_mobilenet_o11", opset=11), False),
    "torch_mobilenet_o13": (export(mobilenet_tiny, _IMG, "torch_mobilenet_o13", opset=13), False),
    "torch_unet_o13": (export(UNetTiny, _IMG, "torch_unet_o13", opset=13), False),
    "torch_densenet_o17": (export(DenseTiny, _IMG, "torch_densenet_o17", opset=17), False),
    "torch_se_o13": (export(SEBlock, _IMG, "torch_se_o13", opset=13), False),
    "torch_attention_o17": (export(ConvAttention, _IMG, "torch_attention_o17", opset=17), False),
    "torch_two_io_o17": (export(TwoInTwoOut, [(1, 3, 8, 8), (1, 1, 8, 8)], "torch_two_io_o17",
                                input_names=["x", "m"], output_names=["logits", "map"]), False),
    "torch_conv1d_o13": (export(Conv1dNet, [(1, 2, 24)], "torch_conv1d_o13", opset=13), False),
    "torch_conv3d_o17": (export(conv3d_net, [(1, 1, 4, 8, 8)], "torch_conv3d_o17", opset=17), False),
    "torch_activations_o17": (export(activations_net, _IMG, "torch_activations_o17", opset=17), False),
    "torch_classifier_o11": (export(classifier_net, [(1, 1, 10, 10)], "torch_classifier_o11", opset=11), False),
    "torch_upsample_pad_o13": (export(UpsamplePad, _IMG, "torch_upsample_pad_o13", opset=13), False),
    "torch_grouped_o17": (export(grouped_net, [(1, 4, 12, 12)], "torch_grouped_o17", opset=17), False),
    "torch_decoder_o17": (export(decoder_net, _IMG, "torch_decoder_o17", opset=17), False),
    "torch_init_inputs_o11": (export(resnet_tiny, _IMG, "torch_init_inputs_o11", opset=11,
                                     keep_initializers_as_inputs=True), False),
    "torch_dynamic_batch_o17": (export(mobilenet_tiny, _IMG, "torch_dynamic_batch_o17", opset=17,
                                       input_names=["x"], dynamic_axes={"x": {0: "N"}}), False),
    "torch_dynamic_hw": (export(UNetTiny, _IMG, "torch_dynamic_hw", opset=17, input_names=["x"],
                                dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}}), False),
    "torch_dynamo_resnet": (export(resnet_tiny, _IMG, "torch_dynamo_resnet", opset=18, dynamo=True), False),
    "torch_dynamo_se": (export(SEBlock, _IMG, "torch_dynamo_se", opset=18, dynamo=True), False),
    "torch_dynamo_unet": (export(UNetTiny, _IMG, "torch_dynamo_unet", opset=20, dynamo=True,
                                 optimize=False), False),
    "torch_dynamo_mobilenet": (export(mobilenet_tiny, _IMG, "torch_dynamo_mobilenet", opset=18, dynamo=True),
                               True),
    "torch_dynamo_attention": (export(ConvAttention, _IMG, "torch_dynamo_attention", opset=18, dynamo=True),
                               True),
    "torch_dynamo_decoder": (export(decoder_net, _IMG, "torch_dynamo_decoder", opset=18, dynamo=True), True),
}
