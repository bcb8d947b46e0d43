"""ADMM-NN non-structured pruning (and joint quantization) of any torch model, and its ONNX export.

Constraint set of the pruned layers (every Conv2d and Linear selected by include/exclude):
S = {W : at most k_l non-zeros in layer l}, Proj_S = keep each layer's k_l largest |w|. How the overall
density d (1 / ``ratio``) is shared, convs weighted before FC layers (ADMM-NN's hardware-aware order: a
conv weight is reused at every pixel and costlier to lose, the FC layers hold the storage):
* ``scope = erk`` (default): d_l = min(1, ε · a_l), a_l = Σ dims / Π dims of the weight (Erdős–Rényi-kernel:
  small layers and the classifier keep more), × ``conv_weight`` for convs, ε fitted to d;
* ``scope = global``: one threshold over all layers on |w| / rms(W_l) × (``conv_weight`` for convs);
* ``scope = layer``: d_l = d everywhere;
* ``nm``: N of every M consecutive weights along each output row instead.

ADMM (scaled form, as ``passes/pattern/admm.py``), for every pruned layer:
    W ← argmin loss(W) + ρ/2 · ‖W − Z + U‖²         (Adam steps)
    Z ← Proj_S(W + U),  U ← U + W − Z                 (every ``update_every`` steps, default 1 epoch)
    ρ ← growth · ρ,  U ← U / growth
then the hard projection W ← Proj_S(W) and masked retraining (masks re-applied after every step).
Finally ``fold_dead_units``: a Linear unit left with no weights is a constant, folded (exactly) into the
next Linear's bias, so its bias and its column of the next layer need no storage.
Progressive mode (``steps`` = K > 1): K rounds of ADMM + hard prune + masked retrain with the density
falling geometrically, d_i = d^(i/K); each round starts from the last one's masked model, so a weight once
pruned stays pruned.

Joint quantization (``quantize_bits`` n): ADMM again, now with Z = Proj_Q(W + U) ⊙ mask, Proj_Q the
ADMM-NN quantizer (levels ±i·q_c per output channel, q_c searched near max|W_c|/(2^(n−1) − 1) for the
least squared error, ``quantize.qat.project``), then W ← Proj_Q(W) ⊙ mask, the weights frozen and the
biases retrained. The export goes through the QDQ writer of the quantize exporter (int8 codes on the n-bit
grid, per-channel scales q_c, calibrated 8-bit activations).

Knowledge distillation (``distill`` α > 0, temperature T): every training phase above (ADMM, masked
retraining, ADMM quantization and the bias retraining) minimises (1 − α)·CE + α·T²·KL(teacher ‖ student)
(``models.train.distillation_loss``) instead of the cross-entropy, the teacher being a frozen copy of the
dense model ``admm_prune`` starts from (eval mode, its logits taken on the same augmented batch).

Every exported compute node carries ``pimc.sparsity`` and ``pimc.prune = "admm"`` (``"admm-n:m"``).

Dead channels (``shrink``, default on). Non-structured pruning leaves whole units with no weights in or no
weights out: a conv filter none of whose outputs the next layer reads, an FC unit no later weight uses.
Han et al. (NIPS 2015, "Learning both Weights and Connections", §3.3): such neurons "may be safely pruned",
with every connection to or from them. The exported ONNX goes through the graph pass ``shrink``
(``passes/shrink/``, QDQ included), checked on the calibration images to change no output, so
that the file holds only the live network. The storage reference stays the dense model as brought
(``compiler/storage.py``, ``pimc.reference_storage``). Since hidden units are interchangeable, the surviving
ones need no index.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn
from torch.utils.data import DataLoader

from ...compiler.annotations import set_node_annotation
from ...compiler.errors import PimcError
from ...compiler.graph import selection_miss
from ...compiler.modelio import write_model
from ...compiler.workload import constant_value
from ...models.admm import Admm, PrunedLayer, PruningResult
from ...models.train import Distillation, export_onnx, frozen_copy, train_classifier
from .config import PruneConfig, PruneSchedule
from .masks import nm_mask, parse_nm


@dataclass
class PruneResult(PruningResult):
    """What ADMM-NN pruning did (``config`` is the ``PruneConfig``)."""

    scales: dict[str, np.ndarray] = field(default_factory=dict)  # per-channel q_c after quantization
    folded: dict[str, int] = field(default_factory=dict)  # dead output units folded into the next bias
    shrunk: dict[str, Any] = field(default_factory=dict)  # what ``shrink`` removed from the export

    def nonzeros(self) -> tuple[int, int]:
        """(non-zero, total) weights of the pruned layers."""
        nnz = sum(int(torch.count_nonzero(x.module.weight)) for x in self.layers.values())
        return nnz, sum(x.module.weight.numel() for x in self.layers.values())

    def summary(self) -> dict[str, Any]:
        return self.layer_summary(_sparsity) | {"folded_units": self.folded, "shrink": self.shrunk}


def _sparsity(w: torch.Tensor) -> dict[str, Any]:
    nonzero = int(torch.count_nonzero(w))
    return {"params": int(w.numel()), "nonzero": nonzero, "sparsity": round(1 - nonzero / w.numel(), 5)}


def prunable_layers(model: nn.Module, config: PruneConfig) -> tuple[dict[str, PrunedLayer], list[dict[str, str]]]:
    layers, skipped = {}, []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        missed = selection_miss(name, list(config.include), list(config.exclude))
        if missed:
            skipped.append({"node": name, "reason": missed})
            continue
        layers[name] = PrunedLayer(name, module)
    if not layers:
        raise PimcError("no Conv2d or Linear layer is selected for pruning (see include/exclude)")
    return layers, skipped


def projection_masks(layers: dict[str, PrunedLayer], weights: dict[str, torch.Tensor], config: PruneConfig,
                     density: float) -> dict[str, torch.Tensor]:
    """Proj_S as 0/1 masks of ``weights`` (keyed like ``layers``) at the given overall density."""
    nm = parse_nm(config.nm)
    if nm is not None:
        return {n: _nm(w, nm) for n, w in weights.items()}
    if config.scope == "layer":
        return {n: _topk(w.abs(), density) for n, w in weights.items()}
    if config.scope == "erk":
        shares = layer_densities({n: tuple(w.shape) for n, w in weights.items()},
                                 {n: layers[n].is_conv for n in weights}, density, config.conv_weight)
        return {n: _topk(w.abs(), shares[n]) for n, w in weights.items()}
    scores = {n: w.abs() / w.pow(2).mean().sqrt().clamp(min=1e-12) * (config.conv_weight if layers[n].is_conv else 1.0)
              for n, w in weights.items()}
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    keep = max(1, int(round(density * flat.numel())))
    if keep >= flat.numel():
        return {n: torch.ones_like(w) for n, w in weights.items()}
    threshold = torch.topk(flat, keep, sorted=True).values[-1]
    return {n: (s >= threshold).to(weights[n].dtype) for n, s in scores.items()}


def layer_densities(shapes: dict[str, tuple[int, ...]], convs: dict[str, bool], density: float,
                    conv_weight: float) -> dict[str, float]:
    """ERK allocation, convs weighted: d_l = min(1, ε · a_l) with a_l = Σ dims / Π dims (× ``conv_weight``
    for convs), ε chosen so that Σ d_l · n_l = density · Σ n_l (bisection on ε)."""
    sizes = {n: float(np.prod(s)) for n, s in shapes.items()}
    raw = {n: sum(s) / sizes[n] * (conv_weight if convs[n] else 1.0) for n, s in shapes.items()}
    target = density * sum(sizes.values())
    lo, hi = 0.0, 1.0 / min(raw.values())
    for _ in range(100):
        eps = 0.5 * (lo + hi)
        kept = sum(min(1.0, eps * raw[n]) * sizes[n] for n in sizes)
        lo, hi = (eps, hi) if kept < target else (lo, eps)
    return {n: min(1.0, hi * raw[n]) for n in sizes}


def _topk(score: torch.Tensor, density: float) -> torch.Tensor:
    flat = score.reshape(-1)
    keep = max(1, int(round(density * flat.numel())))
    mask = torch.zeros_like(flat)
    mask[torch.topk(flat, keep, sorted=False).indices] = 1.0
    return mask.view_as(score)


def _nm(weight: torch.Tensor, nm: tuple[int, int]) -> torch.Tensor:
    rows = weight.detach().reshape(weight.shape[0], -1).cpu().numpy()
    return torch.from_numpy(nm_mask(rows, *nm).astype(np.float32)).view_as(weight).to(weight.dtype)


def admm_state(layers: dict[str, PrunedLayer], project, schedule: PruneSchedule, steps_per_epoch: int,
               trace: list[dict[str, Any]], label: str) -> Admm:
    """The ADMM iteration over ``layers`` under ``project``; weights already pruned stay at zero after
    every step."""
    def keep_pruned() -> None:
        for x in layers.values():
            x.apply_mask()

    return Admm({n: x.module for n, x in layers.items()}, project, schedule.rho, schedule.rho_growth,
                schedule.update_every or steps_per_epoch, trace=trace, label=label, each_step=keep_pruned)


def _prune_round(model: nn.Module, loader: DataLoader, result: PruneResult, schedule: PruneSchedule,
                 density: float, seed: int, progress: bool, label: str, distill: Distillation | None = None) -> None:
    """One ADMM phase at ``density``, the hard projection and masked retraining."""
    layers, config = result.layers, result.config

    def project(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        masks = projection_masks(layers, {n: _restricted(layers[n], v) for n, v in values.items()}, config, density)
        return {n: v * masks[n] for n, v in values.items()}

    if schedule.admm_epochs > 0:
        state = admm_state(layers, project, schedule, max(1, len(loader)), result.trace, label)
        train_classifier(model, loader, schedule.admm_epochs, lr=schedule.lr, seed=seed, progress=progress,
                         extra_loss=state.penalty, after_step=state.after_step, desc=f"admm {label}",
                         augment=schedule.augment(), distill=distill)
    with torch.no_grad():
        weights = {n: _restricted(x, x.module.weight.detach()) for n, x in layers.items()}
        masks = projection_masks(layers, weights, config, density)
        for n, x in layers.items():
            x.mask = masks[n] if x.mask is None else masks[n] * x.mask
            x.module.weight.mul_(x.mask)
    if schedule.retrain_epochs > 0:
        train_classifier(model, loader, schedule.retrain_epochs, lr=schedule.lr, seed=seed + 1, progress=progress,
                         after_step=lambda _m: apply_masks(result), desc=f"masked retrain {label}",
                         augment=schedule.augment(), distill=distill)
    apply_masks(result)


def _restricted(layer: PrunedLayer, value: torch.Tensor) -> torch.Tensor:
    """A weight restricted to the layer's current support (pruned weights stay pruned)."""
    return value if layer.mask is None else value * layer.mask


