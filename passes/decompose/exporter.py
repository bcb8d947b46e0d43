"""PENNI training-aware exporter (torch): decompose, train alternately with sparsity terms, prune, fine-tune, export.

Library use on any model and DataLoader::

    from pimc.passes.decompose.exporter import PenniConfig, penni_compress, export_penni
    stats = penni_compress(model, train_loader, PenniConfig(rank=5, epochs=12))
    export_penni(model, "model.penni.onnx", input_shape=(3, 32, 32))

Steps (PENNI, ICML 2020, and the authors' code as summarised in ANCHORS.md, plus channel-level sparsity
so that ``shrink`` can remove whole channels):
1. ``replace_convs`` swaps every ``nn.Conv2d`` with groups = 1, a kernel larger than 1×1 and zero padding
   for a ``DecomposedConv2d``: basis B (d × kh × kw, shared by the layer) and coefficients C
   (Cout × Cin × d), initialised from the uncentred SVD of the (Cout·Cin, k²) kernel matrix, so that
   W[o, c] = Σ_j C[o, c, j] B_j.  Training computes W explicitly and runs one dense conv (fast on CPU).
2. Alternating training: the coefficients train while the basis is frozen, then the other way round,
   swapping every ``swap_every`` epochs; BN and other layers always train. The loss adds
       ``l1`` · Σ|C|  +  ``group_l1`` · Σ_layers ( Σ_o ‖C[o, :, :]‖₂ + Σ_c ‖C[:, c, :]‖₂ ),
   the PENNI L1 term plus a group lasso over every output-channel slice (the Cin×d coefficients of
   filter o) and every input-channel slice (the Cout×d coefficients reading channel c). The L1 term makes
   single coefficients small; the group terms make whole slices small together, which is what lets
   ``shrink`` remove channels (unstructured zeros alone leave every channel alive). After every step each
   basis kernel is rescaled to unit norm and its coefficients by the inverse factor (the product is
   unchanged), so neither penalty can be dodged by growing B.
3. Pruning, per layer: coefficients with |c| < ``threshold``·std(C) are zeroed (PENNI), and every output
   or input slice whose norm ‖C_g‖₂ is below ``group_threshold`` × the mean norm of its kind (filters or
   input channels) is zeroed as a whole. The statistics are taken over the whole layer with the pruned
   zeros included, so with ``prune_rounds`` = r > 1 (the alternating epochs cut into r rounds, pruning
   after each; training continues with the masks) the rounds do not compound into removing everything;
   the layer's largest coefficient always survives.
4. Dead output channels are made exactly zero: a filter o with no surviving coefficient outputs its bias,
   and after the following BatchNorm β − γ·μ/σ, so after a ReLU relu(β − γμ/σ) ≠ 0 in general, a constant
   that a zero-padded 3×3 consumer cannot absorb into its bias exactly. The exporter therefore zeroes the
   layer's bias entry and the γ, β (and running mean) of the BatchNorm that reads the layer's output
   directly (found with forward hooks on one batch, so any torch model works) and keeps them at zero during
   training (re-applied after every optimiser step). The channel is then 0 everywhere, relu(0) = 0, and
   ``shrink`` removes it and the consumer's input slice exactly. Inside a residual block the channel
   space ends at the Add, whose shortcut keeps it alive; only a channel dead in every producer of the
   residual stream can go, so the removable width is mainly the inner channels of each block.
5. Masked fine-tuning of basis and surviving coefficients (masked coefficients and dead-channel BN
   parameters stay exactly zero).
6. ``export_penni`` exports the two-conv form (depthwise basis conv with Cin·d outputs, channel c·d+j =
   input c ∗ B_j, then a 1×1 coefficient conv), annotates the pairs (role, rank, layer, kernel), folds
   BatchNorm and runs the exact ``shrink`` pass, which drops dead channels and unused basis kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ...compiler.errors import PimcError


class DecomposedConv2d(nn.Module):
    """A Conv2d as a shared basis (d × kh × kw) and per-kernel coefficients (Cout × Cin × d)."""

    def __init__(self, conv: nn.Conv2d, rank: int = 5):
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros":
            raise PimcError("DecomposedConv2d needs groups=1 and zero padding")
        weight = conv.weight.detach().to(torch.float64)
        cout, cin, kh, kw = weight.shape
        u, s, vh = torch.linalg.svd(weight.reshape(cout * cin, kh * kw), full_matrices=False)
        d = max(1, min(rank, kh * kw, cout * cin))
        self.in_channels, self.out_channels, self.kernel_size, self.rank = cin, cout, (kh, kw), d
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        dtype = conv.weight.dtype
        self.basis = nn.Parameter(vh[:d].reshape(d, kh, kw).to(dtype))
        self.coefficient = nn.Parameter((u[:, :d] * s[:d]).reshape(cout, cin, d).to(dtype))
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None
        self.register_buffer("mask", torch.ones(cout, cin, d, dtype=dtype))
        self.two_conv = False
        self.frozen_export: tuple[torch.Tensor, torch.Tensor] | None = None

    def masked_coefficient(self) -> torch.Tensor:
        return self.coefficient * self.mask

    def dense_weight(self) -> torch.Tensor:
        return torch.einsum("ocj,jhw->ochw", self.masked_coefficient(), self.basis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.two_conv:
            return F.conv2d(x, self.dense_weight(), self.bias, self.stride, self.padding, self.dilation)
        basis, coef = self.two_conv_weights()
        mid = F.conv2d(x, basis, None, self.stride, self.padding, self.dilation, groups=self.in_channels)
        return F.conv2d(mid, coef, self.bias)

    def two_conv_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Depthwise basis weight (Cin·d, 1, kh, kw), channel c·d+j = B_j, and 1×1 weight (Cout, Cin·d, 1, 1)."""
        if self.frozen_export is not None:
            return self.frozen_export
        cin, d = self.in_channels, self.rank
        kh, kw = self.kernel_size
        basis = self.basis.unsqueeze(0).expand(cin, d, kh, kw).reshape(cin * d, 1, kh, kw)
        return basis, self.masked_coefficient().reshape(self.out_channels, cin * d, 1, 1)

    @torch.no_grad()
    def normalize_basis(self) -> None:
        """Unit-norm basis kernels; coefficients absorb the scale (W unchanged)."""
        norms = self.basis.reshape(self.rank, -1).norm(dim=1).clamp_min(1e-12)
        self.basis.div_(norms.view(-1, 1, 1))
        self.coefficient.mul_(norms.view(1, 1, -1))

    def group_norms(self) -> torch.Tensor:
        """‖C[o]‖₂ for every filter o, then ‖C[:, c]‖₂ for every input channel c (smoothed at 0)."""
        coef = self.masked_coefficient()
        out = (coef.square().sum(dim=(1, 2)) + 1e-12).sqrt()
        inp = (coef.square().sum(dim=(0, 2)) + 1e-12).sqrt()
        return torch.cat([out, inp])

    @torch.no_grad()
    def prune(self, threshold: float, group_threshold: float = 0.0) -> float:
        """Zero |c| < threshold·std(C) and slices with norm < group_threshold · mean slice norm.

        Statistics are over the whole layer, pruned zeros included, so repeated pruning rounds do not
        compound; the largest coefficient always survives. Returns the kept fraction of coefficients.
        """
        coef = self.masked_coefficient()
        keep = coef.abs() >= threshold * float(coef.std())
        if group_threshold > 0:
            keep_out = _keep_groups(coef.square().sum(dim=(1, 2)).sqrt(), group_threshold)
            keep_in = _keep_groups(coef.square().sum(dim=(0, 2)).sqrt(), group_threshold)
            keep &= keep_out.view(-1, 1, 1) & keep_in.view(1, -1, 1)
        if not bool(keep.any()):
            keep = keep.reshape(-1).clone()
            keep[int(torch.argmax(coef.abs()))] = True
        self.mask.mul_(keep.reshape(self.mask.shape).to(self.mask.dtype))
        self.coefficient.mul_(self.mask)
        return float(self.mask.mean())

    def dead_outputs(self) -> torch.Tensor:
        """Boolean [Cout]: filters with no surviving coefficient."""
        return self.mask.sum(dim=(1, 2)) == 0


