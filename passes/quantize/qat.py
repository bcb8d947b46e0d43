"""Quantization-aware exporting (torch): STE fake-quant training and ADMM quantization (ADMM-NN).

Both modes start from a float model trained on the data, fold its BatchNorms into the convolutions
(``torch.fx`` conv-bn fusion, so the trained weights are exactly the weights the ONNX graph computes
with) and then constrain every Conv2d / Linear weight to the n-bit symmetric per-output-channel grid:

* **qat** — straight-through estimator. Forward: ``Ŵ = s_c · clip(round(W / s_c), ±qmax)`` with
  ``s_c = max|W_c| / qmax`` (treated as a constant in the backward pass), and activations entering each
  layer ``x̂ = s · (clip(round(x/s) + z, 0, 2^a − 1) − z)`` with ``[lo, hi]`` an exponential moving average
  (momentum 0.9) of the batch min/max. Backward: ``∂L/∂W = ∂L/∂Ŵ`` and ``∂L/∂x = ∂L/∂x̂ · 1[lo ≤ x ≤ hi]``.
* **admm** — ADMM-NN: minimise ``f(W)`` subject to ``W ∈ S = {±i·q_c : 0 ≤ i ≤ qmax}`` per output channel.
  Train on ``f(W) + ρ/2 ‖W − Z + U‖²``; every ``admm_interval`` steps ``Z ← Proj_S(W + U)``,
  ``U ← U + W − Z`` and ``ρ ← ρ · rho_growth`` (``models.admm``, shared with pruning). ``Proj_S`` rounds to the nearest level ``i·q_c`` with ``q_c``
  searched over ``t · max|V_c| / qmax``, ``t ∈ [0.4, 1]``, minimising the squared error. At the end ``W ←
  Proj_S(W)`` and the remaining float parameters (biases) are retrained for ``retrain_epochs`` with the
  weights frozen.

Export: the float model carrying the quantized weights is exported to ONNX (legacy exporter) and written
through the ``quantize`` pass machinery (:mod:`.qdq`) with the learned per-channel scales (``s_c`` or
``q_c``) and, in qat mode, the learned activation ranges (admm mode calibrates them on the training data
like the pass). The file carries the same QDQ nodes and annotations as ``pimc compile --passes quantize``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn.utils import parametrize

from ...compiler.errors import PimcError
from ...compiler.loader import infer_shapes, normalize
from ...compiler.modelio import write_model
from ...compiler.pipeline import check_model_full
from ...models.admm import Admm, per_layer
from .config import QatConfig
from .qdq import (
    QuantPlan,
    WeightQuant,
    act_quant,
    activation_input,
    apply_plan,
    calibrate_acts,
    codes_for,
    compute_nodes,
    merge_feeds,
    weight_axis,
)

_T_GRID = torch.linspace(0.4, 1.0, 31)


def qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every Conv→BatchNorm pair folded into the Conv (a plain copy when
    it has no BatchNorm, e.g. a converted ONNX model, whose BatchNorms were folded on load: such a model
    need not be traceable by torch.fx)."""
    import copy

    from torch.fx.experimental.optimization import fuse

    model.eval()
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return copy.deepcopy(model)
    try:
        return fuse(model, inplace=False)
    except Exception as exc:
        raise PimcError(f"cannot fold BatchNorm for quantization-aware training: {exc}") from exc


def quant_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def channel_scale(w: torch.Tensor, bits: int) -> torch.Tensor:
    peak = w.detach().abs().flatten(1).amax(dim=1)
    return torch.where(peak > 0, peak / qmax(bits), torch.ones_like(peak))


def fake_quant_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel symmetric fake quantization with a straight-through gradient."""
    scale = channel_scale(w, bits).view(-1, *([1] * (w.dim() - 1)))
    q = torch.clamp(torch.round(w / scale), -qmax(bits), qmax(bits)) * scale
    return w + (q - w).detach()


class WeightFakeQuant(nn.Module):
    """Parametrization: the layer computes with the fake-quantized weight."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return fake_quant_weight(w, self.bits)


