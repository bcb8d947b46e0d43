"""Training-aware channel pruning (``pimc export channel-prune``): group lasso on the channel norms, hard
pruning of whole channel groups with their readers refitted, and fine-tuning of the narrowed network, in
``steps`` rounds.

Each round works on the model as ONNX (exported, BatchNorms folded), where ``channel-prune`` finds the channel
groups (DepGraph's rule: the filters of every layer writing a residual stream go together; ``channel_prune.py``):

1. **Group lasso** (``lasso_epochs`` epochs, λ = ``penalty``). The ONNX model becomes a trainable torch module
   (``models.from_onnx.OnnxModule``) trained on the task loss plus

       R = λ · Σ_g Σ_c ‖θ_g,c‖₂,      θ_g,c = (W_p[c], b_p[c])  for every producer p of group g,

   the group lasso of Yuan & Lin (2006) with one group per tied channel, so a channel the task does not need
   is driven to zero in all its producers at once (Wen et al., NeurIPS 2016, structured sparsity learning).
2. **Pruning.** ``channel-prune`` with a forced ratio: each round removes the same fraction 1 − (1 − ratio)^(1/steps)
   of every group's current channels (kept counts rounded to the nearest multiple of ``block``), the least
   salient first (the share of the readers' outputs a channel carries, on ``calibration`` training images),
   refits every reader by least squares and narrows the network (``shrink``).
3. **Fine-tuning** (``finetune_epochs``) of the narrowed module: cross-entropy, mixed with the distillation loss
   from the unpruned model (weight ``distill``; L1 for image targets, which are not distilled).

There are no masks: after a round the network is narrower, so fine-tuning cannot regrow a removed channel
(masked fine-tuning of the zeroed channels, with the zeros removed afterwards, computes the same).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn
from torch.utils.data import DataLoader

from ...compiler.graph import real_inputs
from .channel_prune import ChannelGroup, channel_groups
from .config import ChannelPruneConfig


def compress_trained(model: nn.Module, loader: DataLoader, shape: tuple[int, ...], output: str | Path,
                     config: ChannelPruneConfig, *, seed: int = 0, progress: bool = True) -> nn.Module:
    """The ``channel-prune`` method (``compiler/method.py``): prune ``model`` in rounds, write the narrowed ONNX."""
    from ...compiler.modelio import write_model
    from ...models.from_onnx import OnnxModule
    from ...models.train import Distillation, loader_arrays, train_classifier

    config.check()
    x, y = loader_arrays(loader)
    feeds = _calibration(x, config.calibration, seed)
    image_targets = np.asarray(y).ndim == 4
    teacher = copy.deepcopy(model).eval()
    distill = Distillation(teacher, config.distill) if config.distill and not image_targets else None
    current = as_onnx(model, shape)
    module: nn.Module = model
    for step in range(config.steps):
        tag = f"{step + 1}/{config.steps}"
        if config.penalty and config.lasso_epochs:
            module = OnnxModule(current)
            lasso = group_lasso(module, channel_groups(current)[0], config.penalty)
            train_classifier(module, loader, config.lasso_epochs, lr=config.lr, seed=seed + step, progress=progress,
                             extra_loss=lasso, desc=f"group lasso {tag}")
            current = as_onnx(module, shape)
        current = prune_round(current, feeds, config.step_ratio, config.block)
        module = OnnxModule(current)
        if config.finetune_epochs:
            train_classifier(module, loader, config.finetune_epochs, lr=config.lr, seed=seed + step,
                             progress=progress, desc=f"fine-tune {tag}", distill=distill)
            current = as_onnx(module, shape)
    write_model(current, Path(output))
    return module


def _calibration(x: np.ndarray, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    pick = np.sort(np.random.default_rng(seed).choice(len(x), min(count, len(x)), replace=False))
    return [{"input": np.asarray(x[i:i + 1], np.float32)} for i in pick]


def as_onnx(module: nn.Module, shape: tuple[int, ...]) -> onnx.ModelProto:
    """``module`` exported (legacy exporter) and normalised: constants folded, BatchNorms folded, cleaned."""
    from ...compiler.loader import load_model
    from ...compiler.passbase import PassContext, get_pass
    from ...compiler.pipeline import PassManager
    from ...models.train import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(module, Path(tmp) / "m.onnx", tuple(shape))
        model = load_model(path)
    passes = [get_pass(n)() for n in ("fold-constants", "eliminate-identity", "fold-batchnorm", "cleanup")]
    return PassManager(passes, PassContext()).run(model)


def prune_round(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], ratio: float,
                block: int) -> onnx.ModelProto:
    """``channel-prune`` forced at ``ratio`` (kept counts to the nearest multiple of ``block``), its readers
    refitted on ``feeds`` (one image each under ``"input"``), narrowed."""
    from ...compiler.passbase import PassContext, get_pass
    from ...compiler.pipeline import PassManager

    name = real_inputs(model)[0].name
    calibration = [{name: feed["input"]} for feed in feeds]
    prune = get_pass("channel-prune")(ratio=ratio, block=block, rounding="nearest")
    return PassManager([prune, get_pass("cleanup")()], PassContext(calibration=calibration)).run(model)


def group_lasso(module: nn.Module, groups: list[ChannelGroup], penalty: float):
    """``R(module)`` of the module docstring over the producers of ``groups`` (``OnnxModule`` layers)."""
    members = [[module.layers[module.keys[p.node.name]] for p in g.producers if p.node.name in module.keys]
               for g in groups]
    members = [layers for layers in members if layers]

    def loss(_model: Any) -> torch.Tensor:
        total = torch.zeros(())
        for layers in members:
            squares = sum(_channel_squares(layer) for layer in layers)
            total = total + torch.sqrt(squares + 1e-12).sum()
        return penalty * total

    return loss


def _channel_squares(layer: nn.Module) -> torch.Tensor:
    """Σ over each output channel's weights (and bias) of their squares."""
    squares = layer.weight.pow(2).reshape(layer.weight.shape[0], -1).sum(dim=1)
    return squares + layer.bias.pow(2) if layer.bias is not None else squares
