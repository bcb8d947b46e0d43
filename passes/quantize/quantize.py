"""quantize: QuantizeLinear/DequantizeLinear pairs that onnxruntime executes (uniform bit widths).

Every Conv / Gemm / MatMul with a constant float weight is quantized (math in :mod:`.qdq`):

* weight: symmetric per output channel, ``s_c = max|W_c| / (2^(n−1) − 1)``, codes
  ``clip(round(W/s_c), ±(2^(n−1) − 1))`` stored as int8 → ``DequantizeLinear(axis=out-channel)``. For
  ``n < 8`` the int8 codes lie on the n-bit grid, so onnxruntime measures the n-bit accuracy;
* activation read by the node: per tensor, range from the calibration feeds (``--data``; seeded random
  inputs otherwise), ``calibration=minmax`` or ``percentile`` (``p`` and ``100 − p``), asymmetric uint
  (default) or symmetric int; ``Clip`` to the n-bit range first when ``n < 8``;
* bias: int32 at scale ``s_x · s_c`` (``quantize_bias``).

Bit widths: ``bits`` for both, ``weight_bits`` / ``act_bits`` override it. ``weight_bits=auto`` chooses
each layer's weight bits under the accuracy budget (``compiler.layerwise``): candidates ``auto_bits`` (4, 6)
below ``bits``, cost = bits × weights; each candidate is the whole quantized model (activations included)
with that layer's weights on the n-bit grid and the layers before it as chosen; the fewest bits
within the budget win, and a layer where none fits or pays off on the target keeps ``bits`` (listed in
``stats["bit_choice"]["skipped"]`` with the reason). Without labelled data every layer keeps ``bits``. Hybrid bits for decomposed
layers (ESCALATE): a node annotated ``role="basis"`` gets ``basis_bits`` and one annotated
``role="coefficient"`` gets ``coefficient_bits`` (both default to the weight bits).

``kernels=measured`` (layout int8, for onnxruntime): each layer keeps its int8 kernel only where that is
measured faster on this machine than its float kernel with the conversions around it, and the pass keeps
the fastest of all-int8, that choice and its float input, timed whole (:mod:`.kernel_choice`); the
timings are in ``stats["kernel_choice"]``. A node left in float between int8 neighbours reads a per-axis
DequantizeLinear so that onnxruntime does not quantize its weight behind pimc's back
(:func:`.qdq.guard_float_readers`).

The compute node keeps its name and annotations and gains ``pimc.weight_bits`` and ``pimc.act_bits``;
``graph.quantization_annotation`` gets ``pimc.dtype`` / ``pimc.bits`` of every quantized tensor. Nodes in
``exclude``, nodes whose weight is not a constant float initializer and nodes already behind a
DequantizeLinear are left alone and listed in ``stats["skipped"]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from ...compiler import annotations as ann
from ...compiler.errors import PimcError
from ...compiler.graph import value_shapes
from ...compiler.layerwise import Candidate, Site, compress_layerwise, dense_macs
from ...compiler.modelio import copy_model
from ...compiler.passbase import Option, Pass, PassContext, PassResult, batch_sizes
from .kernel_choice import choose_float_kernels, compare_whole
from .layout import fused_layout, share_params
from .qdq import (
    QuantPlan,
    activation_input,
    apply_plan,
    calibrate_acts,
    compute_nodes,
    ensure_qdq_opset,
    float_weight,
    merge_feeds,
    quantize_symmetric,
    weight_axis,
)

BITS = {"minimum": 2, "maximum": 8}
AUTO = "auto"
AUTO_BITS = (4, 6)  # default candidates below the 8-bit default, which a layer keeps when none fits

ACT_OPTIONS = (
    Option("activations", bool, True, "quantize the activations read by compute nodes"),
    Option("calibration", str, "minmax", "activation range estimator", choices=("minmax", "percentile")),
    Option("percentile", float, 99.99, "upper percentile for calibration=percentile (lower = 100 − p)",
           minimum=50.0, maximum=100.0),
    Option("act_scheme", str, "asymmetric", "activation grid: asymmetric uint with zero point, or symmetric int",
           choices=("asymmetric", "symmetric")),
    Option("samples", int, 128, "calibration samples used for activation ranges", minimum=1),
    Option("layout", str, "int8", "Q/DQ placement: int8 (inputs and outputs of compute nodes, Adds, pooling, "
           "Concat; Relu/Clip folded, so onnxruntime fuses its integer kernels) or inputs (compute-node inputs "
           "only)", choices=("int8", "inputs")),
    Option("quantize_bias", bool, True, "store biases as int32 at scale s_act·s_weight"),
    Option("exclude", list, [], "compute node names left in float"),
)


class Quantize(Pass, name="quantize"):
    """QDQ quantization: per-channel symmetric weights, calibrated per-tensor activations."""

    options = (
        Option("bits", int, 8, "bit width of weights and activations", **BITS),
        Option("weight_bits", str, None, "weight bit width 2..8 (overrides bits), or auto: per layer the fewest of "
               f"{', '.join(map(str, AUTO_BITS))} bits within the accuracy budget, else bits"),
        Option("act_bits", int, None, "activation bit width (overrides bits)", **BITS),
        Option("basis_bits", int, None, "weight bits of decomposed basis nodes (role=basis)", **BITS),
        Option("coefficient_bits", int, None, "weight bits of coefficient nodes (role=coefficient)", **BITS),
        Option("auto_bits", list, [str(b) for b in AUTO_BITS], "weight_bits=auto: candidate bit widths below bits "
               "(3 is available but the validation split, drawn from the training data, underestimates its test loss)"),
        Option("reduce_range", bool, None, "8-bit weights on the 7-bit grid (±63, quantize_static's reduce_range): "
               "onnxruntime's u8×s8 kernels on x86 CPUs without VNNI sum pairs of products in int16 (VPMADDUBSW) "
               "and saturate otherwise; unset: on when compiling for the onnxruntime target, off elsewhere "
               "(simulated accelerators compute int8 exactly)"),
        *ACT_OPTIONS,
        Option("kernels", str, "int8", "int8: every selected node gets its int8 kernel; measured: a node stays float "
               "where onnxruntime's float kernel, with its conversions, is measured faster on this machine "
               "(layout int8 only; see kernel_choice)", choices=("int8", "measured")),
        Option("kernel_batches", list, ["1", "64"], "kernels=measured: batch sizes timed (geometric mean)"),
        Option("kernel_repeats", int, 30, "kernels=measured: interleaved timing repeats", minimum=3),
        Option("kernel_margin", float, 0.1, "kernels=measured: a node stays float only if float/int8 time is "
               "below 1 − margin", minimum=0.0, maximum=0.9),
        Option("kernel_threads", int, None, "kernels=measured: onnxruntime threads (unset: its default, as in "
               "pimc bench)", minimum=1),
    )

    def __init__(self, **opts: Any):
        super().__init__(**opts)
        self.opts["weight_bits"] = parse_weight_bits(self.opts["weight_bits"])
        self.opts["auto_bits"] = sorted({int(parse_weight_bits(b)) for b in self.opts["auto_bits"]})
        self.opts["kernel_batches"] = batch_sizes(self.opts["kernel_batches"], "quantize.kernel_batches")

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        if self.opts["kernels"] == "measured" and self.opts["layout"] != "int8":
            raise PimcError("option quantize.kernels=measured needs layout=int8 (only that layout fuses int8 kernels)")
        selected, skipped = select_nodes(model, self.opts["exclude"])
        if not selected:
            return PassResult(model, False, {"quantized": [], "skipped": skipped})
        feeds = calibration(model, ctx, self.opts["samples"])
        given = model
        model, old_opset = ensure_qdq_opset(model, feeds)
        selected = refind(model, selected)
        reduce = self.opts["reduce_range"]
        reduce = ctx.target == "onnxruntime" if reduce is None else reduce
        keep_float = self.opts["kernels"] == "measured" or self.opts["weight_bits"] == AUTO
        float_model = copy_model(model) if keep_float else model
        quantized, plan = self._quantize(float_model, selected, feeds, reduce, ctx, in_place=not keep_float)
        kernel_choice = None
        if self.opts["kernels"] == "measured":
            quantized, plan, selected, kernel_choice = self._choose_kernels(float_model, quantized, plan, selected,
                                                                             feeds, reduce, ctx, skipped)
        if not plan.weights:  # kernels=measured found the float model fastest
            return PassResult(given, False, {**summary_stats(plan, skipped, None, ctx), "kernel_choice": kernel_choice})
        bit_choice = None
        if self.opts["weight_bits"] == AUTO:
            quantized, bit_choice = choose_bits(float_model, quantized, plan, selected, self.opts, ctx)
        stats = summary_stats(plan, skipped, old_opset, ctx)
        stats["reduce_range"] = reduce
        if kernel_choice is not None:
            stats["kernel_choice"] = kernel_choice
        if bit_choice is not None:
            stats["bit_choice"] = bit_choice
        return PassResult(quantized, True, stats)

    def _quantize(self, float_model: onnx.ModelProto, selected: list[tuple[onnx.NodeProto, np.ndarray]],
                  feeds: list[dict[str, np.ndarray]], reduce: bool, ctx: PassContext,
                  in_place: bool = False) -> tuple[onnx.ModelProto, QuantPlan]:
        """``float_model`` (or, unless ``in_place``, a copy) with the ``selected`` nodes (and their
        activations) in int8."""
        model = float_model if in_place else copy_model(float_model)
        selected = refind(model, selected)
        plan = QuantPlan(quantize_bias=self.opts["quantize_bias"])
        for node, weight in selected:
            bits = node_weight_bits(node, self.opts)
            bits = 7 if reduce and bits == 8 else bits
            plan.weights[node.name] = quantize_symmetric(weight, bits, weight_axis(node, weight.ndim))
        act_bits = self.opts["act_bits"] or self.opts["bits"]
        if self.opts["activations"]:
            plan_activations(model, plan, [n for n, _ in selected], feeds, act_bits, self.opts, ctx.seed)
        apply_plan(model, plan)
        return model, plan

    def _choose_kernels(self, float_model, quantized, plan, selected, feeds, reduce, ctx, skipped):
        """``kernels=measured``: the nodes whose float kernel is measured faster stay float. The whole models
        (all int8, that choice, all float) are then timed interleaved and the fastest is kept
        (:mod:`.kernel_choice`). Appends the nodes left in float to ``skipped``."""
        batches = self.opts["kernel_batches"]
        repeats, threads = self.opts["kernel_repeats"], self.opts["kernel_threads"]
        names = [n.name for n, _ in selected]
        chosen, report = choose_float_kernels(quantized, names, batches, repeats, threads, self.opts["kernel_margin"])
        options = {"all_int8": (quantized, plan, selected), "float": (float_model, QuantPlan(), [])}
        if chosen and len(chosen) < len(selected):
            kept = [(n, w) for n, w in selected if n.name not in set(chosen)]
            options["measured"] = (*self._quantize(float_model, kept, feeds, reduce, ctx), kept)
        x = next(iter(feeds[0].values()))
        report["whole_model"] = compare_whole({k: v[0] for k, v in options.items()}, x, batches, repeats, threads)
        model, plan, kept = options[report["whole_model"]["kept"]]
        left = [n.name for n, _ in selected if n.name not in {k.name for k, _ in kept}]
        report["float"] = left
        for name in left:
            ratio = report["nodes"].get(name, {}).get("float_over_int8")
            why = f"float/int8 time {ratio:.2f}" if ratio is not None else "the all-float model was measured fastest"
            skipped.append({"node": name, "reason": f"float kernel measured faster ({why})"})
        return model, plan, kept, report


def parse_weight_bits(value: str | None) -> int | str | None:
    """``weight_bits``: None, ``auto`` or an integer 2..8."""
    if value is None or str(value).lower() == AUTO:
        return None if value is None else AUTO
    try:
        bits = int(str(value))
    except ValueError:
        raise PimcError(f"option quantize.weight_bits: expected an integer 2..8 or auto, got {value!r}") from None
    if not BITS["minimum"] <= bits <= BITS["maximum"]:
        raise PimcError(f"option quantize.weight_bits: {bits} is outside {BITS['minimum']}..{BITS['maximum']}")
    return bits


def choose_bits(float_model: onnx.ModelProto, quantized: onnx.ModelProto, plan: QuantPlan,
                selected: list[tuple[onnx.NodeProto, np.ndarray]], opts: dict[str, Any],
                ctx: PassContext) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Per-layer weight bits under the accuracy budget (``weight_bits=auto``): the layer-wise driver walks
    the quantized model (every layer at ``bits``, activations quantized) and each candidate rebuilds it with
    one more layer at fewer bits, so the budget sees the whole quantized model. Layers whose bits a role
    option fixes (``basis_bits`` / ``coefficient_bits``) are not searched. Updates ``plan.weights``."""
    shapes = value_shapes(float_model)
    fallback = int(opts["bits"])
    weights = {n.name: (n, w) for n, w in selected if node_weight_bits(n, {**opts, "weight_bits": None}) == fallback}
    sites = [Site(name, node.input[0], dense_macs(node, w.size, shapes)) for name, (node, w) in weights.items()]

    def build(current: onnx.ModelProto, layer: str, layer_bits: int) -> onnx.ModelProto:
        """``float_model`` quantized with the bits already chosen in ``current`` and ``layer`` at ``layer_bits``."""
        bits = {**_chosen_bits(current, set(weights), fallback), layer: layer_bits}
        trial = copy_model(float_model)
        requant = QuantPlan(dict(plan.weights), dict(plan.acts), dict(plan.node_acts), plan.quantize_bias)
        for name, b in bits.items():
            node, w = weights[name]
            requant.weights[name] = quantize_symmetric(w, b, weight_axis(node, w.ndim))
        apply_plan(trial, requant)
        return trial

    def propose(current: onnx.ModelProto, site: Site, x_comp, x_ref) -> list[Candidate]:
        node, weight = weights[site.node]
        return [_bits_candidate(node, weight, b, fallback, build) for b in opts["auto_bits"] if b < fallback]

    result = compress_layerwise(quantized, sites, propose, ctx, force=False)
    for entry in result.chosen:
        node, w = weights[entry["node"]]
        plan.weights[entry["node"]] = quantize_symmetric(w, entry["weight_bits"], weight_axis(node, w.ndim))
    return result.model, {"chosen": result.chosen, "skipped": result.skipped, "default_bits": fallback,
                          **({"note": result.note} if result.note else {})}