@torch.no_grad()
def apply_masks(result: PruneResult) -> None:
    for x in result.layers.values():
        x.apply_mask()


def densities(config: PruneConfig, steps: int) -> list[float]:
    """The density of each progressive step: d^(i/K), i = 1..K."""
    return [config.density ** (i / steps) for i in range(1, steps + 1)]


def admm_prune(model: nn.Module, loader: DataLoader, config: PruneConfig | None = None,
               schedule: PruneSchedule | None = None, seed: int = 0, progress: bool = True) -> PruneResult:
    """ADMM-NN pruning of a (pre-trained) model in place; progressive with ``schedule.steps`` > 1; then,
    with ``schedule.quantize_bits``, ADMM quantization of the surviving weights; with ``schedule.distill``
    every phase distils from a frozen copy of the model as it comes in."""
    config, schedule = config or PruneConfig(), schedule or PruneSchedule()
    config.check()
    schedule.check()
    distill = teacher_of(model, schedule)
    layers, skipped = prunable_layers(model, config)
    result = PruneResult(layers, skipped, config)
    steps = 1 if config.nm else schedule.steps
    for i, density in enumerate(densities(config, steps)):
        label = f"{i + 1}/{steps}" if steps > 1 else "prune"
        _prune_round(model, loader, result, schedule, density, seed + 2 * i, progress, label, distill)
    if schedule.quantize_bits:
        admm_quantize(model, loader, result, schedule, seed + 2 * steps, progress, distill)
    result.folded = fold_dead_units(model, result)
    return result


