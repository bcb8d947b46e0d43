"""QDQ machinery shared by the ``quantize`` and ``bitmap`` passes and the quantization-aware exporter.

Weights (symmetric, per output channel ``c``, ``n`` bits, ``qmax = 2^(n−1) − 1``)::

    s_c = max|W_c| / qmax            (s_c = 1 for an all-zero channel)
    q   = clip(round(W / s_c), −qmax, qmax)      stored as an int8 initializer (zero point 0)
    Ŵ   = DequantizeLinear(q, s, 0, axis = output-channel axis)

so for ``n < 8`` the stored int8 values lie on the n-bit grid. The output-channel axis is 0 for Conv and
for Gemm with ``transB=1``, the last axis for Gemm with ``transB=0`` and for MatMul. A caller may give the
integer codes and scales directly (the ``bitmap`` pass and the exporter do).

Activations (per tensor, calibrated on the float model over the calibration feeds; range ``[lo, hi]``
from min/max or from the ``p``/``100−p`` percentiles, widened to contain 0)::

    asymmetric (UINT): s = (hi − lo) / (2^n − 1),  z = round(−lo / s),  codes 0 … 2^n − 1 (uint8)
    symmetric  (INT):  s = max(|lo|, |hi|) / qmax, z = 0,              codes −qmax … qmax (int8)
    x̂ = DequantizeLinear(QuantizeLinear(x, s, z), s, z)

For ``n < 8`` a ``Clip`` to the representable n-bit range, ``[(code_min − z)·s, (code_max − z)·s]``,
precedes the QuantizeLinear, so onnxruntime computes exactly the n-bit activations. One Q/DQ pair per
activation tensor, placed right after its producer, is read by every reader of the tensor. With the
``int8`` layout (default, :func:`.layout.fused_layout`) the outputs of compute nodes, residual Adds, pooling and
Concat are quantized too, after a Relu/Clip that is their only reader (the range folds the activation),
and MaxPool/Flatten/Reshape outputs share their input's parameters, which is what onnxruntime's QDQ
fusion turns into QLinearConv, QGemm, QLinearAdd, QLinearGlobalAveragePool and uint8 pooling.

Biases (optional, when the activation is quantized): ``b_q = round(b / (s_x · s_c))`` as int32, dequantized
per output channel at scale ``s_x · s_c`` — the integer accumulator an integer datapath would add.

Annotations: the compute node keeps its name and annotations and gets ``pimc.weight_bits`` and
``pimc.act_bits``; ``graph.quantization_annotation`` records ``pimc.dtype`` (``INT<n>``, ``UINT<n>``,
``INT32``) and ``pimc.bits`` for both the integer tensors (weight codes, Q outputs, bias codes) and the
dequantized tensors the compute node reads.

Per-axis DequantizeLinear needs opset ≥ 13: an older model is converted with ``onnx.version_converter``
and accepted only if onnxruntime gives the same outputs on the calibration feeds.

float16 models: QuantizeLinear/DequantizeLinear take float16 (scales of the input's type) from opset 19,
so such a model is raised to opset ≥ 19 the same way; every scale and Clip bound is stored in the float
type of the tensor it applies to (the DequantizeLinear output type is the scale's), and the graph stays
float16 end to end, which onnxruntime's CPU provider runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...compiler import annotations as ann
from ...compiler.errors import PimcError
from ...compiler.graph import (
    add_initializer,
    all_names,
    attr,
    graph_output_names,
    initializer_map,
    opset_version,
    producers,
    remove_initializers,
    set_initializer,
    unique_name,
    value_shapes,
)
from ...compiler.verify import compare_outputs, run_model

COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
QDQ_OPSET = 13
FLOAT16_QDQ_OPSET = 19
_MAX_CALIB_VALUES = 2_000_000


def qmax(bits: int) -> int:
    """Largest symmetric code of an n-bit signed grid."""
    return 2 ** (bits - 1) - 1


@dataclass
class WeightQuant:
    """Integer codes and per-channel scales for one compute node's weight."""

    codes: np.ndarray
    scale: np.ndarray
    axis: int
    bits: int
    dtype: str = ""

    def dequantized(self) -> np.ndarray:
        shape = [1] * self.codes.ndim
        shape[self.axis] = -1
        return self.codes.astype(np.float32) * self.scale.reshape(shape)


