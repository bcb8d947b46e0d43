"""Training-aware pattern pruning (ADMM-NN / PatDNN) of any torch model, and its ONNX export.

Constraint set of a pruned conv (see ``pattern_prune``): S = S_pattern ∩ S_connectivity, every kernel's
support inside one of the layer's library patterns and at most N − ⌊c·N⌋ non-zero kernels. Its exact
Euclidean projection Proj_S is ``pattern_prune.prune_kernels`` with the library fixed.

ADMM (scaled form), for every pruned layer with weight W, auxiliary Z and scaled dual U:

    W ← argmin  loss(W) + ρ/2 · ‖W − Z + U‖²          (SGD/Adam steps between updates)
    Z ← Proj_S(W + U)                                   (every ``update_every`` steps, default 1 epoch)
    U ← U + W − Z
    ρ ← growth · ρ,  U ← U / growth                     (ρ grows ×1.1–2; U = λ/ρ is rescaled so the
                                                          unscaled dual λ is unchanged)

The library is derived once, from the weights at the start (PatDNN), then fixed. After the ADMM
phase comes the hard projection W ← Proj_S(W) and masked retraining (the masks are re-applied after
every optimiser step). ``oneshot`` skips ADMM: project, then masked fine-tuning.

The export writes ONNX with the torch exporter and then runs the ``pattern-prune`` pass on the
already-projected Convs: it re-derives the layer's library from the final weights, changes no weight
(checked) and writes the same annotations the graph pass writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn
from torch.utils.data import DataLoader

from ...compiler.errors import PimcError
from ...compiler.modelio import write_model
from ...models.admm import Admm, PrunedLayer, PruningResult, per_layer
from ...models.train import export_onnx, train_classifier
from .config import AdmmSchedule, PatternConfig
from .pattern_prune import (
    PRUNED,
    derive_library,
    masks_of,
    prune_kernels,
    selected,
    skip_reason,
)


class PatternPruneResult(PruningResult):
    """What pattern pruning did (``config`` is the ``PatternConfig``)."""

    def summary(self) -> dict[str, Any]:
        return self.layer_summary(_kernel_counts)


def _kernel_counts(w: torch.Tensor) -> dict[str, int]:
    kernels = w.reshape(-1, w.shape[2] * w.shape[3])
    return {"nonzero": int(torch.count_nonzero(w)), "params": int(w.numel()),
            "kernels_removed": int((~kernels.ne(0).any(dim=1)).sum()), "kernels": int(kernels.shape[0])}


def eligible_convs(model: nn.Module, config: PatternConfig) -> tuple[dict[str, nn.Conv2d], list[dict[str, str]]]:
    """The convs the pass would prune (same rules), keyed by module name; and the skipped ones with reasons."""
    chosen: dict[str, nn.Conv2d] = {}
    skipped: list[dict[str, str]] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        if not selected(name, config):
            skipped.append({"node": name, "reason": "excluded by include/exclude"})
            continue
        reason = skip_reason(tuple(module.weight.shape), module.groups)
        if reason:
            skipped.append({"node": name, "reason": reason})
            continue
        chosen[name] = module
    if not chosen:
        raise PimcError("no convolution is eligible for pattern pruning (see the include/exclude options)")
    return chosen, skipped


def prepare(model: nn.Module, config: PatternConfig) -> PatternPruneResult:
    """Pick the layers and derive each one's library from its current weights."""
    convs, skipped = eligible_convs(model, config)
    layers = {}
    for name, module in convs.items():
        w = module.weight.detach().cpu().numpy()
        k = w.shape[2]
        kernels = w.reshape(-1, k * k)
        library = derive_library(kernels, config.nonzeros_for(k), config.patterns, config.library)
        layers[name] = PrunedLayer(name, module, library=library)
    return PatternPruneResult(layers, skipped, config)


