"""PENNI training-aware exporter (torch): decompose, train alternately with L1, prune, fine-tune, export.

Library use on any model and DataLoader::

    from pimc.passes.decompose.exporter import PenniConfig, penni_compress, export_penni
    layers = penni_compress(model, train_loader, PenniConfig(rank=5, epochs=12))
    export_penni(model, "model.penni.onnx", input_shape=(3, 32, 32))

Steps (PENNI, ICML 2020, and the authors' code as summarised in ANCHORS.md):
1. ``replace_convs`` swaps every ``nn.Conv2d`` with groups = 1, a kernel larger than 1×1 and zero padding
   for a ``DecomposedConv2d``: basis B (d × kh × kw, shared by the layer) and coefficients C
   (Cout × Cin × d), initialised from the uncentred SVD of the (Cout·Cin, k²) kernel matrix, so that
   W[o, c] = Σ_j C[o, c, j] B_j.  Training computes W explicitly and runs one dense conv (fast on CPU).
2. Alternating training: the coefficients train while the basis is frozen, then the other way round,
   swapping every ``swap_every`` epochs; BN and other layers always train. The loss adds
   ``l1`` · Σ|C|. After every step each basis kernel is rescaled to unit norm and its coefficients by
   the inverse factor (the product is unchanged), so the L1 penalty cannot be dodged by growing B.
3. Pruning: per layer, coefficients with |c| < ``threshold`` · std(C) are zeroed and masked.
4. Masked fine-tuning of basis and surviving coefficients (masked coefficients stay exactly zero).
5. ``export_penni`` exports the two-conv form (depthwise basis conv with Cin·d outputs, channel c·d+j =
   input c ∗ B_j, then a 1×1 coefficient conv), annotates the pairs (role, rank, layer, kernel) and runs
   the exact ``shrink`` pass, which drops dead channels and unused basis kernels.
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

    @torch.no_grad()
    def prune(self, threshold: float) -> float:
        """Zero |c| < threshold · std(c) (over the surviving coefficients); return the kept fraction."""
        coef = self.masked_coefficient()
        alive = self.mask.bool()
        std = float(coef[alive].std()) if int(alive.sum()) > 1 else 0.0
        self.mask.mul_((coef.abs() >= threshold * std).to(self.mask.dtype))
        self.coefficient.mul_(self.mask)
        return float(self.mask.mean())


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
    rank: int = 5
    epochs: int = 12
    swap_every: int = 2
    l1: float = 1e-4
    threshold: float = 1.0
    finetune_epochs: int = 6
    lr: float = 3e-3
    weight_decay: float = 5e-4
    seed: int = 0
    progress: bool = True


def penni_compress(model: nn.Module, train_loader: Iterable, config: PenniConfig | None = None,
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> dict[str, Any]:
    """Decompose, train alternately with L1, prune and fine-tune ``model`` in place; return statistics.

    ``train_loader`` yields (inputs, targets); ``loss_fn`` defaults to cross-entropy.
    """
    cfg = config or PenniConfig()
    if cfg.epochs < 0 or cfg.finetune_epochs < 0 or cfg.swap_every < 1:
        raise PimcError("epochs and finetune_epochs must be >= 0 and swap_every >= 1")
    torch.manual_seed(cfg.seed)
    layers = decomposed_layers(model) or replace_convs(model, cfg.rank)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    history: list[float] = []
    if cfg.epochs:
        history += _train(model, layers, train_loader, cfg, cfg.epochs, loss_fn, alternate=True, desc="penni train")
    kept = {name: layer.prune(cfg.threshold) for name, layer in layers.items()}
    if cfg.finetune_epochs:
        history += _train(model, layers, train_loader, cfg, cfg.finetune_epochs, loss_fn, alternate=False,
                          desc="penni fine-tune")
    model.eval()
    return {"layers": len(layers), "kept_fraction": kept, "loss": history, **parameter_counts(model)}


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Dense conv weights the decomposed layers replace vs their basis + non-zero coefficients."""
    dense = compressed = 0
    for layer in decomposed_layers(model).values():
        kh, kw = layer.kernel_size
        dense += layer.out_channels * layer.in_channels * kh * kw
        compressed += layer.rank * kh * kw + int(layer.mask.sum())
    return {"decomposed_dense_params": dense, "decomposed_params": compressed}


def _param_groups(model: nn.Module, layers: dict[str, DecomposedConv2d], cfg: PenniConfig) -> list[dict]:
    special = {id(p) for layer in layers.values() for p in (layer.basis, layer.coefficient)}
    others = [p for p in model.parameters() if id(p) not in special]
    return [
        {"params": [layer.coefficient for layer in layers.values()], "weight_decay": 0.0},
        {"params": [layer.basis for layer in layers.values()], "weight_decay": 0.0},
        {"params": others, "weight_decay": cfg.weight_decay},
    ]


def _train(model, layers, loader, cfg: PenniConfig, epochs: int, loss_fn, alternate: bool, desc: str) -> list[float]:
    opt = torch.optim.Adam(_param_groups(model, layers, cfg), lr=cfg.lr)
    total = max(1, epochs * len(loader))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    history = []
    bar = tqdm(range(epochs), desc=desc, disable=not cfg.progress, unit="epoch", leave=False)
    for epoch in bar:
        train_basis = alternate and (epoch // cfg.swap_every) % 2 == 1
        frozen = "coefficient" if train_basis else ("basis" if alternate else None)
        history.append(_epoch(model, layers, loader, opt, sched, loss_fn, cfg, frozen, alternate))
        bar.set_postfix(loss=f"{history[-1]:.4f}", training=frozen and ("basis" if train_basis else "coef"))
    return history


def _epoch(model, layers, loader, opt, sched, loss_fn, cfg, frozen: str | None, normalize: bool) -> float:
    model.train()
    losses = []
    for xb, yb in loader:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        if cfg.l1:
            loss = loss + cfg.l1 * sum(layer.masked_coefficient().abs().sum() for layer in layers.values())
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