@dataclass
class ActQuant:
    scale: float
    zero_point: int
    bits: int
    signed: bool
    lo: float = 0.0
    hi: float = 0.0

    @property
    def dtype(self) -> str:
        return f"{'INT' if self.signed else 'UINT'}{self.bits}"

    def code_range(self) -> tuple[int, int]:
        if self.signed:
            return (-128 if self.bits == 8 else -qmax(self.bits)), qmax(self.bits)
        return 0, 2**self.bits - 1

    def fake(self, x: np.ndarray) -> np.ndarray:
        low, high = self.code_range()
        codes = np.clip(np.round(x / self.scale) + self.zero_point, low, high)
        return ((codes - self.zero_point) * self.scale).astype(np.float32)


@dataclass
class QuantPlan:
    """What to write: weight quantization per compute node, activation params per tensor."""

    weights: dict[str, WeightQuant] = field(default_factory=dict)
    acts: dict[str, ActQuant] = field(default_factory=dict)
    node_acts: dict[str, str] = field(default_factory=dict)
    quantize_bias: bool = True
    float_dtypes: dict[str, type] = field(default_factory=dict)


def weight_axis(node: onnx.NodeProto, rank: int) -> int:
    """The output-channel axis of a compute node's weight."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if attr(node, "transB", 0) else 1
    return rank - 1


def quantize_symmetric(w: np.ndarray, bits: int, axis: int) -> WeightQuant:
    """Per-channel symmetric quantization on the n-bit grid, codes stored as int8."""
    moved = np.moveaxis(np.asarray(w, np.float32), axis, 0).reshape(w.shape[axis], -1)
    peak = np.abs(moved).max(axis=1) if moved.size else np.zeros(w.shape[axis], np.float32)
    scale = np.where(peak > 0, peak / qmax(bits), 1.0).astype(np.float32)
    return WeightQuant(codes_for(w, scale, bits, axis), scale, axis, bits)


def codes_for(w: np.ndarray, scale: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """Round ``w`` to the n-bit grid of the given per-channel scales."""
    shape = [1] * w.ndim
    shape[axis] = -1
    limit = qmax(bits)
    return np.clip(np.round(w / scale.reshape(shape)), -limit, limit).astype(np.int8)


def act_quant(lo: float, hi: float, bits: int, signed: bool) -> ActQuant:
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if signed:
        peak = max(abs(lo), abs(hi))
        scale = peak / qmax(bits) if peak > 0 else 1.0
        return ActQuant(float(scale), 0, bits, True, lo, hi)
    levels = 2**bits - 1
    scale = (hi - lo) / levels if hi > lo else 1.0
    zero = int(np.clip(round(-lo / scale), 0, levels))
    return ActQuant(float(scale), zero, bits, False, lo, hi)


def activation_range(values: list[np.ndarray], method: str, percentile: float, seed: int = 0) -> tuple[float, float]:
    """Calibration range of one tensor over every calibration output (min-max or percentile)."""
    flat = np.concatenate([np.asarray(v, np.float32).ravel() for v in values])
    if method == "minmax":
        return float(flat.min()), float(flat.max())
    if flat.size > _MAX_CALIB_VALUES:
        flat = np.random.default_rng(seed).choice(flat, _MAX_CALIB_VALUES, replace=False)
    return float(np.percentile(flat, 100.0 - percentile)), float(np.percentile(flat, percentile))


def compute_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type in COMPUTE_OPS and len(n.input) > 1]


def float_weight(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[np.ndarray | None, str]:
    """The node's float weight initializer, or None with the reason it cannot be quantized."""
    prods = producers(model.graph)
    source = prods.get(node.input[1])
    if source is not None and source.op_type == "DequantizeLinear":
        return None, "already quantized"
    init = initializer_map(model.graph).get(node.input[1])
    if init is None:
        return None, "weight is not a constant initializer"
    if init.data_type not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE):
        return None, f"weight has non-float type {TensorProto.DataType.Name(init.data_type)}"
    if node.op_type in ("Gemm", "MatMul") and len(init.dims) != 2:
        return None, f"{node.op_type} weight is {len(init.dims)}-D (per-channel quantization needs 2-D)"
    return numpy_helper.to_array(init).astype(np.float32), ""