def _chosen_bits(model: onnx.ModelProto, names: set[str], fallback: int) -> dict[str, int]:
    """Weight bits other than ``fallback`` already annotated on the searched nodes ``names``."""
    out = {}
    for n in model.graph.node:
        bits = ann.get_node_annotation(n, "weight_bits") if n.name in names else None
        if bits is not None and int(bits) != fallback:
            out[n.name] = int(bits)
    return out


def _bits_candidate(node: onnx.NodeProto, weight: np.ndarray, bits: int, fallback: int, build) -> Candidate:
    """The model with this layer's weights on the n-bit grid (the other layers as chosen so far)."""
    axis = weight_axis(node, weight.ndim)
    fake = quantize_symmetric(weight, bits, axis).dequantized()
    error = float(np.sum((fake - weight) ** 2) / max(float(np.sum(weight.astype(np.float64) ** 2)), 1e-30))
    name = node.name

    def apply(target: onnx.ModelProto) -> None:
        target.CopyFrom(build(target, name, bits))

    info = {"weight_bits": bits, "relative_error": error, "weights": int(weight.size),
            "dense_cost": float(fallback * weight.size)}
    return Candidate(float(bits * weight.size), apply, info)


# Without --data, activation ranges come from seeded random inputs: they say nothing about real images
# (the report marks them "random"), so two samples set them and a large model is not run many times.
RANDOM_CALIBRATION_SAMPLES = 2


