"""Feature Regularization (pimc's own definition): input-dependent channel sparsity of the conv inputs.

The seed paper's exact regularizer and thresholding are unknown (``docs/sources.md``); pimc defines:

**Gate.** In front of every conv except those reading the network input (the image), a threshold gate

    y = x · 1(|x| > t_l[k])                      (ONNX: Where(Greater(Abs(x), t), x, 0))

zeroes the small features of layer l. Which channels survive at a pixel depends on the input, so the
sparsity is along the channel dimension at each pixel and input-dependent. ``t`` has one value per layer
``l`` and per sparsity level ``k``: the table ``T ∈ R^{K×L}`` is one initializer, and the graph input
``sparsity_level`` (int64 scalar, with a default-valued initializer, so feeding it is optional) selects
the row: ``t_l = Gather(Gather(T, level), l)``. One trained model serves every level.

**Top-k gate** (``gate="topk"``, CLI ``--gate topk``). Instead of a threshold,

    y = x · 1(|x| ≥ κ_k(x[n, :, p]))             (ONNX: Where(GreaterOrEqual(Abs(x), Gather(TopK(Abs(x)), k−1)), x, 0))

with κ_k the k-th largest |x| over the C channels at pixel p and k = ⌊(1 − s)·C⌋ (at least 1) for level s: at
most k channels survive at every pixel (ties at κ_k aside), so every image, seen or not, meets the level at
every pixel; which channels survive still depends on the input. k comes from the table ``K ∈ Z^{K×L}``
(``feature_reg.keep``) selected by ``sparsity_level`` as above. Nothing is calibrated; the penalty and the
schedule are the same (the ramp lowers k from C). The difference: a threshold's zeros follow the image content
(a flat region can lose every channel, an edge keeps many, and an image with more texture than the training
images keeps more than the level), while a top-k gate spends the same k channels on every pixel.

**Per-image gate** (``gate="image"``, CLI ``--gate image``). The threshold is image n's own quantile:

    y = x · 1(|x| ≥ q_n),   q_n the k-th largest |x| over image n's whole map of L values, k = L − ⌈s·L⌉

(ONNX: Sort / TopK over the flattened map, a Gather of the k-th value with k computed from the map's
symbolic size and the level's s in ``level_table``), so every image, seen or not, meets the level, while the
pixels share the kept values by content as with a fixed threshold (flat regions lose every channel). It is
what the regularized fine-tune does already (batch quantiles), per image instead of per batch. A dataflow
computes q_n from a histogram of |x| gathered as the map is written and gates the map as it is read back.

**Placement** (``placement``, CLI ``--gate-placement``). ``conv-input`` (the default): a gate in front of each
conv (a forward pre-hook), l indexes the convs. A map that other nodes also read — a block output read by the
next block's conv1 and by the identity shortcut's Add, or by a 1×1 shortcut conv — then reaches those other
readers ungated, so the map a target stores off chip is the ungated one and the gate only runs as a conv
fetches it (``activation-sparsity``'s ``input_stored_zero_fraction``). ``stream``: one gate per distinct
tensor x_l that gated convs read, on the module that produced it (a forward hook on the latest module to
finish whose output is x_l — a ReLU, a residual block, a stage; a module called several times in one
forward, like a block's shared ReLU, is gated at the one call that made x_l), so l indexes the maps: every
reader (each conv, the residual Add) reads the gated map, the stored map is the gated one, and two convs
reading one map share one gate, one threshold column and one penalty term. The producer is found in the
tracing pass; a map no module output is (a functional ``F.relu``, or changed in place after its module
returned) keeps conv-input gates, counted as ``fallback_gates`` in the summary. The gate's math is the
same in both placements; in ``stream`` the residual path carries the gated map too, so the gate changes the
block's identity term as well as its conv input.

**Thresholds are calibrated, not learned.** For level k with target zero fraction s_k, t_l[k] is the
s_k-quantile of |x_l| (the k-th smallest value with k = ⌈s_k·n⌉, so at least s_k of the values are ≤ t and
become zero; a post-ReLU input whose natural zeros already exceed s_k gets t = 0, which keeps every
non-zero). During the regularized fine-tune every batch uses its own quantile (the batch's sparsity is
exactly s_k — ramped up linearly from 0 over the first ``ramp`` of the steps, so the network is sparsified
gradually; gradients flow through the kept features only, like the inference gate) and keeps an
exponential running average for evaluation, as BatchNorm does; afterwards one forward pass over
``calibration`` training images sets the table exactly, layer after layer in execution order (each gate
sees its upstream gates already applied at the same level).

**A level is a floor on unseen images.** The exact quantile meets s_k on the calibration images only; on
other images each layer's zero fraction scatters around it, so about half the layers would fall just short.
Calibration therefore aims each layer at s_k + z·σ_l/√n, with σ_l the standard deviation over the n
calibration images of their per-image zero fractions at the exact quantile, and z = ``floor_z`` (2 by
default; 0 gives the exact quantile): the standard error of a mean of n images, z of them as a guard band.

**Penalty.** For the input x_l ∈ R^{N×C×P} of each gated conv (P pixels),

    R = λ · (1/L) Σ_l  [ (1/(N·P)) Σ_{n,p} ‖x_l[n, :, p]‖₁ / C ]  /  rms(x_l)

i.e. the mean over pixels of the per-pixel channel L1 norm, normalised per layer by the channel count and
the layer's RMS (differentiable, so the ratio is scale-invariant: a layer cannot lower it by shrinking all
its features, only by concentrating its energy in fewer channels per pixel — an L1/L2, Hoyer-style
sparsity measure). It is computed on the gate's input, before thresholding.

**Training.** (1) dense pre-training (the model ``--dense-output`` exports); (2) regularized fine-tune:
cross-entropy at the level of the step (levels cycle over the batches) + R, gates on batch quantiles;
(3) exact calibration; (4) optional fine-tune with the table frozen, then the calibration once more (the
weights moved, so the exported table meets the targets on the training images again). BatchNorm layers keep their dense
running statistics during (2) and (4) (eval mode, affine parameters still trained), so training and
inference normalise identically at every level and no per-level BatchNorm is needed.

**Default level.** A held-out, seeded part of the training split (``val_fraction``, never trained on) is
the validation set: the default is the highest level whose validation metric is within
``max_accuracy_drop`` of the dense model's (top-1 points; dB of PSNR for an image-to-image model, whose
task loss is L1 instead of cross-entropy); the test split is not used for this choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn
from torch.utils.data import DataLoader

from ...compiler.errors import PimcError
from ...models.train import Hooks, run_training, task_loss
from .config import KEEP_NAME, LEVEL_INPUT, METADATA_KEY, TABLE_NAME, FeatureRegConfig
from .gates import GatedModel


@dataclass
class FeatureRegResult:
    """What the fine-tune produced: the gated model, the default level and the validation accuracies."""

    gated: GatedModel
    default_level: int
    val_accuracy: list[float]
    val_accuracy_dense: float
    val_samples: int
    losses: list[float] = field(default_factory=list)

    def _tables(self) -> dict:
        """The gates' per-layer table: keep counts (top-k), thresholds (threshold), none (per image)."""
        bank, sites = self.gated.bank, self.gated.sites
        if bank.kind == "topk":
            return {"keep": {site.name: [int(bank.keep_table[k, i]) for k in range(len(bank.levels))]
                             for i, site in enumerate(sites)}}
        if bank.kind == "threshold":
            return {"thresholds": {site.name: [round(float(bank.table[k, i]), 6) for k in range(len(bank.levels))]
                                   for i, site in enumerate(sites)}}
        return {}

    def summary(self) -> dict:
        bank = self.gated.bank
        return {
            "levels": list(bank.levels), "default_level": self.default_level,
            "default_target": bank.levels[self.default_level],
            "gated_convs": self.gated.names, "ungated_convs": self.gated.first,
            "gate_placement": self.gated.placement,
            "gates": [{"name": site.name, "placement": "stream" if site.stream else "conv-input",
                       "readers": site.readers} for site in self.gated.sites],
            "stream_gates": sum(site.stream for site in self.gated.sites),
            "fallback_gates": sum(not site.stream for site in self.gated.sites)
            if self.gated.placement == "stream" else 0,
            "gate": bank.kind,
            **self._tables(),
            "val_accuracy_dense": self.val_accuracy_dense, "val_accuracy": self.val_accuracy,
            "val_samples": self.val_samples, "losses": self.losses,
        }


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train indices, validation indices) of n training samples; validation ≥ 1 sample."""
    perm = np.random.default_rng(seed + 7919).permutation(n)
    count = min(n - 1, max(1, round(fraction * n)))
    return np.sort(perm[count:]), np.sort(perm[:count])


def feature_regularize(
    model: nn.Module, loader: DataLoader, calib_x: np.ndarray, val: tuple[np.ndarray, np.ndarray],
    input_shape: tuple[int, ...], config: FeatureRegConfig, seed: int = 0, progress: bool = True,
) -> FeatureRegResult:
    """Fine-tune a trained ``model`` with gates + penalty, calibrate the table and pick the default level."""
    from ...compiler.metrics import metric_for
    from ...models.train import evaluate_quality

    config.check()
    metric = metric_for(*val)
    dense_val = evaluate_quality(model, *val)
    gated = GatedModel(model, input_shape, config.levels, config.momentum, config.placement, config.gate)
    torch.manual_seed(seed)
    losses = _fine_tune(gated, loader, config, config.epochs, "track", config.penalty, progress, "feature-reg")
    calibrate(gated, calib_x, config.floor_z)
    if config.frozen_epochs:
        losses += _fine_tune(gated, loader, config, config.frozen_epochs, "fixed", 0.0, progress, "frozen gates")
        calibrate(gated, calib_x, config.floor_z)  # the weights moved: the table meets the targets again
    accs = [level_accuracy(gated, k, *val) for k in range(len(config.levels))]
    budget = metric.default_budget if config.max_accuracy_drop is None else config.max_accuracy_drop
    within = [k for k, a in enumerate(accs) if metric.scale * (dense_val - a) <= budget + 1e-9]
    default = max(within) if within else 0
    gated.bank.level = default
    return FeatureRegResult(gated, default, accs, dense_val, len(val[0]), losses)


def level_accuracy(gated: GatedModel, level: int, x: np.ndarray, y: np.ndarray) -> float:
    """The metric (top-1, or PSNR for image targets) of one level on ``x``."""
    from ...models.train import evaluate_quality

    gated.bank.mode, gated.bank.level = "fixed", level
    return evaluate_quality(gated, x, y)


@torch.no_grad()
def calibrate(gated: GatedModel, x: np.ndarray, floor_z: float = 0.0) -> None:
    """Set every level's thresholds from one forward pass over ``x`` (training images), each ``floor_z``
    standard errors above the level (:func:`floor_margin`)."""
    bank = gated.bank
    if bank.kind != "threshold":
        return  # top-k and per-image gates follow from the levels alone
    was_training = gated.training
    gated.eval()
    bank.mode, bank.floor_z = "calibrate", floor_z
    batch = torch.from_numpy(np.asarray(x, np.float32))
    try:
        for level in range(len(bank.levels)):
            bank.level = level
            gated(batch)
            bank.seen[level] = True
    finally:
        bank.mode, bank.floor_z = "fixed", 0.0
        gated.train(was_training)


def _fine_tune(gated: GatedModel, loader: DataLoader, config: FeatureRegConfig, epochs: int, mode: str,
               penalty: float, progress: bool, desc: str) -> list[float]:
    """The task loss (cross-entropy, L1 for image targets) at the step's level (levels cycle) + λ·R, on the one
    training loop
    (``models.train.run_training``); BatchNorm keeps its running statistics.

    The frozen-gate phase starts a fresh Adam on an already fine-tuned network, whose first steps (≈ lr per
    weight) would undo it at the full rate: it runs at ``frozen_lr_scale`` × lr."""
    bank = gated.bank
    params = [p for p in gated.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr * (1.0 if mode == "track" else config.frozen_lr_scale))
    ramp = config.ramp * max(1, epochs * len(loader)) if mode == "track" else 0
    state = {"step": 0}

    def loss(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        step = state["step"]
        bank.level = step % len(bank.levels)
        bank.scale = min(1.0, (step + 1) / ramp) if ramp else 1.0
        value = task_loss(yb)(gated(xb), xb, yb)
        return value + penalty * bank.penalty() if penalty > 0 else value

    def after_step() -> None:
        if mode == "track":
            bank.seen[bank.level] = True
        state["step"] += 1

    bank.mode, bank.penalize = mode, penalty > 0
    try:
        return run_training(opt, loader, epochs, Hooks(loss, after_step=after_step,
                                                       epoch_start=lambda _e: _train_mode(gated)), progress, desc)
    finally:
        bank.mode, bank.penalize, bank.penalties, bank.scale = "fixed", False, [], 1.0
        gated.eval()


def _train_mode(gated: GatedModel) -> None:
    gated.train()
    for module in gated.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


class _LevelWrapper(nn.Module):
    def __init__(self, gated: GatedModel):
        super().__init__()
        self.gated = gated

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return self.gated(x, level)


def export_feature_reg_onnx(result: FeatureRegResult, path: str | Path, input_shape: tuple[int, ...],
                            opset: int = 17) -> Path:
    """Write the gated model: inputs ``input`` and ``sparsity_level`` (int64 scalar, defaulted)."""
    from ...compiler.modelio import write_model
    from ...models.train import _quiet, _temp_onnx, _unshare_initializers, output_name

    gated = result.gated
    bank = gated.bank
    saved, was_training = bank.level, gated.training
    wrapper = _LevelWrapper(gated).eval()  # the exporter restores the wrapper's (and so gated's) mode
    out = output_name(gated.model)
    spatial_in = {2: "height", 3: "width"} if out == "image" else {}
    spatial_out = {2: "out_height", 3: "out_width"} if out == "image" else {}
    example = (torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0)),
               torch.tensor(result.default_level, dtype=torch.int64))
    try:
        with _temp_onnx() as tmp, _quiet():
            torch.onnx.export(
                wrapper, example, str(tmp), dynamo=False, opset_version=opset,
                do_constant_folding=True, input_names=["input", LEVEL_INPUT], output_names=[out],
                dynamic_axes={"input": {0: "batch", **spatial_in}, out: {0: "batch", **spatial_out}},
            )
            proto = _unshare_initializers(onnx.load(str(tmp)))
    finally:
        bank.level = saved
        gated.train(was_training)
    _finish_graph(proto, result)
    return write_model(proto, Path(path))


def _finish_graph(proto: onnx.ModelProto, result: FeatureRegResult) -> None:
    """Default the level input, name the table, and record levels / default / gated convs as metadata."""
    import json

    graph = proto.graph
    for node in graph.node:
        node.name = node.name.replace("/gated/model/", "/", 1)
    bank = result.gated.bank
    kind, name = {"topk": (onnx.TensorProto.INT64, KEEP_NAME), "threshold": (onnx.TensorProto.FLOAT, TABLE_NAME)}.get(
        bank.kind, (None, None))  # a per-image gate has no per-layer table
    table = [t for t in graph.initializer if tuple(t.dims) == tuple(bank.table.shape) and t.data_type == kind]
    if len(table) == 1:
        _rename_tensor(graph, table[0].name, name)
    if not any(i.name == LEVEL_INPUT for i in graph.input):
        raise PimcError("export lost the sparsity_level input (the gates do not read it)")
    graph.initializer.append(numpy_helper.from_array(np.array(result.default_level, np.int64), LEVEL_INPUT))
    for value in graph.input:
        if value.name == LEVEL_INPUT:
            value.CopyFrom(helper.make_tensor_value_info(LEVEL_INPUT, onnx.TensorProto.INT64, []))
    info = {"levels": list(bank.levels), "default_level": result.default_level,
            "level_input": LEVEL_INPUT, "table": name, "gate": bank.kind}
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(info, sort_keys=True))


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    for tensor in graph.initializer:
        if tensor.name == old:
            tensor.name = new
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]


def compress_trained(model, loader, shape, output, config: FeatureRegConfig, *, seed: int = 0, progress: bool = True):
    """The ``feature-reg`` method (``compiler/method.py``): a seeded ``val_fraction`` of the loader's images is
    held out to choose the default level; returns the gated model."""
    from ...models.train import loader_arrays, make_loader

    x, y = loader_arrays(loader)
    if len(x) < 2:
        raise PimcError("compress(method='feature-reg'): needs at least 2 training images (one is held out)")
    fit, held = split_validation(len(x), config.val_fraction, seed)
    batches = make_loader(x[fit], y[fit], getattr(loader, "batch_size", None) or 64, True, seed)
    result = feature_regularize(model, batches, x[fit][: config.calibration], (x[held], y[held]), shape, config,
                                seed, progress)
    export_feature_reg_onnx(result, output, shape)
    return result.gated