def activation_input(model: onnx.ModelProto, node: onnx.NodeProto) -> str | None:
    """The activation input of a compute node (None if it is a constant or already dequantized)."""
    name = node.input[0]
    if name in initializer_map(model.graph):
        return None
    source = producers(model.graph).get(name)
    if source is not None and source.op_type in ("DequantizeLinear", "Constant"):
        return None
    return name


def merge_feeds(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], chunk: int = 64) -> list[dict[str, np.ndarray]]:
    """Single-sample feeds stacked into batches of ``chunk`` when every real input has a symbolic batch dim."""
    inits = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name in inits:
            continue
        dims = value.type.tensor_type.shape.dim
        if not dims or dims[0].HasField("dim_value"):
            return feeds
    if len(feeds) < 2 or any(set(f) != set(feeds[0]) for f in feeds):
        return feeds
    return [{k: np.concatenate([f[k] for f in feeds[i : i + chunk]]) for k in feeds[0]}
            for i in range(0, len(feeds), chunk)]


def collect_tensors(
    model: onnx.ModelProto, tensors: list[str], feeds: list[dict[str, np.ndarray]]
) -> dict[str, list[np.ndarray]]:
    """Values of ``tensors`` (graph inputs or intermediate) on every calibration feed. The tensors are made
    graph outputs for one run and removed again, so ``model`` is left as it was."""
    inputs = {i.name for i in model.graph.input}
    existing = graph_output_names(model.graph)
    kept = len(model.graph.output)
    for name in tensors:
        if name not in inputs and name not in existing:
            model.graph.output.append(helper.make_empty_tensor_value_info(name))
    names = [o.name for o in model.graph.output]
    try:
        runs = run_model(model, feeds, optimize=False)
    finally:
        del model.graph.output[kept:]
    result: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    for feed, outs in zip(feeds, runs, strict=True):
        values = dict(zip(names, outs, strict=True))
        for t in tensors:
            result[t].append(np.asarray(feed[t] if t in inputs else values[t]))
    return result