def project_weight(weight: torch.Tensor, layer: PrunedLayer, config: PatternConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Proj_S of a weight tensor with the layer's fixed library: (projected weight, 0/1 mask)."""
    w = weight.detach().cpu().numpy()
    result = prune_kernels(w, config, library=layer.library)
    k2 = w.shape[2] * w.shape[3]
    ids = result.ids.reshape(-1)
    masks = masks_of(layer.library, k2)[np.where(ids == PRUNED, 0, ids)]
    masks[ids == PRUNED] = False
    mask = torch.from_numpy(masks.reshape(w.shape).astype(np.float32)).to(weight.dtype)
    return torch.from_numpy(result.weight).to(weight.dtype), mask


def admm_state(result: PatternPruneResult, schedule: AdmmSchedule, steps_per_epoch: int) -> Admm:
    """The ADMM iteration over the pruned layers, projecting each onto its pattern set."""
    def project_one(name: str, values: torch.Tensor) -> torch.Tensor:
        return project_weight(values, result.layers[name], result.config)[0]

    modules = {name: layer.module for name, layer in result.layers.items()}
    return Admm(modules, per_layer(project_one), schedule.rho, schedule.rho_growth,
                schedule.update_every or steps_per_epoch, trace=result.trace)


@torch.no_grad()
def hard_project(result: PatternPruneResult) -> None:
    """W ← Proj_S(W) for every layer and remember the masks."""
    for layer in result.layers.values():
        projected, mask = project_weight(layer.module.weight, layer, result.config)
        layer.module.weight.copy_(projected)
        layer.mask = mask


@torch.no_grad()
def apply_masks(result: PatternPruneResult) -> None:
    for layer in result.layers.values():
        layer.apply_mask()


def masked_retrain(
    model: nn.Module, loader: DataLoader, result: PatternPruneResult, epochs: int, lr: float, seed: int, progress: bool
) -> None:
    if epochs > 0:
        train_classifier(
            model, loader, epochs, lr=lr, seed=seed, progress=progress,
            after_step=lambda _m: apply_masks(result), desc="masked retrain",
        )
    apply_masks(result)


def admm_prune(
    model: nn.Module, loader: DataLoader, config: PatternConfig, schedule: AdmmSchedule | None = None,
    seed: int = 0, progress: bool = True,
) -> PatternPruneResult:
    """ADMM pattern + connectivity pruning of a (pre-trained) model in place, then hard projection and
    masked retraining."""
    schedule = schedule or AdmmSchedule()
    schedule.check()
    result = prepare(model, config)
    if schedule.admm_epochs > 0:
        state = admm_state(result, schedule, max(1, len(loader)))
        train_classifier(
            model, loader, schedule.admm_epochs, lr=schedule.lr, seed=seed, progress=progress,
            extra_loss=state.penalty, after_step=state.after_step, desc="admm",
        )
    hard_project(result)
    masked_retrain(model, loader, result, schedule.retrain_epochs, schedule.lr, seed + 1, progress)
    return result


def oneshot_prune(
    model: nn.Module, loader: DataLoader, config: PatternConfig, finetune_epochs: int = AdmmSchedule.retrain_epochs,
    lr: float = AdmmSchedule.lr,
    seed: int = 0, progress: bool = True,
) -> PatternPruneResult:
    """Project once (library from the current weights), then masked fine-tuning."""
    result = prepare(model, config)
    hard_project(result)
    masked_retrain(model, loader, result, finetune_epochs, lr, seed + 1, progress)
    return result


def conv_weight_nonzeros(model: nn.Module) -> tuple[int, int]:
    """(non-zero, total) weights over every Conv2d of a torch model."""
    nnz = total = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nnz += int(torch.count_nonzero(module.weight))
            total += module.weight.numel()
    return nnz, total


def export_pattern_onnx(
    model: nn.Module, result: PatternPruneResult, path: str | os.PathLike, input_shape: tuple[int, int, int],
    dynamo: bool = False,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Export to ONNX and annotate the pruned Convs with the pattern-prune pass (no weight may change)."""
    from .pattern_prune import prune_model

    out = Path(path)
    export_onnx(model, out, input_shape, dynamo=dynamo)
    proto = onnx.load(str(out))
    nodes = match_nodes(proto, result.layers.values())
    before = _weights(proto, nodes.values())
    changed, stats = prune_model(proto, _pass_config(result.config), only=set(nodes.values()))
    after = _weights(proto, nodes.values())
    moved = [n for n in before if not np.array_equal(before[n], after[n])]
    if moved:
        raise PimcError(f"exported weights of {moved[0]} do not conform to the pattern constraints")
    stats["modules"] = nodes
    write_model(proto, out)
    return proto, stats


def _pass_config(config: PatternConfig) -> PatternConfig:
    """The pass configuration that recognises the export: node selection is done by ``only``."""
    return PatternConfig(config.patterns, config.nonzeros, config.connectivity, config.library)


def match_nodes(proto: onnx.ModelProto, layers: Iterable[PrunedLayer]) -> dict[str, str]:
    """Torch module name → ONNX Conv node, matched by weight shape and zero pattern (BN folding only
    scales output channels, which keeps zeros)."""
    inits = {t.name: t for t in proto.graph.initializer}
    convs = [n for n in proto.graph.node if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in inits]
    taken: set[str] = set()
    found: dict[str, str] = {}
    for layer in layers:
        zero = (layer.module.weight.detach().cpu().numpy() == 0)
        for node in convs:
            if node.name in taken:
                continue
            w = onnx.numpy_helper.to_array(inits[node.input[1]])
            if w.shape == zero.shape and np.array_equal(w == 0, zero):
                found[layer.name] = node.name
                taken.add(node.name)
                break
        else:
            raise PimcError(f"cannot find the exported Conv of module '{layer.name}'")
    return found


def _weights(proto: onnx.ModelProto, names: Iterable[str]) -> dict[str, np.ndarray]:
    inits = {t.name: t for t in proto.graph.initializer}
    by_node = {n.name: n for n in proto.graph.node}
    return {n: onnx.numpy_helper.to_array(inits[by_node[n].input[1]]) for n in names}


def compress_trained(model, loader, shape, output, config: PatternConfig, schedule: AdmmSchedule, *,
                     seed: int = 0, progress: bool = True):
    """The ``pattern`` method (``compiler/method.py``): ADMM or one-shot pattern pruning of a trained model."""
    export_pattern_onnx(model, pattern_prune_model(model, loader, config, schedule, seed, progress), output, shape)
    return model


def pattern_prune_model(model: nn.Module, loader: Any, config: PatternConfig, schedule: AdmmSchedule, seed: int = 0,
                        progress: bool = True) -> PatternPruneResult:
    """``schedule.mode``: ADMM then masked retraining, or one projection then fine-tuning."""
    if schedule.mode == "admm":
        return admm_prune(model, loader, config, schedule, seed=seed, progress=progress)
    return oneshot_prune(model, loader, config, schedule.retrain_epochs, schedule.lr, seed=seed, progress=progress)
