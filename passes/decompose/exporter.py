"""PENNI training-aware exporter (torch): decompose, train alternately with sparsity terms, prune, fine-tune, export.

Library use on any trained model and DataLoader (``PenniConfig`` fields as options; the CLI's defaults)::

    import pimc
    penni = pimc.compress(model, train_loader, method="decompose", output="model.penni.onnx",
                          input_shape=(3, 32, 32), rank=5)

or, step by step, ``penni_compress(model, train_loader, PenniConfig(...))`` then ``export_penni``.

Steps (PENNI, ICML 2020, and the authors' code as summarised in docs/sources.md, plus channel-level sparsity
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
   residual stream can go. Hence the residual-aware term (``residual_l1`` / ``residual_threshold``):
   ``find_residual_spaces`` traces the model with torch.fx (decomposed layers as leaves) and joins into
   one *stream* every tensor linked by BatchNorm, zero-preserving activations (f(0) = 0), pooling,
   flatten and ``+``; its *writers* are the Conv2d / Linear / decomposed layers producing it, its
   *readers* the decomposed layers consuming it. For channel c of a stream the group
   g_c = (C_w[c, :, :] of every decomposed writer, W_w[c] of every other writer, C_r[:, c, :] of every
   decomposed reader) gets the penalty ``residual_l1`` · Σ_c ‖g_c‖₂, and a pruning round kills channel c
   when ‖g_c‖₂ < ``residual_threshold`` × mean_c ‖g_c‖₂ (one channel always survives): every writer row,
   writer bias and the γ, β, μ of every BatchNorm in the stream are then held at zero, so the channel is
   exactly 0 through every Add and ``shrink`` removes it from the whole stream. A stream that any other
   op feeds (graph input, concat, product, an unknown module) is left out, and a model torch.fx cannot
   trace keeps only the per-layer groups (reported as ``residual_note``).
5. Masked fine-tuning of basis and surviving coefficients (masked coefficients and dead-channel BN
   parameters stay exactly zero).
6. ``export_penni`` exports the two-conv form (depthwise basis conv with Cin·d outputs, channel c·d+j =
   input c ∗ B_j, then a 1×1 coefficient conv), annotates the pairs (role, rank, layer, kernel), folds
   BatchNorm and runs the exact ``shrink`` pass, which drops dead channels and unused basis kernels.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from ...compiler.errors import PimcError
from ...models.train import Hooks, run_training
from .config import PenniConfig


class DecomposedConv2d(nn.Module):
    """A Conv2d as a shared basis (d × kh × kw) and per-kernel coefficients (Cout × Cin × d)."""

    def __init__(self, conv: nn.Conv2d, rank: int = PenniConfig.rank):
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


def replace_convs(model: nn.Module, rank: int = PenniConfig.rank, include: Callable[[str], bool] | None = None
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


class DeadChannels:
    """Keeps dead filters exactly zero: the layer's bias entry and the following BatchNorm's γ, β, μ."""

    def __init__(self, layers: dict[str, DecomposedConv2d], followers: dict[str, nn.Module],
                 residual: list[ResidualSpace] | None = None):
        self.layers = layers
        self.followers = followers
        self.residual = residual or []

    @torch.no_grad()
    def apply(self) -> int:
        """Zero every dead channel's bias / BN entries; return how many channels are dead."""
        for space in self.residual:
            space.apply()
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


_ZERO_PRESERVING = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Tanh, nn.Identity,
                    nn.Dropout, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)
_ZERO_PRESERVING_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.silu, F.gelu, F.hardswish, torch.tanh,
                              F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
                              torch.flatten, F.dropout}
_ZERO_PRESERVING_METHODS = {"relu", "relu_", "flatten", "contiguous", "clone"}
_ADDS = {operator.add, operator.iadd, torch.add}