def _keep_groups(norms: torch.Tensor, ratio: float) -> torch.Tensor:
    """Slices whose norm reaches ``ratio`` × the mean slice norm (pruned slices count as 0)."""
    return norms >= ratio * float(norms.mean())


def eligible(module: nn.Module) -> bool:
    return (isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros"
            and module.kernel_size[0] * module.kernel_size[1] > 1)


def replace_convs(model: nn.Module, rank: int = 5, include: Callable[[str], bool] | None = None
                  ) -> dict[str, DecomposedConv2d]:
    """Replace every eligible Conv2d (in place) with a DecomposedConv2d; return them by module name."""
    replaced: dict[str, DecomposedConv2d] = {}
    for name, module in list(model.named_modules()):
        if not eligible(module) or (include is not None and not include(name)):
            continue
        parent_name, _, attr_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = DecomposedConv2d(module, rank).to(module.weight.device)
        setattr(parent, attr_name, layer)
        replaced[name] = layer
    if not replaced:
        raise PimcError("the model has no Conv2d with groups=1 and a kernel larger than 1x1 to decompose")
    return replaced


def decomposed_layers(model: nn.Module) -> dict[str, DecomposedConv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, DecomposedConv2d)}


@dataclass
class PenniConfig:
    """Hyper-parameters of ``penni_compress`` (see the module docstring for their meaning)."""

    rank: int = 5
    epochs: int = 12
    swap_every: int = 2
    l1: float = 1e-4
    group_l1: float = 1e-2
    threshold: float = 1.0
    group_threshold: float = 1.0
    prune_rounds: int = 3
    finetune_epochs: int = 6
    lr: float = 3e-3
    weight_decay: float = 5e-4
    seed: int = 0
    progress: bool = True