def float_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every typed value and initializer (``TensorProto`` enum)."""
    types = {init.name: init.data_type for init in model.graph.initializer}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types.setdefault(vi.name, vi.type.tensor_type.elem_type)
    return types


def needed_qdq_opset(model: onnx.ModelProto) -> int:
    """13 (per-axis DequantizeLinear), or 19 when a compute node reads float16 (float16 Q/DQ)."""
    types = float_types(model)
    fp16 = any(types.get(name) == TensorProto.FLOAT16 for n in compute_nodes(model) for name in n.input[:2])
    return FLOAT16_QDQ_OPSET if fp16 else QDQ_OPSET


def ensure_qdq_opset(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> tuple[onnx.ModelProto, int | None]:
    """Raise the default-domain opset to what QDQ needs (``needed_qdq_opset``); returns (model, the old
    opset if it was raised)."""
    version = opset_version(model)
    target = needed_qdq_opset(model)
    if version >= target:
        return model, None
    from onnx import version_converter

    try:
        converted = ann.carry_annotations(model, version_converter.convert_version(model, target))
        same = compare_outputs(run_model(model, feeds[:4]), run_model(converted, feeds[:4]))
    except Exception as exc:
        raise PimcError(
            f"{_qdq_kind(target)} needs opset >= {target}; converting from opset {version} failed "
            f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})"
        ) from exc
    if not same.within(1e-4):
        raise PimcError(
            f"{_qdq_kind(target)} needs opset >= {target}; converting from opset {version} changed the outputs "
            f"(relative error {same.max_rel_err:.3g}); re-export the model at opset {target} or later"
        )
    return converted, version


def _qdq_kind(opset: int) -> str:
    return "float16 QDQ" if opset == FLOAT16_QDQ_OPSET else "per-channel QDQ"


def calibrate_acts(
    model: onnx.ModelProto,
    tensors: list[str],
    feeds: list[dict[str, np.ndarray]],
    bits: int,
    method: str,
    percentile: float,
    scheme: str,
    seed: int = 0,
    values: dict[str, list[np.ndarray]] | None = None,
) -> dict[str, ActQuant]:
    missing = [t for t in tensors if values is None or t not in values]
    values = {**(values or {}), **(collect_tensors(model, missing, feeds) if missing else {})}
    result = {}
    for t in tensors:
        lo, hi = activation_range(values[t], method, percentile, seed)
        signed = scheme == "symmetric" or (scheme == "auto" and lo < 0)
        result[t] = act_quant(lo, hi, bits, signed)
    return result


def apply_plan(model: onnx.ModelProto, plan: QuantPlan) -> None:
    """Rewrite the graph: weight DQ per node, one shared Q/DQ per activation tensor (right after its
    producer, read by every reader of the tensor), annotations."""
    graph = model.graph
    names = all_names(graph)
    old_weights = {n.input[1] for n in graph.node if n.name in plan.weights}
    old_biases = {n.input[2] for n in graph.node if n.name in plan.weights and len(n.input) > 2 and n.input[2]}
    inits = initializer_map(graph)
    types = float_types(model)
    plan.float_dtypes = {name: _np_float(types.get(name)) for name in [*plan.acts, *old_weights]}
    pending: dict[str, list[onnx.NodeProto]] = {}
    act_out: dict[str, str] = {}
    for tensor, aq in plan.acts.items():
        pending[tensor], act_out[tensor] = _act_nodes(model, tensor, aq, names, plan.float_dtypes[tensor])
    own = {q.name for nodes in pending.values() for q in nodes}
    made = producers(graph)
    new_nodes = [q for t in pending if t not in made for q in pending[t]]
    for node in list(graph.node):
        wq = plan.weights.get(node.name)
        if wq is not None:
            new_nodes.extend(_rewrite_compute(model, node, wq, plan, act_out, names, inits))
        _rewire(node, act_out, own)
        new_nodes.append(node)
        for out in node.output:
            new_nodes.extend(pending.get(out, []))
    del graph.node[:]
    graph.node.extend(new_nodes)
    still_used = {i for n in graph.node for i in n.input} | graph_output_names(graph)
    remove_initializers(graph, [w for w in old_weights | old_biases if w not in still_used and w in inits])
    guard_float_readers(model, set(plan.weights))


# --- float nodes between int8 neighbours ------------------------------------------------------------------

GUARDED_OPS = ("Conv", "ConvTranspose", "Gemm")


def guard_float_readers(model: onnx.ModelProto, quantized: set[str]) -> None:
    """Keep float the Conv / ConvTranspose / Gemm nodes not in ``quantized`` that read a DequantizeLinear.

    onnxruntime's ``WeightBiasQuantization`` transformer (1.20+) quantizes, per tensor to int8 and without
    saying so, the float weight of such a node when its input comes from a DequantizeLinear with a scalar
    scale; the node then runs as a per-tensor QLinearConv / QGemm on the full int8 grid, which saturates on
    CPUs without VNNI. Such a node reads its activation through its own per-axis DequantizeLinear instead:
    the same scale and zero point repeated along the channel axis (axis 1; a one-channel input uses its
    first longer axis), so the same values, which that transformer does not match."""
    graph = model.graph
    prods, inits, names = producers(graph), initializer_map(graph), all_names(graph)
    inserted: dict[str, onnx.NodeProto] = {}
    shapes: dict[str, list] | None = None
    for node in graph.node:
        if node.op_type not in GUARDED_OPS or node.name in quantized or not node.input:
            continue
        dq = prods.get(node.input[0])
        channels = _input_channels(node, inits)
        if dq is None or dq.op_type != "DequantizeLinear" or channels is None or not _scalar_scale(dq, inits):
            continue
        axis, size = 1, channels
        if channels == 1:  # a 1-element scale counts as a scalar: repeat it along a longer axis instead
            shapes = shapes if shapes is not None else value_shapes(onnx.shape_inference.infer_shapes(model))
            longer = [(i, d) for i, d in enumerate(shapes.get(node.input[0]) or []) if i and isinstance(d, int) and d > 1]
            if not longer:
                continue
            axis, size = longer[0]
        per_axis = per_axis_dequantize(graph, dq, size, names, axis)
        inserted[node.name] = per_axis
        node.input[0] = per_axis.output[0]
    if inserted:
        ordered = [n for node in graph.node for n in ([inserted[node.name]] if node.name in inserted else []) + [node]]
        del graph.node[:]
        graph.node.extend(ordered)


def per_axis_dequantize(graph: onnx.GraphProto, dq: onnx.NodeProto, channels: int, names: set[str],
                        axis: int = 1) -> onnx.NodeProto:
    """A copy of the per-tensor DequantizeLinear ``dq`` with its scale and zero point repeated ``channels``
    times along ``axis`` (new initializers in ``graph``)."""
    inits = initializer_map(graph)
    base = dq.output[0]
    scale = numpy_helper.to_array(inits[dq.input[1]])
    scale_name = unique_name(names, f"{base}.per_axis_scale")
    set_initializer(graph, scale_name, np.full(channels, scale.reshape(-1)[0], scale.dtype))
    inputs = [dq.input[0], scale_name]
    if len(dq.input) > 2 and dq.input[2]:
        zero = numpy_helper.to_array(inits[dq.input[2]])
        zero_name = unique_name(names, f"{base}.per_axis_zero_point")
        set_initializer(graph, zero_name, np.full(channels, zero.reshape(-1)[0], zero.dtype))
        inputs.append(zero_name)
    return helper.make_node("DequantizeLinear", inputs, [unique_name(names, f"{base}.per_axis")],
                            name=unique_name(names, f"{dq.name}/per_axis"), axis=axis)


def _scalar_scale(dq: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    scale = inits.get(dq.input[1])
    return scale is not None and int(np.prod(scale.dims)) == 1 and (len(dq.input) < 3 or not dq.input[2]
                                                                    or dq.input[2] in inits)


def _input_channels(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> int | None:
    """Size of axis 1 of the node's activation input, from its float weight initializer."""
    weight = inits.get(node.input[1]) if len(node.input) > 1 else None
    if weight is None or len(weight.dims) < 2:
        return None
    dims = list(weight.dims)
    if node.op_type == "Conv":
        return dims[1] * attr(node, "group", 1)
    if node.op_type == "ConvTranspose":
        return dims[0]
    if attr(node, "transA", 0):
        return None
    return dims[1] if attr(node, "transB", 0) else dims[0]