def teacher_of(model: nn.Module, schedule: PruneSchedule) -> Distillation | None:
    """The distillation from a frozen copy of ``model`` (before any pruning), or None when ``distill`` is 0."""
    if schedule.distill == 0:
        return None
    return Distillation(frozen_copy(model), schedule.distill, schedule.distill_temperature)


ELEMENTWISE = (nn.ReLU, nn.Identity, nn.Dropout)


@torch.no_grad()
def fold_dead_units(model: nn.Module, result: PruneResult) -> dict[str, int]:
    """Exact clean-up after pruning: an output unit j of a Linear whose weight row is all zero is the constant
    c_j = act(b_j), so in Linear → (ReLU | Identity | Dropout)* → Linear inside one nn.Sequential its
    contribution moves into the next Linear's bias (b' += W'[:, j] · c_j) and W'[:, j] and b_j become zero.
    Returns {first Linear's name: units folded}; the next layer's mask loses the folded columns."""
    names = {id(m): n for n, m in model.named_modules()}
    folded = {}
    for seq in (m for m in model.modules() if isinstance(m, nn.Sequential)):
        children = list(seq)
        for i, first in enumerate(children):
            nxt = _next_linear(children, i) if isinstance(first, nn.Linear) and first.bias is not None else None
            if nxt is None:
                continue
            dead = (first.weight == 0).all(dim=1)
            if not bool(dead.any()):
                continue
            value = first.bias.detach().clone()[None]
            for module in children[i + 1:children.index(nxt)]:
                value = module.eval()(value.clone())
            constant = torch.where(dead, value[0], torch.zeros_like(value[0]))
            if nxt.bias is not None:
                nxt.bias.add_(nxt.weight @ constant)
            elif bool(constant.any()):
                continue
            nxt.weight[:, dead] = 0.0
            first.bias[dead] = 0.0
            layer = result.layers.get(names[id(nxt)])
            if layer is not None and layer.mask is not None:
                layer.mask[:, dead] = 0.0
            folded[names[id(first)]] = int(dead.sum())
    return folded