class DeadChannels:
    """Keeps dead filters exactly zero: the layer's bias entry and the following BatchNorm's γ, β, μ."""

    def __init__(self, layers: dict[str, DecomposedConv2d], followers: dict[str, nn.Module]):
        self.layers = layers
        self.followers = followers

    @torch.no_grad()
    def apply(self) -> int:
        """Zero every dead channel's bias / BN entries; return how many channels are dead."""
        total = 0
        for name, layer in self.layers.items():
            dead = layer.dead_outputs()
            if not bool(dead.any()):
                continue
            total += int(dead.sum())
            if layer.bias is not None:
                layer.bias[dead] = 0
            bn = self.followers.get(name)
            if bn is not None:
                for tensor in (bn.weight, bn.bias, bn.running_mean):
                    if tensor is not None:
                        tensor[dead] = 0
        return total


def find_followers(model: nn.Module, layers: dict[str, DecomposedConv2d], sample: torch.Tensor
                   ) -> dict[str, nn.Module]:
    """The BatchNorm that reads each decomposed layer's output directly, found by running ``sample``.

    Outputs are kept referenced during the probe so tensor ids cannot be reused.
    """
    produced: dict[int, str] = {}
    kept: list[torch.Tensor] = []
    followers: dict[str, nn.Module] = {}

    def on_layer(name: str):
        def hook(_module, _inputs, output):
            produced[id(output)] = name
            kept.append(output)
        return hook

    def on_bn(module, inputs):
        name = produced.get(id(inputs[0])) if inputs else None
        if name is not None and module.num_features == layers[name].out_channels:
            followers.setdefault(name, module)

    handles = [layer.register_forward_hook(on_layer(name)) for name, layer in layers.items()]
    handles += [m.register_forward_pre_hook(on_bn) for m in model.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return followers


def _first_inputs(loader: Iterable) -> torch.Tensor | None:
    for batch in loader:
        return batch[0][:2] if isinstance(batch, (list, tuple)) else batch[:2]
    return None


def penni_compress(model: nn.Module, train_loader: Iterable, config: PenniConfig | None = None,
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> dict[str, Any]:
    """Decompose, train alternately with L1 + group lasso, prune, fine-tune ``model`` in place; return statistics.

    ``train_loader`` yields (inputs, targets); ``loss_fn`` defaults to cross-entropy.
    """
    cfg = config or PenniConfig()
    if cfg.epochs < 0 or cfg.finetune_epochs < 0 or cfg.swap_every < 1 or cfg.prune_rounds < 1:
        raise PimcError("epochs and finetune_epochs must be >= 0, swap_every and prune_rounds >= 1")
    torch.manual_seed(cfg.seed)
    layers = decomposed_layers(model) or replace_convs(model, cfg.rank)
    sample = _first_inputs(train_loader)
    dead = DeadChannels(layers, find_followers(model, layers, sample) if sample is not None else {})
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    kept: dict[str, float] = {}

    def prune() -> None:
        kept.update({name: layer.prune(cfg.threshold, cfg.group_threshold) for name, layer in layers.items()})
        dead.apply()

    rounds = min(cfg.prune_rounds, max(cfg.epochs, 1))
    prune_after = {round(cfg.epochs * (r + 1) / rounds) - 1 for r in range(rounds - 1)}
    history: list[float] = []
    if cfg.epochs:
        history += _train(model, layers, train_loader, cfg, cfg.epochs, loss_fn, alternate=True, desc="penni train",
                          dead=dead, on_epoch_end=lambda e: prune() if e in prune_after else None)
    prune()
    if cfg.finetune_epochs:
        history += _train(model, layers, train_loader, cfg, cfg.finetune_epochs, loss_fn, alternate=False,
                          desc="penni fine-tune", dead=dead)
    model.eval()
    channels = {name: int(layer.dead_outputs().sum()) for name, layer in layers.items()}
    return {"layers": len(layers), "kept_fraction": kept, "dead_filters": channels,
            "bn_followers": sorted(dead.followers), "loss": history, **parameter_counts(model)}


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Dense conv weights the decomposed layers replace vs their basis + non-zero coefficients."""
    dense = compressed = 0
    for layer in decomposed_layers(model).values():
        kh, kw = layer.kernel_size
        dense += layer.out_channels * layer.in_channels * kh * kw
        compressed += layer.rank * kh * kw + int(layer.mask.sum())
    return {"decomposed_dense_params": dense, "decomposed_params": compressed}


def sparsity_penalty(layers: dict[str, DecomposedConv2d], l1: float, group_l1: float) -> torch.Tensor | None:
    """l1 · Σ|C| + group_l1 · Σ slice norms over all decomposed layers (None when both weights are 0)."""
    terms = []
    for layer in layers.values():
        if l1:
            terms.append(l1 * layer.masked_coefficient().abs().sum())
        if group_l1:
            terms.append(group_l1 * layer.group_norms().sum())
    return torch.stack(terms).sum() if terms else None


def _param_groups(model: nn.Module, layers: dict[str, DecomposedConv2d], cfg: PenniConfig) -> list[dict]:
    special = {id(p) for layer in layers.values() for p in (layer.basis, layer.coefficient)}
    others = [p for p in model.parameters() if id(p) not in special]
    return [
        {"params": [layer.coefficient for layer in layers.values()], "weight_decay": 0.0},
        {"params": [layer.basis for layer in layers.values()], "weight_decay": 0.0},
        {"params": others, "weight_decay": cfg.weight_decay},
    ]


def _train(model, layers, loader, cfg: PenniConfig, epochs: int, loss_fn, alternate: bool, desc: str,
           dead: DeadChannels, on_epoch_end: Callable[[int], None] | None = None) -> list[float]:
    opt = torch.optim.Adam(_param_groups(model, layers, cfg), lr=cfg.lr)
    total = max(1, epochs * len(loader))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    history = []
    bar = tqdm(range(epochs), desc=desc, disable=not cfg.progress, unit="epoch", leave=False)
    for epoch in bar:
        train_basis = alternate and (epoch // cfg.swap_every) % 2 == 1
        frozen = "coefficient" if train_basis else ("basis" if alternate else None)
        history.append(_epoch(model, layers, loader, opt, sched, loss_fn, cfg, frozen, alternate, dead))
        if on_epoch_end is not None:
            on_epoch_end(epoch)
        bar.set_postfix(loss=f"{history[-1]:.4f}", training=frozen and ("basis" if train_basis else "coef"))
    return history


def _epoch(model, layers, loader, opt, sched, loss_fn, cfg, frozen: str | None, normalize: bool,
           dead: DeadChannels) -> float:
    model.train()
    losses = []
    for xb, yb in loader:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        penalty = sparsity_penalty(layers, cfg.l1, cfg.group_l1) if frozen != "coefficient" else None
        if penalty is not None:
            loss = loss + penalty
        loss.backward()
        for layer in layers.values():
            if frozen is not None:
                getattr(layer, frozen).grad = None
            if layer.coefficient.grad is not None:
                layer.coefficient.grad.mul_(layer.mask)
        opt.step()
        sched.step()
        with torch.no_grad():
            for layer in layers.values():
                layer.coefficient.mul_(layer.mask)
                if normalize:
                    layer.normalize_basis()
            dead.apply()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else 0.0


def export_penni(model: nn.Module, path: str | Path, input_shape: tuple[int, int, int], shrink: bool = True,
                 opset: int | None = None) -> onnx.ModelProto:
    """Export in the two-conv form with the decompose annotations; optionally run the exact ``shrink``."""
    from ...compiler.loader import load_model
    from ...compiler.modelio import write_model
    from ...compiler.passbase import PassContext, get_pass
    from ...compiler.pipeline import PassManager
    from ...models.train import export_onnx
    from .decompose import _adopt_existing

    layers = decomposed_layers(model)
    for layer in layers.values():
        layer.two_conv = True
        with torch.no_grad():
            layer.frozen_export = tuple(t.detach().clone().contiguous() for t in layer.two_conv_weights())
    try:
        export_onnx(model, path, input_shape, opset=opset)
    finally:
        for layer in layers.values():
            layer.two_conv = False
            layer.frozen_export = None
    proto = load_model(path)
    found = _adopt_existing(proto)
    if len(found) != len(layers):
        raise PimcError(f"export produced {len(found)} basis/coefficient pairs for {len(layers)} decomposed layers")
    names = ["fold-batchnorm", "shrink", "cleanup"] if shrink else ["cleanup"]
    proto = PassManager([get_pass(n)() for n in names], PassContext()).run(proto)
    write_model(proto, path)
    return proto