def calibration(model: onnx.ModelProto, ctx: PassContext, samples: int) -> list[dict[str, np.ndarray]]:
    """Up to ``samples`` calibration feeds, stacked into batches when the model allows it."""
    count = min(samples, 16) if ctx.has_real_data else RANDOM_CALIBRATION_SAMPLES
    feeds = ctx.calibration_feeds(model, count=count)[:samples]
    return merge_feeds(model, feeds)


def node_weight_bits(node: onnx.NodeProto, opts: dict[str, Any]) -> int:
    """Weight bits of one node: role-specific (hybrid) bits first, then weight_bits, then bits."""
    chosen = opts.get("weight_bits")
    default = chosen if isinstance(chosen, int) else opts["bits"]
    role = ann.get_node_annotation(node, "role")
    if role == "basis" and opts.get("basis_bits"):
        return int(opts["basis_bits"])
    if role == "coefficient" and opts.get("coefficient_bits"):
        return int(opts["coefficient_bits"])
    return int(default)


def select_nodes(
    model: onnx.ModelProto, exclude: list[str]
) -> tuple[list[tuple[onnx.NodeProto, np.ndarray]], list[dict[str, str]]]:
    selected, skipped = [], []
    excluded = set(exclude)
    for node in compute_nodes(model):
        if node.name in excluded:
            skipped.append({"node": node.name, "reason": "excluded by option"})
            continue
        weight, reason = float_weight(model, node)
        if weight is None:
            skipped.append({"node": node.name, "reason": reason})
        else:
            selected.append((node, weight))
    return selected, skipped