def _next_linear(children: list[nn.Module], i: int) -> nn.Linear | None:
    """The Linear after children[i] when only element-wise modules lie between them."""
    for module in children[i + 1:]:
        if isinstance(module, nn.Linear):
            return module
        if not isinstance(module, ELEMENTWISE):
            return None
    return None


def admm_quantize(model: nn.Module, loader: DataLoader, result: PruneResult, schedule: PruneSchedule,
                  seed: int, progress: bool, distill: Distillation | None = None) -> None:
    """ADMM quantization of the survivors onto ±i·q_c, hard projection, frozen weights, bias retraining."""
    bits = int(schedule.quantize_bits or 8)
    layers = result.layers

    per_layer = schedule.quantize_scale == "layer"

    def project(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: grid_project(v, bits, per_layer)[0] * _mask(layers[n], v) for n, v in values.items()}

    if schedule.quantize_epochs > 0:
        state = admm_state(layers, project, schedule, max(1, len(loader)), result.trace, f"quantize {bits}b")
        train_classifier(model, loader, schedule.quantize_epochs, lr=schedule.lr, seed=seed, progress=progress,
                         extra_loss=state.penalty, after_step=state.after_step, desc=f"admm quantize {bits}b",
                         augment=schedule.augment(), distill=distill)
    with torch.no_grad():
        for n, x in layers.items():
            z, q = grid_project(x.module.weight.detach(), bits, per_layer)
            x.module.weight.copy_(z * _mask(x, z))
            x.module.weight.requires_grad_(False)
            result.scales[n] = q.cpu().numpy()
    if schedule.quantize_epochs > 0 and any(p.requires_grad for p in model.parameters()):
        train_classifier(model, loader, schedule.quantize_epochs, lr=schedule.lr, seed=seed + 1, progress=progress,
                         desc="retrain biases", augment=schedule.augment(), distill=distill)
    for x in layers.values():
        x.module.weight.requires_grad_(True)


