"""Training, evaluation and ONNX export helpers shared by the zoo CLI and the compression exporters."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from ..compiler.errors import PimcError
from ..compiler.graph import remove_initializers
from ..compiler.modelio import write_model
from ..runtime.datasets import IMAGE_KINDS, TRAINABLE_HELP, Dataset, load_dataset, train_test_sets
from .augment import Augment

LEGACY_OPSET = 17
DYNAMO_OPSET = 18


@dataclass
class TrainingData:
    """What a training command needs from a data spec: the labelled train part as a seeded DataLoader,
    and the held-out test part (``data_splits``' test set; its calibration/validation lie in ``train``)."""

    train: Dataset
    test: Dataset
    loader: DataLoader

    @property
    def num_classes(self) -> int:
        """Classes seen in either part (labels are 0..K-1); 0 for image targets."""
        assert self.train.y is not None and self.test.y is not None
        if self.image_targets:
            return 0
        return int(max(self.train.y.max(), self.test.y.max())) + 1

    @property
    def image_targets(self) -> bool:
        return self.train.y is not None and self.train.y.ndim == 4

    @property
    def scale(self) -> int:
        """Image targets: how many times larger the target is than the input (the super-resolution scale)."""
        return self.train.y.shape[2] // self.train.x.shape[2]


def training_data(
    spec: str, input_shape: tuple[int, int, int], batch_size: int, seed: int = 0, limit: int | None = None
) -> TrainingData:
    """The one place that maps a data spec to torch training data (``limit``: first N training samples)."""
    if batch_size < 1:
        raise PimcError(f"--batch-size must be positive, got {batch_size}")
    kind = spec.partition(":")[0]
    if kind not in ("digits", "mnist", "npz", "cifar10", *IMAGE_KINDS):
        raise PimcError(f"cannot train on '{spec}' (use {TRAINABLE_HELP})")
    if kind in IMAGE_KINDS:  # patches of the model's input size; whole-tile test images of the default size
        train = load_dataset(spec, input_shape, split="train", limit=limit)
        test = load_dataset(spec, (input_shape[0], None, None), split="test")
        assert train.y is not None
        return TrainingData(train, test, make_loader(train.x, train.y, batch_size, True, seed))
    train, test = train_test_sets(spec, input_shape)
    if limit is not None:
        train = load_dataset(spec, input_shape, split="train", limit=limit) if limit < len(train) else train
    assert train.y is not None
    return TrainingData(train, test, make_loader(train.x, train.y, batch_size, True, seed))


def hold_out(data: TrainingData, samples: int, batch_size: int, seed: int = 0) -> tuple[TrainingData, Dataset]:
    """Carve a validation set from the training part: the last ``samples`` training images (the train split
    is already a seeded shuffle) leave the training set, which keeps the rest; the test part is untouched."""
    if not 1 <= samples < len(data.train):
        raise PimcError(f"--validation must be in 1..{len(data.train) - 1} (the training images), got {samples}")
    assert data.train.y is not None
    keep = len(data.train) - samples
    train = Dataset(data.train.name, data.train.x[:keep], data.train.y[:keep])
    validation = Dataset(f"{data.train.name} (validation)", data.train.x[keep:], data.train.y[keep:])
    return TrainingData(train, data.test, make_loader(train.x, train.y, batch_size, True, seed)), validation


def digits_arrays(
    input_shape: tuple[int, int, int], split: str, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Digits images (float32 NCHW, preprocessed exactly as ``pimc run --data digits``) and labels.

    The train/test split itself is always the fixed seed-0 split; ``seed`` is passed on for other uses.
    """
    data = load_dataset("digits", input_shape, split=split, seed=seed)
    assert data.y is not None
    return data.x, data.y


def calibration_inputs(loader: Any, count: int) -> list[dict[str, Any]]:
    """The first ``count`` images of ``loader``, one feed each (activation-range calibration)."""
    feeds: list[dict[str, Any]] = []
    for batch in loader:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        for i in range(len(images)):
            if len(feeds) == count:
                return feeds
            feeds.append({"input": images[i : i + 1].detach().cpu().numpy()})
    return feeds


def loader_arrays(loader: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every (image, label) of ``loader`` as two numpy arrays."""
    xs, ys = [], []
    for images, labels in loader:
        xs.append(images.detach().cpu().numpy())
        ys.append(labels.detach().cpu().numpy())
    if not xs:
        raise PimcError("the train loader yields no batches")
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def make_loader(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """A DataLoader over numpy arrays with a seeded shuffle order (integer labels, or float image targets)."""
    targets = np.asarray(y, np.float32) if np.asarray(y).ndim == 4 else np.asarray(y, np.int64)
    dataset = TensorDataset(torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(targets))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def distillation_loss(
    logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, alpha: float, temperature: float
) -> torch.Tensor:
    """Knowledge distillation (Hinton, Vinyals & Dean 2015): (1 − α)·CE(y, s) + α·T²·KL(p_t ‖ p_s), with
    p = softmax(logits / T) and the KL divergence averaged over the batch (T² keeps the soft term's
    gradient on the scale of the hard one). α = 0 is plain cross-entropy."""
    hard = F.cross_entropy(logits, targets)
    if alpha == 0:
        return hard
    return (1 - alpha) * hard + alpha * soft_divergence(logits, teacher_logits, temperature)


def soft_divergence(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(p_t ‖ p_s), p = softmax(logits / T), averaged over the batch: distillation's soft term."""
    return temperature**2 * F.kl_div(F.log_softmax(logits / temperature, dim=1),
                                     F.log_softmax(teacher_logits / temperature, dim=1), reduction="batchmean",
                                     log_target=True)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with no trainable parameters (a distillation teacher)."""
    teacher = copy.deepcopy(model).eval()
    teacher.requires_grad_(False)
    return teacher


@dataclass
class Distillation:
    """A frozen teacher and the weight α / temperature T of ``distillation_loss`` (``train_classifier``'s
    ``distill``): the teacher's logits are computed, without gradients, on the same (augmented) batch."""

    teacher: nn.Module
    alpha: float
    temperature: float = 4.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise PimcError(f"distillation weight alpha must be in [0, 1], got {self.alpha}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise PimcError(f"distillation temperature must be positive, got {self.temperature}")

    def loss(self, logits: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.teacher.eval()
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        return distillation_loss(logits, teacher_logits, targets, self.alpha, self.temperature)


Criterion = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, inputs, targets)


def _l1(outputs: torch.Tensor, _inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Image targets (super-resolution): the mean absolute error, EDSR's loss."""
    return F.l1_loss(outputs, targets)


def task_loss(targets: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy for class labels, L1 for image targets."""
    return _l1 if targets.is_floating_point() and targets.dim() == 4 else _cross_entropy


def _cross_entropy(logits: torch.Tensor, _inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, targets)


def make_optimizer(model: nn.Module, optimizer: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum or Adam."""
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise PimcError(f"unknown optimizer '{optimizer}' (use sgd or adam)")


@dataclass
class Hooks:
    """What one training differs in; ``run_training`` does the rest (the loop, the cosine schedule, the
    progress bar). ``loss(x, y)`` runs one batch forward and returns its loss (penalties included);
    ``after_backward()`` may edit gradients; ``after_step()`` runs under ``torch.no_grad`` after each
    optimizer step (masks, projections); ``epoch_start(e)`` / ``epoch_end(e)`` frame each epoch (train
    mode, freezing, pruning rounds); ``postfix(e)`` adds fields to the progress bar."""

    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    after_backward: Callable[[], None] | None = None
    after_step: Callable[[], None] | None = None
    epoch_start: Callable[[int], None] | None = None
    epoch_end: Callable[[int], None] | None = None
    postfix: Callable[[int], dict] | None = None


def cosine_schedule(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate of every training: lr · ½(1 + cos(π·step/steps)), stepped after every batch."""
    total = max(1, steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))


def run_training(opt: torch.optim.Optimizer, loader: DataLoader, epochs: int, hooks: Hooks, progress: bool = True,
                 desc: str = "train") -> list[float]:
    """The one training loop of pimc's exporters; returns the mean loss of every epoch."""
    sched = cosine_schedule(opt, epochs * len(loader))
    history = []
    bar = tqdm(range(epochs), desc=desc, disable=not progress, unit="epoch", leave=False)
    for epoch in bar:
        if hooks.epoch_start is not None:
            hooks.epoch_start(epoch)
        losses = []
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            loss = hooks.loss(xb, yb)
            loss.backward()
            if hooks.after_backward is not None:
                hooks.after_backward()
            opt.step()
            sched.step()
            if hooks.after_step is not None:
                with torch.no_grad():
                    hooks.after_step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)) if losses else 0.0)
        if hooks.epoch_end is not None:
            hooks.epoch_end(epoch)
        bar.set_postfix(loss=f"{history[-1]:.4f}", **(hooks.postfix(epoch) if hooks.postfix else {}))
    return history


def train_classifier(
    model: nn.Module,
    train_loader: DataLoader,
    epochs: int,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
    weight_decay: float = 5e-4,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    after_step: Callable[[nn.Module], None] | None = None,
    desc: str = "train",
    optimizer: str = "adam",
    augment: Augment | None = None,
    distill: Distillation | None = None,
) -> list[float]:
    """Train with cross-entropy (L1 for image targets) and a per-step cosine learning-rate schedule; return
    per-epoch mean loss.

    ``extra_loss(model)`` is added to every step's loss (e.g. an L1 or ADMM penalty) and
    ``after_step(model)`` runs after every optimiser step (e.g. to re-apply pruning masks).
    ``augment`` (default none) randomly shifts / rotates / scales every training batch, seeded by ``seed``
    (``models/augment.py``). ``distill`` replaces the cross-entropy with ``distillation_loss`` against its
    frozen teacher.
    """
    if epochs < 1:
        raise PimcError(f"epochs must be positive, got {epochs}")
    torch.manual_seed(seed)
    transform = None
    if augment is not None:
        augment.check()
        generator = torch.Generator().manual_seed(seed)
        transform = (lambda xb: augment(xb, generator)) if augment.active else None
    def loss(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if transform is not None:
            xb = transform(xb)
        criterion = distill.loss if distill is not None else task_loss(yb)
        value = criterion(model(xb), xb, yb)
        return value if extra_loss is None else value + extra_loss(model)

    hooks = Hooks(loss, after_step=None if after_step is None else (lambda: after_step(model)),
                  epoch_start=lambda _epoch: model.train())
    history = run_training(make_optimizer(model, optimizer, lr, weight_decay), train_loader, epochs, hooks,
                           progress, desc)
    model.eval()
    return history


@torch.no_grad()
def evaluate_quality(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 64) -> float:
    """The metric of the targets (``compiler.metrics``: top-1 for labels, PSNR in dB for images) of the model
    in eval mode on numpy arrays."""
    from ..compiler.metrics import metric_for

    metric = metric_for(x, y)
    if metric.name == "top1":
        return evaluate_torch(model, x, y)
    was_training = model.training
    model.eval()
    outputs = np.concatenate([model(torch.from_numpy(np.asarray(x[i : i + batch], np.float32))).numpy()
                              for i in range(0, len(x), batch)])
    model.train(was_training)
    return metric.value(outputs, y)


@torch.no_grad()
def evaluate_torch(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    """Top-1 accuracy of the model (in eval mode) on numpy arrays."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(x), batch):
        xb = torch.from_numpy(np.asarray(x[start : start + batch], np.float32))
        correct += int((model(xb).argmax(dim=1).numpy() == y[start : start + batch]).sum())
    model.train(was_training)
    return correct / max(1, len(x))


def dense_reference(model: nn.Module, input_shape: tuple[int, int, int],
                    source: onnx.ModelProto | None = None) -> dict[str, float]:
    """The storage reference an exporter's output is compared against, taken before the model is compressed:
    ``compiler.storage.dense_fp32`` of the user's ONNX ``source``, else of the torch model's ONNX export."""
    from ..compiler.storage import dense_fp32

    if source is not None:
        return dense_fp32(source)
    with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng():  # training goes on from the same RNG
        return dense_fp32(onnx.load(str(export_onnx(copy.deepcopy(model), Path(tmp) / "dense.onnx", input_shape))))


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_shape: tuple[int, int, int],
    dynamo: bool = False,
    opset: int | None = None,
) -> Path:
    """Export ``model`` in eval mode to ONNX (input ``input``, output ``logits``, dynamic ``batch``).

    The legacy TorchScript exporter (default opset 17) folds constants and BatchNorm; the dynamo
    exporter (opset 18+; it cannot emit older opsets) is tried with a dynamic batch and falls back to a
    static batch of 1.
    The file is written atomically.
    """
    out = Path(path)
    opset = opset or (DYNAMO_OPSET if dynamo else LEGACY_OPSET)
    if dynamo and opset < DYNAMO_OPSET:
        raise PimcError(f"the dynamo exporter needs opset {DYNAMO_OPSET} or newer, got {opset} (drop --dynamo)")
    was_training = model.training
    model.eval()
    try:
        proto = _export_dynamo(model, input_shape, opset) if dynamo else _export_legacy(model, input_shape, opset)
    finally:
        model.train(was_training)
    return write_model(proto, out)


def _example(input_shape: tuple[int, int, int]) -> torch.Tensor:
    """A deterministic example input with batch 2 (so batch is not specialised to 1)."""
    return torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))


def output_name(model: nn.Module) -> str:
    """``image`` for an image-to-image model (``image_to_image = True``: symbolic height and width too),
    else ``logits``."""
    return "image" if getattr(model, "image_to_image", False) else "logits"


def _export_legacy(model: nn.Module, input_shape: tuple[int, int, int], opset: int) -> onnx.ModelProto:
    """TorchScript-based export with constant folding and a dynamic batch axis (and height and width for an
    image-to-image model)."""
    out = output_name(model)
    spatial = out == "image"
    dynamic = {"input": {0: "batch", **({2: "height", 3: "width"} if spatial else {})},
               out: {0: "batch", **({2: "out_height", 3: "out_width"} if spatial else {})}}
    with _temp_onnx() as tmp, _quiet():
        torch.onnx.export(
            model, (_example(input_shape),), str(tmp), dynamo=False, opset_version=opset,
            do_constant_folding=True, input_names=["input"], output_names=[out], dynamic_axes=dynamic,
        )
        return _unshare_initializers(onnx.load(str(tmp)))


def _unshare_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Replace the exporter's ``Identity(initializer)`` nodes with per-layer copies of the tensor.

    The legacy exporter deduplicates equal constants (e.g. freshly folded BatchNorm biases) and
    re-exposes them through Identity nodes; separate tensors keep every layer independently editable.
    """
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    used = {name for node in graph.node for name in node.input}
    remove_initializers(graph, [t.name for t in graph.initializer if t.name not in used])
    return proto


def _export_dynamo(model: nn.Module, input_shape: tuple[int, int, int], opset: int) -> onnx.ModelProto:
    """torch.export-based export with a dynamic batch if possible, otherwise a static batch of 1."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    dims = {0: batch}
    if output_name(model) == "image":
        dims.update({2: torch.export.Dim("height", min=4, max=8192), 3: torch.export.Dim("width", min=4, max=8192)})
    attempts = [(_example(input_shape), dims), (_example(input_shape)[:1], None)]
    errors = []
    for example, batch_dims in attempts:
        try:
            program = _dynamo_program(model, (example,), opset, batch_dims)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {_first_line(exc)}")
            continue
        return _strip_metadata(_rename_io(program.model_proto, output_name(model)))
    raise PimcError(f"dynamo export failed ({'; '.join(errors)})")


def _first_line(exc: BaseException) -> str:
    """First line of an exception message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _dynamo_program(model: nn.Module, example: tuple, opset: int, batch_dims: dict | None) -> object:
    """Run the dynamo exporter quietly (its progress messages go to stdout and logging)."""
    dynamic = {_forward_arg_name(model): batch_dims} if batch_dims else None
    with _quiet():
        program = torch.onnx.export(
            model, example, dynamo=True, opset_version=opset, input_names=["input"],
            output_names=[output_name(model)], dynamic_shapes=dynamic, optimize=True, verbose=False,
        )
    if program is None:
        raise PimcError("dynamo exporter returned nothing")
    return program


def _forward_arg_name(model: nn.Module) -> str:
    """Name of the first argument of ``model.forward`` (dynamic_shapes is keyed by it)."""
    import inspect

    params = list(inspect.signature(model.forward).parameters)
    return params[0] if params else "x"


def _rename_io(proto: onnx.ModelProto, output: str = "logits") -> onnx.ModelProto:
    """Make sure the single input/output are called ``input``/``output`` and the batch dim ``batch``."""
    graph = proto.graph
    renames = {graph.input[0].name: "input", graph.output[0].name: output}
    for value in (graph.input[0], graph.output[0]):
        value.name = renames[value.name]
        dim = value.type.tensor_type.shape.dim
        if dim and not dim[0].HasField("dim_value"):
            dim[0].dim_param = "batch"
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    return proto


def _strip_metadata(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the per-node provenance (FX node, stack trace with local paths) the dynamo exporter adds."""
    for node in proto.graph.node:
        del node.metadata_props[:]
    for value in [*proto.graph.value_info, *proto.graph.input, *proto.graph.output]:
        del value.metadata_props[:]
    for tensor in proto.graph.initializer:
        del tensor.metadata_props[:]
    return proto


@contextlib.contextmanager
def _temp_onnx() -> Iterator[Path]:
    """A temporary .onnx path, removed afterwards."""
    fd, name = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)
        Path(name + ".data").unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporter warnings, log messages and stdout chatter."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
