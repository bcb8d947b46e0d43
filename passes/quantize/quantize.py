"""quantize: QuantizeLinear/DequantizeLinear pairs that onnxruntime executes (uniform bit widths).

Every Conv / Gemm / MatMul with a constant float weight is quantized (math in :mod:`.qdq`):

* weight: symmetric per output channel, ``s_c = max|W_c| / (2^(n−1) − 1)``, codes
  ``clip(round(W/s_c), ±(2^(n−1) − 1))`` stored as int8 → ``DequantizeLinear(axis=out-channel)``. For
  ``n < 8`` the int8 codes lie on the n-bit grid, so onnxruntime measures the n-bit accuracy;
* activation read by the node: per tensor, range from the calibration feeds (``--data``; seeded random
  inputs otherwise), ``calibration=minmax`` or ``percentile`` (``p`` and ``100 − p``), asymmetric uint
  (default) or symmetric int; ``Clip`` to the n-bit range first when ``n < 8``;
* bias: int32 at scale ``s_x · s_c`` (``quantize_bias``).

Bit widths: ``bits`` for both, ``weight_bits`` / ``act_bits`` override it. Hybrid bits for decomposed
layers (ESCALATE): a node annotated ``role="basis"`` gets ``basis_bits`` and one annotated
``role="coefficient"`` gets ``coefficient_bits`` (both default to the weight bits).

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
from ...compiler.passbase import Option, Pass, PassContext, PassResult, register_pass
from .qdq import (
    QuantPlan,
    activation_input,
    apply_plan,
    calibrate_acts,
    compute_nodes,
    ensure_qdq_opset,
    float_weight,
    fused_layout,
    merge_feeds,
    quantize_symmetric,
    share_params,
    weight_axis,
)

BITS = {"minimum": 2, "maximum": 8}

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


@register_pass
class Quantize(Pass):
    name = "quantize"
    summary = "QDQ quantization: per-channel symmetric weights, calibrated per-tensor activations"
    options = (
        Option("bits", int, 8, "bit width of weights and activations", **BITS),
        Option("weight_bits", int, None, "weight bit width (overrides bits)", **BITS),
        Option("act_bits", int, None, "activation bit width (overrides bits)", **BITS),
        Option("basis_bits", int, None, "weight bits of decomposed basis nodes (role=basis)", **BITS),
        Option("coefficient_bits", int, None, "weight bits of coefficient nodes (role=coefficient)", **BITS),
        *ACT_OPTIONS,
    )

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        selected, skipped = select_nodes(model, self.opts["exclude"])
        if not selected:
            return PassResult(model, False, {"quantized": [], "skipped": skipped})
        feeds = calibration(model, ctx, self.opts["samples"])
        model, old_opset = ensure_qdq_opset(model, feeds)
        selected = refind(model, selected)
        plan = QuantPlan(quantize_bias=self.opts["quantize_bias"])
        for node, weight in selected:
            bits = node_weight_bits(node, self.opts)
            plan.weights[node.name] = quantize_symmetric(weight, bits, weight_axis(node, weight.ndim))
        act_bits = self.opts["act_bits"] or self.opts["bits"]
        if self.opts["activations"]:
            plan_activations(model, plan, [n for n, _ in selected], feeds, act_bits, self.opts, ctx.seed)
        apply_plan(model, plan)
        stats = summary_stats(plan, skipped, old_opset, ctx)
        return PassResult(model, True, stats)


def calibration(model: onnx.ModelProto, ctx: PassContext, samples: int) -> list[dict[str, np.ndarray]]:
    """Up to ``samples`` calibration feeds, stacked into batches when the model allows it."""
    feeds = ctx.calibration_feeds(model, count=min(samples, 16))[:samples]
    return merge_feeds(model, feeds)


def node_weight_bits(node: onnx.NodeProto, opts: dict[str, Any]) -> int:
    """Weight bits of one node: role-specific (hybrid) bits first, then weight_bits, then bits."""
    default = opts.get("weight_bits") or opts["bits"]
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