def _rewire(node: onnx.NodeProto, act_out: dict[str, str], own: set[str]) -> None:
    """Point every activation input of ``node`` at its dequantized copy (not the Q/DQ nodes themselves)."""
    if node.name in own:
        return
    for i, name in enumerate(node.input):
        if name in act_out:
            node.input[i] = act_out[name]


def _np_float(elem: int | None) -> type:
    """numpy type of a float tensor's values: float16 stays float16, everything else computes in float32."""
    return np.float16 if elem == TensorProto.FLOAT16 else np.float32


def _act_nodes(
    model: onnx.ModelProto, tensor: str, aq: ActQuant, names: set[str], dtype: type = np.float32
) -> tuple[list[onnx.NodeProto], str]:
    graph = model.graph
    base = tensor.strip("/").replace("/", "_") or "act"
    qtype = np.int8 if aq.signed else np.uint8
    scale_name = unique_name(names, f"{base}.act_scale")
    zero_name = unique_name(names, f"{base}.act_zero_point")
    add_initializer(graph, scale_name, np.array(aq.scale, dtype))
    add_initializer(graph, zero_name, np.array(aq.zero_point, qtype))
    nodes = []
    source = tensor
    if aq.bits < 8:
        low, high = aq.code_range()
        lo_name = unique_name(names, f"{base}.act_clip_min")
        hi_name = unique_name(names, f"{base}.act_clip_max")
        add_initializer(graph, lo_name, np.array((low - aq.zero_point) * aq.scale, dtype))
        add_initializer(graph, hi_name, np.array((high - aq.zero_point) * aq.scale, dtype))
        clipped = unique_name(names, f"{base}.act_clipped")
        nodes.append(helper.make_node("Clip", [tensor, lo_name, hi_name], [clipped],
                                      name=unique_name(names, f"{base}/act_clip")))
        source = clipped
    q_out = unique_name(names, f"{base}.act_q")
    dq_out = unique_name(names, f"{base}.act_dq")
    nodes.append(helper.make_node("QuantizeLinear", [source, scale_name, zero_name], [q_out],
                                  name=unique_name(names, f"{base}/act_quantize")))
    nodes.append(helper.make_node("DequantizeLinear", [q_out, scale_name, zero_name], [dq_out],
                                  name=unique_name(names, f"{base}/act_dequantize")))
    for name in (q_out, dq_out):
        ann.set_tensor_annotation(model, name, "dtype", aq.dtype)
        ann.set_tensor_annotation(model, name, "bits", aq.bits)
    return nodes, dq_out


