"""comparator-conv: replace k×k convolutions by local-binary (LBCNN / CMPNET) comparator blocks.

A convolution ``y = W * x + b`` (W: Cout × Cin × k × k) becomes, in standard ONNX ops,

    a = A * x                 anchor Conv, A ∈ {−1, 0, +1}^(m × Cin × k × k), fixed, never trained
    h = cmp(a)                comparison with zero: ReLU(a) = a·[a > 0]  (LBCNN), or [a > 0] ∈ {0, 1}
                              (``comparator=binary``, the local-binary-pattern bit of CMPNET)
    ŷ = P * h + c             learnable 1×1 Conv, P: Cout × m, bias c

**Anchors.** Each entry of A is non-zero with probability ``density`` (LBCNN's "sparsity" is the fraction
of non-zeros, default 0.9) and then ±1 with probability ½, drawn from ``numpy.random.default_rng((seed,
crc32(layer)))``, so the same seed and layer name give the same anchors. With ``paired=true`` the second
half of the anchors is the negation of the first: since ReLU(u) − ReLU(−u) = u, a 1×1 conv on the m
ReLU responses then represents every linear function in the span of the m/2 anchor rows exactly, and
the block can reproduce the original conv when m/2 ≥ Cin·k² (the fit error measures how close a
smaller m gets). ``variant=separable`` (CMPNET) uses a depthwise anchor conv instead: group = Cin, q
ternary k×k kernels per input channel (m = Cin·q), followed by the 1×1 conv.

**Post-training fit** (``compiler.reconstruct``, the one reconstruction module every lossy pass uses).
For a substituted layer the calibration inputs x_c (from the model with the earlier layers already
compressed; with ``sequential=false`` the reference model's) give the comparator features
H = cmp(im2col(x_c) Aᵀ) at every output position (``conv_stats(..., features=...)``), the targets are the
*original* layer's outputs on the reference inputs, and the 1×1 conv solves the ridge problem

    min_{P,c} ‖[H 1] [P c]ᵀ − Y‖²_F + λ·mean(diag HᵀH)·‖P‖²_F        (``reconstruct.solve``, bias not penalised)

on up to ``samples`` samples (fewer when samples × output pixels > ``max_rows``). Every fifth sample is
held out: ``fit_error`` = ‖Ŷ − Y‖_F / ‖Y‖_F on those (``train_fit_error`` on the rest). With real data
(``--data``) the pass also reports top-1 accuracy on the dataset's test split before and after.

**Which layers.** The pass runs on ``compiler.layerwise.compress_layerwise``. If the user fixes any of
``SETTING_OPTIONS`` (variant, anchors, density, comparator, layers, ...), every eligible layer that passes
the cost rule is substituted with that setting (force mode; the compile's final budget check still
applies). Otherwise the settings are *searched* per layer under the accuracy budget: the configured
setting, the same with ½ and ¼ of the anchors, and the separable (CMPNET) variant with binary and ReLU
comparators, cheapest (target energy estimate, else MACs) first; the cheapest within the budget wins and
a layer where none fits stays as it is (``skipped`` with the reason and ``kind``). Without labelled data
nothing is substituted.

**Cost rule** (a candidate filter). A setting is dropped when the substitution would give the layer more
learnable parameters (1×1 weights + bias vs the conv's weights + bias; the fixed anchors are not
learnable) or, when the pass runs for a target (``ctx.target``), a higher cost on that target than the
ordinary conv: the target's own energy estimate of the layer records (``Target.estimate_energy``, e.g.
cmp-pim's cost model, with ``--hw``), else MACs (the anchor conv counted in full, as a generic executor
runs it). The decision uses the drawn anchors only, so a rejected setting costs no fitting time; the
layer-wise driver then also requires the whole model to get faster and no costlier on the target
(``ctx.cost_fn``). ``cost_rule=false`` skips the per-layer rule.

**Annotations** (read by the cmp-pim target): anchor Conv ``role=anchor``, ``anchor_density`` (measured
fraction of non-zeros), ``seed``, ``layer``; the comparison node ``role=comparator``; the 1×1 Conv
``role=lbc_pointwise`` with ``layer``, ``comparator``, ``original_cin``, ``original_cout``, ``kernel``,
``original_groups``, ``anchors``, ``variant``, ``fit_error`` and, for binary comparators, ``act_bits=1``.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from ...compiler import annotations as ann
from ...compiler.errors import PimcError
from ...compiler.graph import (
    attr,
    get_initializer,
    value_shapes,
)
from ...compiler.layerwise import Candidate, Site, compress_layerwise, idle_reason
from ...compiler.loader import infer_shapes
from ...compiler.modelio import copy_model
from ...compiler.passbase import Option, Pass, PassContext, PassResult
from ...compiler.reconstruct import ConvGeometry, LayerStats, capture, conv_stats, relative_error, solve
from ...compiler.target import Target, get_target
from ...compiler.workload import LayerRecord, extract_workload
from .config import LBCConfig, auto_anchors
from .rewrite import ConvSite, rewrite_site

LBC_ROLES = ("anchor", "lbc_pointwise", "comparator")
SETTING_OPTIONS = ("variant", "anchors", "max_anchors", "density", "paired", "comparator", "layers", "cost_rule")
SEARCH_FRACTIONS = (0.5, 0.25)
HOLDOUT_EVERY = 5


class ComparatorConv(Pass, name="comparator-conv"):
    """Replace k×k convs by LBC comparator blocks (ternary anchors → compare → fitted 1×1 conv)."""

    options = (
        Option("variant", str, LBCConfig.variant, "lbc: dense anchor conv Cin→m; separable: depthwise anchors (CMPNET)",
               choices=("lbc", "separable")),
        Option("anchors", int, LBCConfig.anchors, "lbc: anchor count m (0 = auto: Cin·k²); separable: anchors per input "
               "channel q (0 = auto: k²)", minimum=0),
        Option("max_anchors", int, LBCConfig.max_anchors, "upper bound on m for the automatic choice", minimum=2),
        Option("density", float, LBCConfig.density, "fraction of non-zero anchor weights", minimum=0.01, maximum=1.0),
        Option("paired", bool, True, "anchors come in ± pairs (the 1×1 conv can then form any linear map "
               "of the anchors' span)"),
        Option("comparator", str, LBCConfig.comparator, "relu (LBCNN) or binary: the {0,1} comparison bit (CMPNET)",
               choices=("relu", "binary")),
        Option("ridge", float, 1e-4, "ridge strength λ relative to the mean feature energy", minimum=0.0),
        Option("samples", int, 64, "calibration samples used for the fit", minimum=1),
        Option("max_rows", int, 20000, "output positions sampled per layer for the fit", minimum=16),
        Option("sequential", bool, True, "fit each layer on inputs produced by the already-substituted model"),
        Option("min_kernel", int, LBCConfig.min_kernel, "substitute only convs whose kernel has at least this many rows/cols",
               minimum=1),
        Option("layers", list, [], "substitute only these conv nodes (default: every eligible conv)"),
        Option("skip", list, [], "conv nodes to leave untouched"),
        Option("force", bool, False, "also substitute when the model already contains LBC blocks"),
        Option("evaluate", bool, True, "with --data, report test accuracy before and after"),
        Option("cost_rule", bool, True, "leave a layer as it is when substitution gives it more learnable "
               "params or costs more on the target (false: substitute anyway, e.g. to study the fit)"),
    )

    def __init__(self, **opts: Any):
        super().__init__(**opts)
        self.given = frozenset(opts)
        self._fits: dict[tuple[str, str], _Fit] = {}

    @property
    def searching(self) -> bool:
        """True unless the user fixed how layers are substituted (any of ``SETTING_OPTIONS`` given)."""
        return not (self.given & set(SETTING_OPTIONS))

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        skipped: list[dict[str, str]] = []
        sites = self._select(model, skipped)
        if not sites:
            return PassResult(model, False, {"replaced": [], "skipped": skipped})
        idle = idle_reason(ctx, not self.searching)
        if idle:
            return PassResult(model, False, {"replaced": [], "skipped": skipped, "note": idle})
        original = copy_model(model)
        records = extract_workload(model).by_name()
        self._reference, self._ctx, self._fits = original, ctx, {}
        self._settings: dict[str, list[tuple[Setting, np.ndarray]]] = {}
        layer_sites = []
        for site in sites:
            kept, reason = self._paying_settings(site, records[site.name], ctx)
            if kept:
                self._settings[site.name] = kept
                layer_sites.append(Site(site.name, site.node.input[0], float(records[site.name].macs)))
            else:
                skipped.append({"node": site.name, "reason": reason, "kind": "cost"})
        self._sites = {s.name: s for s in sites}
        result = compress_layerwise(model, layer_sites, self._propose, ctx, force=not self.searching)
        skipped += result.skipped
        layers = [{**entry, **self._fits[(entry["layer"], entry["setting"])].summary()} for entry in result.chosen]
        if not layers:
            return PassResult(model, False, {"replaced": [], "skipped": skipped})
        model = infer_shapes(result.model, "comparator-conv")
        stats: dict[str, Any] = {
            "replaced": [item["layer"] for item in layers], "layers": layers, "skipped": skipped,
            "calibration": ctx.data_spec if ctx.has_real_data else "random",
            "samples": max(item["samples"] for item in layers),
            "mean_fit_error": float(np.mean([item["fit_error"] for item in layers])),
        }
        if self.opts["evaluate"] and ctx.has_real_data and ctx.data_spec:
            stats.update(_accuracy_before_after(original, model, ctx.data_spec, ctx.seed))
        return PassResult(model, True, stats)

    def _setting_list(self) -> list[Setting]:
        """The user's setting, or (searching) that setting with fewer anchors and the CMPNET variant."""
        own = Setting(self.opts["variant"], self.opts["comparator"], self.opts["anchors"])
        if not self.searching or self._ctx.budget is None:
            return [own]
        return [own, *(dataclasses.replace(own, fraction=f) for f in SEARCH_FRACTIONS),
                Setting("separable", "binary", 0), Setting("separable", "relu", 0)]

    def _paying_settings(self, site: ConvSite, record: LayerRecord,
                         ctx: PassContext) -> tuple[list[tuple[Setting, np.ndarray, float]], str]:
        """Settings that pass the cost rule (a candidate filter), with their anchors and cost key, and the
        first rejection reason."""
        kept: dict[str, tuple[Setting, np.ndarray, float]] = {}
        reasons = []
        for setting in self._setting_list():
            anchors = self._anchors(site, ctx.seed, setting)
            opts = {**self.opts, **setting.opts()}
            reason = substitution_penalty(site, record, anchors, opts, ctx) if self.opts["cost_rule"] else None
            if reason:
                reasons.append(reason)
            else:
                kept.setdefault(setting.key(anchors), (setting, anchors, block_cost(record, anchors, opts, ctx)))
        return list(kept.values()), (reasons[0] if reasons else "no setting applies")

    def _propose(self, model: onnx.ModelProto, site: Site, x_comp: np.ndarray | None,
                 x_ref: np.ndarray | None) -> list[Candidate]:
        conv = self._sites[site.node]
        if x_comp is None or x_ref is None:
            x_comp, x_ref = self._random_inputs(model, conv)
        if not self.opts["sequential"]:
            x_comp = x_ref
        count = min(self.opts["samples"], len(x_comp))
        candidates = []
        for setting, anchors, cost in self._settings[site.node]:
            fit = _Fit(conv, anchors, {**self.opts, **setting.opts()}, x_comp[:count], x_ref[:count])
            label = setting.key(anchors)
            self._fits[(site.node, label)] = fit
            candidates.append(self._candidate(conv, setting, anchors, fit, label, cost))
        return sorted(candidates, key=lambda c: c.cost)

    def _candidate(self, conv: ConvSite, setting: Setting, anchors: np.ndarray, fit: _Fit, label: str,
                   cost: float) -> Candidate:
        opts = {**self.opts, **setting.opts(), "seed": self._ctx.seed}
        m = int(anchors.shape[0])
        info = {"layer": conv.name, "setting": label, "variant": opts["variant"], "comparator": opts["comparator"],
                "anchors": m}

        def apply(target: onnx.ModelProto) -> None:
            pointwise, bias = fit.result()
            rewrite_site(target, conv, anchors, pointwise, bias, {**opts, "fit_error": fit.fit_error})

        def preview(target: onnx.ModelProto) -> None:
            rewrite_site(target, conv, anchors, np.ones((conv.cout, m), np.float32), np.zeros(conv.cout, np.float32),
                     {**opts, "fit_error": 0.0})

        return Candidate(cost, apply, info, preview)

    def _random_inputs(self, model: onnx.ModelProto, conv: ConvSite) -> tuple[np.ndarray, np.ndarray]:
        """Seeded random calibration inputs when the compile has no data (only a forced run gets here)."""
        feeds = self._ctx.calibration_feeds(model, count=self.opts["samples"])[: self.opts["samples"]]
        name = conv.node.input[0]
        return capture(model, [name], feeds)[name], capture(self._reference, [name], feeds)[name]

    def _select(self, model: onnx.ModelProto, skipped: list[dict[str, str]]) -> list[ConvSite]:
        graph = model.graph
        names = {n.name for n in graph.node}
        for wanted in [*self.opts["layers"], *self.opts["skip"]]:
            if wanted not in names:
                raise PimcError(f"comparator-conv: no node named '{wanted}' in the model")
        has_lbc = any(ann.get_node_annotation(n, "role") in LBC_ROLES for n in graph.node)
        shapes = value_shapes(model)
        sites = []
        for node in graph.node:
            if node.op_type != "Conv":
                continue
            reason = self._reject_reason(node, model, has_lbc)
            if reason is None:
                site, reason = _site(node, model, shapes)
                if site is not None:
                    sites.append(site)
                    continue
            if reason:
                skipped.append({"node": node.name, "reason": reason})
        return sites

    def _reject_reason(self, node: onnx.NodeProto, model: onnx.ModelProto, has_lbc: bool) -> str | None:
        role = ann.get_node_annotation(node, "role")
        if role is not None:
            return f"already has role '{role}'"
        if self.opts["layers"] and node.name not in self.opts["layers"]:
            return "not in the layers option"
        if node.name in self.opts["skip"]:
            return "in the skip option"
        if has_lbc and not self.opts["force"]:
            return "the model already contains LBC blocks (set force=true to substitute the other convs)"
        weight = get_initializer(model.graph, node.input[1]) if len(node.input) > 1 else None
        if weight is None:
            return "weight is not a constant initializer"
        if weight.ndim != 4:
            return "not a 2-D convolution"
        if min(weight.shape[2:]) < self.opts["min_kernel"]:
            return f"kernel {weight.shape[2]}×{weight.shape[3]} is below min_kernel"
        if int(attr(node, "group", 1)) != 1:
            return "grouped/depthwise conv (already cheap; executed as in-memory MAC)"
        if weight.dtype != np.float32:
            return f"weight dtype {weight.dtype} (only float32 is fitted)"
        return None

    def _anchors(self, site: ConvSite, seed: int, setting: Setting) -> np.ndarray:
        kh, kw = site.kernel
        per_input = site.cin if setting.variant == "lbc" else 1
        count = setting.anchors or auto_anchors(setting.variant, site.cin, site.kernel, self.opts["max_anchors"])
        count = max(2, int(round(count * setting.fraction)))
        groups = 1 if setting.variant == "lbc" else site.cin
        rng = np.random.default_rng((seed, _crc(site.name)))
        blocks = [
            ternary_anchors(count, per_input, (kh, kw), self.opts["density"], self.opts["paired"], rng)
            for _ in range(groups)
        ]
        return np.concatenate(blocks, axis=0)