class ResidualSpace:
    """The channels of one residual stream: every layer writing into it (through BN, zero-preserving
    activations, pooling and ``+``) and every decomposed layer reading it.

    Channel c of the stream is zero everywhere only when it is zero in every writer, so the group of
    channel c joins the writers' output slices (C[c, :, :] of a decomposed writer, W[c] of any other
    Conv2d / Linear writer) and the decomposed readers' input slices C[:, c, :]. ``penalty`` is the
    group lasso Σ_c ‖group_c‖₂; ``prune`` kills channels whose group norm is below ``ratio`` × the mean
    over the stream (at least one channel survives); ``apply`` keeps a dead channel exactly zero: writer
    rows and biases, and γ, β, running mean of every BatchNorm inside the stream.
    """

    def __init__(self, channels: int, writers: list[nn.Module], readers: list[DecomposedConv2d],
                 norms: list[nn.Module]):
        self.channels, self.writers, self.readers, self.norms = channels, writers, readers, norms
        self.dead = torch.zeros(channels, dtype=torch.bool)

    def group_norms(self) -> torch.Tensor:
        total = torch.zeros(self.channels)
        for writer in self.writers:
            weight = writer.masked_coefficient() if isinstance(writer, DecomposedConv2d) else writer.weight
            total = total + weight.reshape(self.channels, -1).square().sum(dim=1)
        for reader in self.readers:
            total = total + reader.masked_coefficient().square().sum(dim=(0, 2))
        return (total + 1e-12).sqrt()

    def penalty(self) -> torch.Tensor:
        return self.group_norms().sum()

    @torch.no_grad()
    def prune(self, ratio: float) -> int:
        norms = self.group_norms()
        dead = self.dead | (norms < ratio * float(norms.mean()))
        if bool(dead.all()):
            dead[int(torch.argmax(norms))] = False
        self.dead = dead
        self.apply()
        return int(dead.sum())

    @torch.no_grad()
    def apply(self) -> None:
        if not bool(self.dead.any()):
            return
        dead = self.dead
        for writer in self.writers:
            if isinstance(writer, DecomposedConv2d):
                writer.mask[dead] = 0
                writer.coefficient.mul_(writer.mask)
            else:
                writer.weight[dead] = 0
            if writer.bias is not None:
                writer.bias[dead] = 0
        for reader in self.readers:
            reader.mask[:, dead] = 0
            reader.coefficient.mul_(reader.mask)
        for bn in self.norms:
            for tensor in (bn.weight, bn.bias, bn.running_mean):
                if tensor is not None:
                    tensor[dead] = 0


class _LeafTracer(torch.fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualname: str) -> bool:
        return isinstance(module, DecomposedConv2d) or super().is_leaf_module(module, qualname)


def find_residual_spaces(model: nn.Module) -> tuple[list[ResidualSpace], str | None]:
    """Residual streams of ``model`` (channel spaces joined by ``+`` with two or more writers), via torch.fx.

    A stream that any other op feeds (a graph input, a concat, a multiplication, an unknown module...)
    is left out, since zeroing its known writers would not make its channels zero. Returns the streams
    and, when the model cannot be traced symbolically, the reason (then no stream is grouped and the
    per-layer group lasso still applies).
    """
    try:
        graph = _LeafTracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "no residual grouping"
        return [], f"torch.fx could not trace the model: {type(exc).__name__}"
    modules = dict(model.named_modules())
    parent: dict[Any, Any] = {}

    def find(node: Any) -> Any:
        while parent.setdefault(node, node) is not node:
            node = parent[node]
        return node

    def union(a: Any, b: Any) -> None:
        parent[find(a)] = find(b)

    layers: list[tuple[Any, nn.Module]] = []
    reads: list[tuple[Any, DecomposedConv2d]] = []
    norms: list[tuple[Any, nn.Module]] = []
    foreign, added = set(), set()
    for node in graph.nodes:
        find(node)
        first = node.args[0] if node.args and isinstance(node.args[0], torch.fx.Node) else None
        module = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, (nn.Conv2d, nn.Linear, DecomposedConv2d)):
            layers.append((node, module))
            if isinstance(module, DecomposedConv2d) and first is not None:
                reads.append((first, module))
        elif first is not None and isinstance(module, nn.modules.batchnorm._BatchNorm):
            norms.append((node, module))
            union(node, first)
        elif first is not None and (isinstance(module, _ZERO_PRESERVING)
                                    or (node.op == "call_function" and node.target in _ZERO_PRESERVING_FUNCTIONS)
                                    or (node.op == "call_method" and node.target in _ZERO_PRESERVING_METHODS)):
            union(node, first)
        elif ((node.op == "call_function" and node.target in _ADDS) or (node.op == "call_method"
              and node.target in ("add", "add_"))) and all(isinstance(a, torch.fx.Node) for a in node.args[:2]):
            union(node, node.args[0])
            union(node, node.args[1])
            added.add(node)
        elif node.op != "output":
            foreign.add(node)
    roots = {find(n) for n in added} - {find(n) for n in foreign}
    spaces = []
    for root in roots:
        writers = [m for n, m in layers if find(n) is root]
        channels = {_out_channels(m) for m in writers}
        if len(writers) < 2 or len(channels) != 1:
            continue
        spaces.append(ResidualSpace(channels.pop(), writers, [m for n, m in reads if find(n) is root],
                                    [m for n, m in norms if find(n) is root]))
    return spaces, None