def _rewrite_compute(
    model: onnx.ModelProto,
    node: onnx.NodeProto,
    wq: WeightQuant,
    plan: QuantPlan,
    act_out: dict[str, str],
    names: set[str],
    inits: dict[str, onnx.TensorProto],
) -> list[onnx.NodeProto]:
    graph = model.graph
    base = node.name.strip("/").replace("/", "_") or node.op_type
    dtype = wq.dtype or f"INT{wq.bits}"
    code_name = unique_name(names, f"{base}.weight_q")
    scale_name = unique_name(names, f"{base}.weight_scale")
    zero_name = unique_name(names, f"{base}.weight_zero_point")
    dq_out = unique_name(names, f"{base}.weight_dq")
    float_type = plan.float_dtypes.get(node.input[1], np.float32)
    add_initializer(graph, code_name, wq.codes.astype(np.int8))
    add_initializer(graph, scale_name, wq.scale.astype(float_type))
    add_initializer(graph, zero_name, np.zeros(wq.scale.shape, np.int8))
    nodes = [helper.make_node("DequantizeLinear", [code_name, scale_name, zero_name], [dq_out],
                              name=unique_name(names, f"{base}/weight_dequantize"), axis=wq.axis)]
    for name in (code_name, dq_out):
        ann.set_tensor_annotation(model, name, "dtype", dtype)
        ann.set_tensor_annotation(model, name, "bits", wq.bits)
    node.input[1] = dq_out
    ann.set_node_annotation(node, "weight_bits", int(wq.bits))
    tensor = plan.node_acts.get(node.name)
    if tensor is None:
        return nodes
    aq = plan.acts[tensor]
    ann.set_node_annotation(node, "act_bits", int(aq.bits))
    if plan.quantize_bias and _has_constant_bias(node, wq, inits):
        nodes.extend(_bias_nodes(model, node, wq, aq, names, base, float_type, inits))
    return nodes


def _has_constant_bias(node: onnx.NodeProto, wq: WeightQuant, inits: dict[str, onnx.TensorProto]) -> bool:
    if node.op_type == "MatMul" or len(node.input) < 3 or not node.input[2]:
        return False
    init = inits.get(node.input[2])
    return init is not None and list(init.dims) == [wq.scale.size]


def _bias_nodes(
    model: onnx.ModelProto, node: onnx.NodeProto, wq: WeightQuant, aq: ActQuant, names: set[str], base: str,
    dtype: type, inits: dict[str, onnx.TensorProto],
) -> list[onnx.NodeProto]:
    graph = model.graph
    old = node.input[2]
    bias = numpy_helper.to_array(inits[old]).astype(np.float64)
    scale = (aq.scale * wq.scale.astype(np.float64)).astype(dtype)
    limit = np.iinfo(np.int32).max
    codes = np.clip(np.round(bias / scale.astype(np.float64)), -limit, limit).astype(np.int32)
    code_name = unique_name(names, f"{base}.bias_q")
    scale_name = unique_name(names, f"{base}.bias_scale")
    zero_name = unique_name(names, f"{base}.bias_zero_point")
    dq_out = unique_name(names, f"{base}.bias_dq")
    add_initializer(graph, code_name, codes)
    add_initializer(graph, scale_name, scale)
    add_initializer(graph, zero_name, np.zeros(scale.shape, np.int32))
    node.input[2] = dq_out  # the float bias goes in apply_plan's final sweep once nothing reads it
    for name in (code_name, dq_out):
        ann.set_tensor_annotation(model, name, "dtype", "INT32")
        ann.set_tensor_annotation(model, name, "bits", 32)
    return [helper.make_node("DequantizeLinear", [code_name, scale_name, zero_name], [dq_out],
                             name=unique_name(names, f"{base}/bias_dequantize"), axis=0)]