class ActFakeQuant(nn.Module):
    """EMA min/max observer + asymmetric fake quantization of a layer's input (STE, clipped gradient)."""

    def __init__(self, bits: int, momentum: float = 0.9):
        super().__init__()
        self.bits = bits
        self.momentum = momentum
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.register_buffer("seen", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            lo, hi = x.detach().min().clamp(max=0.0), x.detach().max().clamp(min=0.0)
            if not bool(self.seen):
                self.lo.copy_(lo)
                self.hi.copy_(hi)
                self.seen.fill_(True)
            else:
                self.lo.mul_(self.momentum).add_((1 - self.momentum) * lo)
                self.hi.mul_(self.momentum).add_((1 - self.momentum) * hi)
        if not bool(self.seen) or float(self.hi - self.lo) <= 0:
            return x
        levels = 2**self.bits - 1
        scale = (self.hi - self.lo) / levels
        zero = torch.clamp(torch.round(-self.lo / scale), 0, levels)
        clipped = torch.maximum(torch.minimum(x, (levels - zero) * scale), -zero * scale)
        q = (torch.clamp(torch.round(clipped / scale) + zero, 0, levels) - zero) * scale
        return clipped + (q - clipped).detach()


@dataclass
class QuantState:
    """Per-layer results the exporter hands to the QDQ writer."""

    bits: int
    act_bits: int
    scales: dict[str, np.ndarray] = field(default_factory=dict)
    act_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    hooks: list[Any] = field(default_factory=list)
    observers: dict[str, ActFakeQuant] = field(default_factory=dict)


def attach_qat(model: nn.Module, bits: int, act_bits: int) -> QuantState:
    """Fake-quantize every Conv2d/Linear weight (parametrization) and input (pre-hook)."""
    state = QuantState(bits, act_bits)
    for name, layer in quant_layers(model):
        parametrize.register_parametrization(layer, "weight", WeightFakeQuant(bits))
        observer = ActFakeQuant(act_bits)
        layer.add_module("act_quant", observer)
        state.observers[name] = observer
        state.hooks.append(layer.register_forward_pre_hook(lambda mod, args: (mod.act_quant(args[0]),)))
    return state


def detach_qat(model: nn.Module, state: QuantState) -> None:
    """Bake the quantized weights into the layers and drop the hooks; record scales and ranges."""
    for hook in state.hooks:
        hook.remove()
    for name, layer in quant_layers(model):
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
        state.scales[name] = channel_scale(layer.weight, state.bits).numpy()
        observer = state.observers.get(name)
        if observer is not None and bool(observer.seen):
            state.act_ranges[name] = (float(observer.lo), float(observer.hi))
        if hasattr(layer, "act_quant"):
            del layer.act_quant


def quantize_trained(model: nn.Module, loader: Any, config: QatConfig | None = None
                     ) -> tuple[nn.Module, QuantState, dict[str, float]]:
    """The whole training-aware quantization of a trained float model in one call: fold its BatchNorms,
    then STE fake-quant training (``mode="qat"``) or ADMM quantization + bias retraining (``"admm"``).

    Returns the model carrying the quantized weights (a BatchNorm-folded copy when it had BatchNorms),
    the state ``write_quantized_onnx`` needs, and ``{"admm_residual": ...}`` in admm mode."""
    from ...models.train import train_classifier

    cfg = config or QatConfig()
    cfg.check()
    net = fold_batchnorm(model)
    info: dict[str, float] = {}
    common = {"lr": cfg.quant_lr, "seed": cfg.seed, "progress": cfg.progress, "weight_decay": 0.0}
    if cfg.mode == "qat":
        state = attach_qat(net, cfg.bits, cfg.activation_bits)
        train_classifier(net, loader, cfg.quant_epochs, desc="qat", **common)
        detach_qat(net, state)
        return net, state, info
    state = QuantState(cfg.bits, cfg.activation_bits)
    admm = ADMMQuantizer(net, cfg.bits, cfg.rho, cfg.rho_growth, interval=len(loader))
    train_classifier(net, loader, cfg.quant_epochs, extra_loss=admm.penalty, after_step=admm.after_step,
                     desc="admm", **common)
    info["admm_residual"] = admm.residual()
    admm.finish(state)
    if cfg.retrain_epochs and any(p.requires_grad for p in net.parameters()):
        train_classifier(net, loader, cfg.retrain_epochs, desc="retrain", **common)
    return net, state, info


def project(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ADMM-NN projection onto ``{±i·q_c}`` per output channel, ``q_c`` searched near max|W_c|/qmax."""
    flat = w.detach().flatten(1)
    peak = flat.abs().amax(dim=1).clamp(min=1e-12)
    q = peak[:, None] * _T_GRID[None, :].to(w.dtype) / qmax(bits)  # [C, T]
    levels = torch.clamp(torch.round(flat[:, None, :] / q[:, :, None]), -qmax(bits), qmax(bits))
    err = ((levels * q[:, :, None] - flat[:, None, :]) ** 2).sum(dim=2)
    best = err.argmin(dim=1)
    q_best = q[torch.arange(len(q)), best]
    z = torch.clamp(torch.round(flat / q_best[:, None]), -qmax(bits), qmax(bits)) * q_best[:, None]
    return z.view_as(w), q_best


class ADMMQuantizer:
    """The ADMM iteration (``models.admm.Admm``) over every Conv2d/Linear weight onto ``{±i·q_c}``."""

    def __init__(self, model: nn.Module, bits: int, rho: float, growth: float, interval: int):
        self.layers = quant_layers(model)
        self.bits = bits
        self.admm = Admm(dict(self.layers), per_layer(lambda _n, w: project(w, bits)[0]), rho, growth, interval)
        self.penalty, self.after_step, self.residual = self.admm.penalty, self.admm.after_step, self.admm.residual

    def finish(self, state: QuantState) -> None:
        """Hard projection; freeze the quantized weights."""
        with torch.no_grad():
            for n, m in self.layers:
                z, q = project(m.weight, self.bits)
                m.weight.copy_(z)
                m.weight.requires_grad_(False)
                state.scales[n] = q.numpy()


def write_quantized_onnx(
    model: nn.Module,
    state: QuantState,
    path: str | Path,
    input_shape: tuple[int, int, int],
    calibration: list[dict[str, np.ndarray]],
    act_scheme: str = "asymmetric",
) -> onnx.ModelProto:
    """Export the (quantized-weight) float model and rewrite it with QDQ using the learned parameters."""
    from ...models.train import export_onnx

    export_onnx(model, path, input_shape)
    proto = normalize(onnx.load(str(path)), str(path))
    plan = QuantPlan()
    layers = dict(quant_layers(model))
    matched: dict[str, str] = {}
    for node in compute_nodes(proto):
        name = _match_layer(proto, node, layers, matched)
        if name is None:
            continue
        w = _initializer(proto, node.input[1])
        axis = weight_axis(node, w.ndim)
        plan.weights[node.name] = WeightQuant(codes_for(w, state.scales[name], state.bits, axis),
                                              state.scales[name].astype(np.float32), axis, state.bits)
        tensor = activation_input(proto, node)
        if tensor is not None:
            plan.node_acts[node.name] = tensor
            matched[node.name] = name
    _plan_acts(proto, plan, state, matched, calibration, act_scheme)
    apply_plan(proto, plan)
    proto = infer_shapes(proto, str(path))
    check_model_full(proto, "export quantize")
    write_model(proto, path)
    return proto


def _plan_acts(proto, plan: QuantPlan, state: QuantState, matched, calibration, act_scheme: str) -> None:
    tensors = sorted(set(plan.node_acts.values()))
    if state.act_ranges and all(matched[n] in state.act_ranges for n in plan.node_acts):
        for tensor in tensors:
            ranges = [state.act_ranges[matched[n]] for n, t in plan.node_acts.items() if t == tensor]
            lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
            plan.acts[tensor] = act_quant(lo, hi, state.act_bits, act_scheme == "symmetric")
        return
    feeds = merge_feeds(proto, calibration)
    plan.acts = calibrate_acts(proto, tensors, feeds, state.act_bits, "minmax", 99.99, act_scheme)


def _initializer(proto: onnx.ModelProto, name: str) -> np.ndarray:
    from onnx import numpy_helper

    for init in proto.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init).astype(np.float32)
    raise PimcError(f"exported weight '{name}' is not an initializer")


def _match_layer(proto, node, layers: dict[str, nn.Module], used: dict[str, str]) -> str | None:
    """The torch layer whose (quantized) weight equals the node's ONNX weight."""
    try:
        w = _initializer(proto, node.input[1])
    except PimcError:
        return None
    taken = set(used.values())
    for name, layer in layers.items():
        if name in taken:
            continue
        ref = layer.weight.detach().numpy()
        for cand in (ref, ref.T):
            if cand.shape == w.shape and np.allclose(cand, w, rtol=1e-5, atol=1e-7):
                return name
    return None


def compress_trained(model, loader, shape, output, config: QatConfig, *, seed: int = 0, progress: bool = True):
    """The ``quantize`` method (``compiler/method.py``): QAT or ADMM quantization of a trained model."""
    from ...models.train import calibration_inputs

    net, state, _ = quantize_trained(model, loader, config)
    write_quantized_onnx(net, state, output, shape, calibration_inputs(loader, config.calibration_samples))
    return net