def _out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


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
    residual, residual_note = find_residual_spaces(model) if cfg.residual_l1 or cfg.residual_threshold else ([], None)
    dead = DeadChannels(layers, find_followers(model, layers, sample) if sample is not None else {}, residual)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    kept: dict[str, float] = {}

    def prune() -> None:
        if cfg.residual_threshold > 0:
            for space in residual:
                space.prune(cfg.residual_threshold)
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
    streams = [{"channels": space.channels, "dead": int(space.dead.sum()), "writers": len(space.writers),
                "readers": len(space.readers)} for space in residual]
    return {"layers": len(layers), "kept_fraction": kept, "dead_filters": channels,
            "bn_followers": sorted(dead.followers), "residual_streams": streams, "residual_note": residual_note,
            "loss": history, **parameter_counts(model)}


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Dense conv weights the decomposed layers replace vs their basis + non-zero coefficients."""
    dense = compressed = 0
    for layer in decomposed_layers(model).values():
        kh, kw = layer.kernel_size
        dense += layer.out_channels * layer.in_channels * kh * kw
        compressed += layer.rank * kh * kw + int(layer.mask.sum())
    return {"decomposed_dense_params": dense, "decomposed_params": compressed}


def sparsity_penalty(layers: dict[str, DecomposedConv2d], l1: float, group_l1: float,
                     residual: list[ResidualSpace] | None = None, residual_l1: float = 0.0) -> torch.Tensor | None:
    """l1 · Σ|C| + group_l1 · Σ slice norms + residual_l1 · Σ residual channel-group norms (None when all 0)."""
    terms = [residual_l1 * space.penalty() for space in residual or [] if residual_l1]
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
    """PENNI's phases on the one training loop (``models.train.run_training``): alternating basis /
    coefficient epochs (the other factor's gradient dropped), the sparsity penalty while coefficients train,
    pruned coefficients kept at zero, the basis renormalised and dead channels kept dead after every step."""
    state = {"frozen": None}

    def epoch_start(epoch: int) -> None:
        train_basis = alternate and (epoch // cfg.swap_every) % 2 == 1
        state["frozen"] = "coefficient" if train_basis else ("basis" if alternate else None)
        model.train()

    def loss(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        value = loss_fn(model(xb), yb)
        if state["frozen"] != "coefficient":
            penalty = sparsity_penalty(layers, cfg.l1, cfg.group_l1, dead.residual, cfg.residual_l1)
            if penalty is not None:
                value = value + penalty
        return value

    def after_backward() -> None:
        for layer in layers.values():
            if state["frozen"] is not None:
                getattr(layer, state["frozen"]).grad = None
            if layer.coefficient.grad is not None:
                layer.coefficient.grad.mul_(layer.mask)

    def after_step() -> None:
        for layer in layers.values():
            layer.coefficient.mul_(layer.mask)
            if alternate:
                layer.normalize_basis()
        dead.apply()

    def postfix(_epoch: int) -> dict:
        frozen = state["frozen"]
        return {"training": frozen and ("basis" if frozen == "coefficient" else "coef")}

    hooks = Hooks(loss, after_backward, after_step, epoch_start, on_epoch_end, postfix)
    opt = torch.optim.Adam(_param_groups(model, layers, cfg), lr=cfg.lr)
    return run_training(opt, loader, epochs, hooks, cfg.progress, desc)


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


def compress_trained(model, loader, shape, output, config: PenniConfig, *, seed: int = 0, progress: bool = True):
    """The ``decompose`` method (``compiler/method.py``): PENNI on a trained model, written to ``output``."""
    penni_compress(model, loader, config)
    export_penni(model, output, shape)
    return model