def refind(model: onnx.ModelProto, selected: list[tuple[onnx.NodeProto, np.ndarray]]):
    """The same nodes in ``model`` (which may be a converted copy)."""
    by_name = {n.name: n for n in model.graph.node}
    return [(by_name[n.name], w) for n, w in selected]


def plan_activations(
    model: onnx.ModelProto,
    plan: QuantPlan,
    nodes: list[onnx.NodeProto],
    feeds: list[dict[str, np.ndarray]],
    bits: int,
    opts: dict[str, Any],
    seed: int,
    values: dict[str, list[np.ndarray]] | None = None,
) -> None:
    """Calibrate the activation read by each node and record it in ``plan``."""
    tensors: list[str] = []
    for node in nodes:
        tensor = activation_input(model, node)
        if tensor is None:
            continue
        plan.node_acts[node.name] = tensor
        if tensor not in tensors:
            tensors.append(tensor)
    aliases: dict[str, str] = {}
    if opts.get("layout", "int8") == "int8":
        tensors, aliases = fused_layout(model, plan.node_acts)
    plan.acts = calibrate_acts(model, tensors, feeds, bits, opts["calibration"], opts["percentile"],
                               opts["act_scheme"], seed, values)
    share_params(plan.acts, aliases)


def summary_stats(plan: QuantPlan, skipped: list[dict[str, str]], old_opset: int | None, ctx: PassContext):
    stats: dict[str, Any] = {
        "quantized": {name: {"weight_bits": wq.bits} for name, wq in plan.weights.items()},
        "activations": {t: {"bits": a.bits, "dtype": a.dtype, "range": [round(a.lo, 6), round(a.hi, 6)]}
                        for t, a in plan.acts.items()},
        "calibration_source": ctx.data_spec if ctx.has_real_data else "random",
        "skipped": skipped,
    }
    for name, tensor in plan.node_acts.items():
        stats["quantized"][name]["act_bits"] = plan.acts[tensor].bits
    if old_opset is not None:
        stats["opset_converted"] = {"from": old_opset, "to": 13}
    return stats