def grid_project(weight: torch.Tensor, bits: int, per_layer: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """ADMM-NN's Proj_Q (``quantize.qat.project``) with one q per output channel, or (``per_layer``) one q
    for the whole layer, returned repeated per output channel (the QDQ writer takes per-channel scales)."""
    from ..quantize.qat import project as quant_project

    if not per_layer:
        return quant_project(weight, bits)
    z, q = quant_project(weight.reshape(1, -1), bits)
    return z.view_as(weight), q.expand(weight.shape[0]).clone()


def _mask(layer: PrunedLayer, like: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(like) if layer.mask is None else layer.mask


def weight_nonzeros(model: nn.Module) -> tuple[int, int]:
    """(non-zero, total) weights over every Conv2d and Linear of a torch model."""
    nnz = total = 0
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nnz += int(torch.count_nonzero(module.weight))
            total += module.weight.numel()
    return nnz, total


def export_pruned_onnx(model: nn.Module, result: PruneResult, path: str | os.PathLike,
                       input_shape: tuple[int, int, int], calibration: list[dict[str, np.ndarray]] | None = None,
                       act_bits: int = 8, bits: int | None = None) -> onnx.ModelProto:
    """Export (through the QDQ writer when the weights were quantized) and annotate the compute nodes."""
    out = Path(path)
    if bits:
        from ..quantize.qat import QuantState, quant_layers, write_quantized_onnx
        from ..quantize.qat import project as quant_project

        state = QuantState(bits, act_bits, scales={n: s.astype(np.float32) for n, s in result.scales.items()})
        for name, module in quant_layers(model):  # layers outside the pruned set: plain n-bit projection
            if name not in state.scales:
                with torch.no_grad():
                    z, q = quant_project(module.weight.detach(), bits)
                    module.weight.copy_(z)
                state.scales[name] = q.cpu().numpy().astype(np.float32)
        proto = write_quantized_onnx(model, state, out, input_shape, calibration or [])
    else:
        export_onnx(model, out, input_shape)
        proto = onnx.load(str(out))
    label = "admm-n:m" if result.config.nm else "admm"
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1:
            weight = constant_value(proto, node.input[1])
            if weight is not None:
                set_node_annotation(node, "sparsity", round(1 - np.count_nonzero(weight) / weight.size, 6))
                set_node_annotation(node, "prune", label)
                if result.config.nm:
                    set_node_annotation(node, "nm", result.config.nm)
    if result.config.shrink:
        proto, result.shrunk = remove_dead_channels(proto, calibration)
    write_model(proto, out)
    return proto


def exported_nonzeros(proto: onnx.ModelProto) -> int:
    """Non-zero Conv / Gemm / MatMul weights of an exported model."""
    from ...compiler.storage import weighted_nodes

    return sum(int(np.count_nonzero(weight)) for _, weight, _, _ in weighted_nodes(proto))


def remove_dead_channels(proto: onnx.ModelProto, feeds: list[dict[str, np.ndarray]] | None
                         ) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The graph passes ``shrink`` and ``cleanup`` (the cut weights' old initializers go) on the export,
    verified on ``feeds`` (else random inputs) to be exact."""
    from ...compiler.passbase import PassContext, get_pass
    from ...compiler.pipeline import PassManager
    from ...compiler.sessions import random_feeds

    checks = (feeds or [])[:8] or random_feeds(proto, 4, 0)
    manager = PassManager([get_pass("shrink")(), get_pass("cleanup")()], PassContext(calibration=feeds),
                          verify=True, verify_feeds=checks)
    shrunk = manager.run(proto)
    record, last = manager.records[0], manager.records[-1]
    return shrunk, {"channels_removed": record.stats["channels_removed"], "removed": record.stats["removed"],
                    "params_before": record.before.params, "params_after": last.after.params,
                    "max_abs_err": max(r.max_abs_err or 0.0 for r in manager.records)}


def compress_trained(model, loader, shape, output, config: PruneConfig, schedule: PruneSchedule, *,
                     seed: int = 0, progress: bool = True):
    """The ``prune`` method (``compiler/method.py``): ADMM-NN pruning (and joint quantization) of a trained model."""
    from ...models.train import calibration_inputs
    from ..quantize.qat import fold_batchnorm

    if schedule.quantize_bits:
        model = fold_batchnorm(model)
    result = admm_prune(model, loader, config, schedule, seed=seed, progress=progress)
    calibration = calibration_inputs(loader, 256) if schedule.quantize_bits else None
    export_pruned_onnx(model, result, output, shape, calibration, schedule.act_bits, schedule.quantize_bits)
    return model