@dataclass(frozen=True)
class Setting:
    """How one layer is substituted: variant, comparator and anchor count (0 = auto, times ``fraction``)."""

    variant: str
    comparator: str
    anchors: int
    fraction: float = 1.0

    def opts(self) -> dict[str, Any]:
        return {"variant": self.variant, "comparator": self.comparator}

    def key(self, anchors: np.ndarray) -> str:
        return f"{self.variant}/{self.comparator}/m={anchors.shape[0]}"


class _Fit:
    """The least-squares fit of one candidate's 1×1 conv through ``compiler.reconstruct``, solved on first
    use (most candidates are never evaluated). Every ``HOLDOUT_EVERY``-th calibration sample is held out
    to measure ``fit_error`` = ‖Ŷ − Y‖_F / ‖Y‖_F (the square root of ``reconstruct.relative_error``)."""

    def __init__(self, conv: ConvSite, anchors: np.ndarray, opts: dict[str, Any], x_comp: np.ndarray,
                 x_ref: np.ndarray):
        self.conv, self.anchors, self.opts = conv, anchors, opts
        pixels = max(1, conv.out_hw[0] * conv.out_hw[1])
        count = min(len(x_comp), max(HOLDOUT_EVERY, opts["max_rows"] // pixels))
        self.x_comp, self.x_ref = x_comp[:count], x_ref[:count]
        self._done: tuple[np.ndarray, np.ndarray] | None = None
        self.fit_error = self.train_fit_error = float("nan")
        self.rows = 0

    def _stats(self, index: np.ndarray) -> LayerStats:
        conv, opts = self.conv, self.opts
        geo = ConvGeometry(conv.kernel, conv.strides, conv.pads, conv.dilations)

        def features(rows: np.ndarray) -> np.ndarray:
            return _features(rows, self.anchors, opts["variant"], conv.cin, opts["comparator"])

        return conv_stats(self.x_comp[index], self.x_ref[index], conv.weight, conv.bias, geo, features)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self._done is None:
            n = len(self.x_comp)
            samples = np.arange(n)
            held = samples[::HOLDOUT_EVERY] if n >= HOLDOUT_EVERY else samples
            train = np.setdiff1d(samples, held) if n >= HOLDOUT_EVERY else samples
            stats = self._stats(train)
            m = int(self.anchors.shape[0])
            pointwise, bias = solve(stats, np.ones((self.conv.cout, m), dtype=bool), ridge=self.opts["ridge"])
            self.train_fit_error = float(np.sqrt(relative_error(stats, pointwise, bias)))
            self.fit_error = float(np.sqrt(relative_error(self._stats(held), pointwise, bias)))
            self.rows = stats.rows
            self._done = (pointwise.astype(np.float32), bias.astype(np.float32))
        return self._done

    def summary(self) -> dict[str, Any]:
        pointwise, bias = self.result()
        conv = self.conv
        return {
            "cin": conv.cin, "cout": conv.cout, "kernel": list(conv.kernel),
            "anchor_density": float(np.count_nonzero(self.anchors) / self.anchors.size),
            "rows": int(self.rows), "samples": int(len(self.x_comp)), "fit_error": self.fit_error,
            "train_fit_error": self.train_fit_error, "params_before": int(conv.weight.size),
            "params_learnable_after": int(pointwise.size + bias.size),
        }


def block_cost(conv: LayerRecord, anchors: np.ndarray, opts: dict[str, Any], ctx: PassContext) -> float:
    """Cost key of an LBC block (lower = cheaper): the target's energy estimate, else its MACs."""
    block = lbc_records(conv, anchors, opts)
    target = _target(ctx.target) if ctx.target else None
    energy = target.estimate_energy(block, ctx.hw) if target is not None else None
    return float(energy) if energy is not None else float(sum(r.macs for r in block))


def lbc_records(conv: LayerRecord, anchors: np.ndarray, opts: dict[str, Any]) -> list[LayerRecord]:
    """Layer records of the LBC block replacing ``conv`` (the 1×1 weights taken dense, before the fit)."""
    m = int(anchors.shape[0])
    separable = opts["variant"] == "separable"
    anchor = dataclasses.replace(
        conv, name=f"{conv.name}.anchor", cout=m, groups=conv.cin if separable else 1, weight=anchors,
        params=int(anchors.size), nonzero=int(np.count_nonzero(anchors)), weight_bits=None,
        annotations={"role": "anchor", "layer": conv.name}, maps={},
    )
    notes: dict[str, Any] = {"role": "lbc_pointwise", "layer": conv.name, "comparator": opts["comparator"],
                             "original_cin": conv.cin, "original_cout": conv.cout, "kernel": list(conv.kernel),
                             "original_groups": 1}
    act_bits = conv.act_bits
    if opts["comparator"] == "binary":
        notes["act_bits"] = act_bits = 1
    pointwise = dataclasses.replace(
        conv, name=f"{conv.name}.lbc_pointwise", cin=m, h=conv.out_h, w=conv.out_w, kernel=(1, 1),
        stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1, weight=None, params=m * conv.cout,
        nonzero=m * conv.cout, act_bits=act_bits, annotations=notes, maps={},
    )
    return [anchor, pointwise]


def substitution_penalty(
    site: ConvSite, conv: LayerRecord, anchors: np.ndarray, opts: dict[str, Any], ctx: PassContext
) -> str | None:
    """Why substituting ``site`` would make it worse (see "Cost rule"), or None."""
    learnable_before = site.weight.size + (site.bias.size if site.bias is not None else 0)
    learnable_after = anchors.shape[0] * site.cout + site.cout
    if learnable_after > learnable_before:
        return f"substitution gives more learnable params ({learnable_after} vs {learnable_before})"
    if not ctx.target:
        return None
    block = lbc_records(conv, anchors, opts)
    target = _target(ctx.target)
    before = target.estimate_energy([conv], ctx.hw) if target is not None else None
    if before is not None:
        after = target.estimate_energy(block, ctx.hw)
        if after is not None and after > before:
            return (f"substitution costs more energy on {ctx.target} ({after:.3g} J vs {before:.3g} J for the "
                    "ordinary conv)")
        return None
    macs = sum(r.macs for r in block)
    if macs > conv.macs:
        return f"substitution gives more MACs ({macs} vs {conv.macs}, the anchor conv counted in full)"
    return None


def _target(name: str) -> Target | None:
    try:
        return get_target(name)
    except PimcError:
        return None


def ternary_anchors(
    count: int, cin: int, kernel: tuple[int, int], density: float, paired: bool, rng: np.random.Generator
) -> np.ndarray:
    """``count`` sparse ternary anchors of shape (cin, kh, kw); every anchor has at least one non-zero."""
    base = count - count // 2 if paired and count >= 2 else count
    size = cin * kernel[0] * kernel[1]
    mask = rng.random((base, size)) < density
    empty = ~mask.any(axis=1)
    mask[np.flatnonzero(empty), rng.integers(0, size, int(empty.sum()))] = True
    signs = np.where(rng.random((base, size)) < 0.5, -1.0, 1.0)
    rows = (mask * signs).astype(np.float32)
    if base != count:
        rows = np.concatenate([rows, -rows[: count - base]], axis=0)
    return rows.reshape(count, cin, *kernel)


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


def _site(node: onnx.NodeProto, model: onnx.ModelProto, shapes: dict) -> tuple[ConvSite | None, str]:
    weight = get_initializer(model.graph, node.input[1])
    bias = get_initializer(model.graph, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if len(node.input) > 2 and node.input[2] and bias is None:
        return None, "bias is not a constant initializer"
    in_shape = shapes.get(node.input[0])
    out_shape = shapes.get(node.output[0])
    if not in_shape or not out_shape or len(in_shape) != 4 or not all(isinstance(d, int) for d in out_shape[2:]):
        return None, "input/output shape unknown"
    if not all(isinstance(d, int) for d in in_shape[2:]):
        return None, "input spatial shape unknown"
    strides = tuple(attr(node, "strides", [1, 1]))
    dilations = tuple(attr(node, "dilations", [1, 1]))
    pads = _explicit_pads(node, in_shape[2:], out_shape[2:], weight.shape[2:], strides, dilations)
    return ConvSite(node, weight, bias, strides, pads, dilations, (out_shape[2], out_shape[3])), ""


def _explicit_pads(node, in_hw, out_hw, kernel, strides, dilations) -> tuple[int, int, int, int]:
    mode = attr(node, "auto_pad", b"NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode in ("NOTSET", ""):
        return tuple(attr(node, "pads", [0, 0, 0, 0]))
    if mode == "VALID":
        return (0, 0, 0, 0)
    total = [
        max(0, (o - 1) * s + (k - 1) * d + 1 - i)
        for i, o, k, s, d in zip(in_hw, out_hw, kernel, strides, dilations, strict=True)
    ]
    if mode == "SAME_UPPER":
        return (total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2)
    return (total[0] - total[0] // 2, total[1] - total[1] // 2, total[0] // 2, total[1] // 2)


def _features(patches: np.ndarray, anchors: np.ndarray, variant: str, cin: int, comparator: str) -> np.ndarray:
    """Comparator responses of the anchor conv at the sampled positions (rows × m)."""
    m = anchors.shape[0]
    if variant == "lbc":
        pre = patches.astype(np.float64) @ anchors.reshape(m, -1).T.astype(np.float64)
    else:
        q = m // cin
        per_channel = patches.reshape(len(patches), cin, -1).astype(np.float64)
        kernels = anchors.reshape(cin, q, -1).astype(np.float64)
        pre = np.einsum("rck,cqk->rcq", per_channel, kernels).reshape(len(patches), m)
    if comparator == "binary":
        return (pre > 0).astype(np.float64)
    return np.maximum(pre, 0.0)


def _accuracy_before_after(
    original: onnx.ModelProto, model: onnx.ModelProto, spec: str, seed: int
) -> dict[str, Any]:
    from ...compiler.sessions import make_session, predict
    from ...runtime.datasets import load_dataset
    from ...runtime.session import accuracy, model_input

    _, shape, dtype = model_input(original)
    data = load_dataset(spec, shape, split="test", seed=seed)
    if data.y is None:
        return {}
    x = data.x.astype(dtype, copy=False)
    before = accuracy(predict(make_session(original), x, 64), data.y)
    after = accuracy(predict(make_session(model), x, 64), data.y)
    return {"accuracy_data": f"{spec} (test split, {len(x)} samples)", "accuracy_before": before,
            "accuracy_after": after}
