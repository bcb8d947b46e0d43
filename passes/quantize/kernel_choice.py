"""Per-layer int8-or-float kernel choice for onnxruntime, by measurement (``quantize.kernels=measured``).

onnxruntime's int8 kernels are not faster everywhere: on a CPU without VNNI, a QLinearConv on a thin layer
(a few channels, small maps) can run slower than the float Conv it replaces, because requantization and
packing cost more than the narrower multiplies save. Which layers lose depends on the CPU, the thread
count and the batch, so pimc measures them on the machine that compiles, the way an autotuner would.

For every quantized compute node ``N`` of the int8 graph, two one-node *islands* are cut out of it and
timed, interleaved in one process (:func:`pimc.runtime.bench.interleaved_latency`):

    int8 island:   x_q → DequantizeLinear → N(DQ(W_q), DQ(b_q)) [→ Relu/Clip] [→ QuantizeLinear]
                   onnxruntime fuses it into QLinearConv / QGemm, exactly as in the whole graph;
    float island:  x_q → DequantizeLinear(per axis) → N(W, b)   [→ Relu/Clip] [→ QuantizeLinear]
                   the same node with its float weights: what ``N`` costs in the int8 graph if it stays
                   float, the conversions from and back to its int8 neighbours included (the per-axis
                   DequantizeLinear keeps onnxruntime from quantizing the float weight itself; see
                   :func:`.qdq.guard_float_readers`).

With t_f(B) and t_q(B) the median milliseconds at batch ``B`` over ``batches``, ``N`` stays float when
    (Π_B t_f(B) / t_q(B))^(1/|B|) < 1 − margin
(the geometric mean over the batches, so no batch size dominates). The model is then rebuilt with those
nodes in float, and the whole models (all int8, that choice, and the float model the pass was given) are
timed interleaved on the calibration inputs; the one with the lowest geometric-mean latency over
``batches`` is kept, so the pass never returns a model measured slower than its input. All timings go
into the pass's stats. Timing depends on the machine and its load, so the choice can differ from run to
run; the accuracy budget still checks whichever model results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...compiler.graph import consumers, initializer_map, producers, value_shapes
from ...compiler.sessions import make_session
from ...compiler.workload import constant_value
from ...runtime.bench import geometric_mean, interleaved_latency, timed_session
from .qdq import guard_float_readers

FOLDED = ("Relu", "Clip")
CODE_DTYPES = {onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.INT8: np.int8}


@dataclass
class Island:
    node: str
    int8: onnx.ModelProto
    float: onnx.ModelProto
    codes: np.ndarray  # (64, …) integer input codes


def choose_float_kernels(model: onnx.ModelProto, names: list[str], batches: list[int], repeats: int,
                         threads: int | None, margin: float) -> tuple[list[str], dict[str, Any]]:
    """Nodes of the int8 ``model`` whose float kernel (with its conversions) is measured faster."""
    islands, unmeasured = cut_islands(model, names)
    times = _time_pairs(islands, batches, repeats, threads)
    chosen, nodes = [], {}
    for island, (t_int8, t_float) in zip(islands, times, strict=True):
        ratio = geometric_mean([t_float[b] / t_int8[b] for b in batches])
        choice = "float" if ratio < 1.0 - margin else "int8"
        if choice == "float":
            chosen.append(island.node)
        nodes[island.node] = {"choice": choice, "float_over_int8": round(ratio, 4),
                              **{f"int8_ms_b{b}": round(t_int8[b], 5) for b in batches},
                              **{f"float_ms_b{b}": round(t_float[b], 5) for b in batches}}
    for name, reason in unmeasured.items():
        nodes[name] = {"choice": "int8", "reason": reason}
    return chosen, {"batches": batches, "repeats": repeats, "margin": margin, "nodes": nodes}


def compare_whole(models: dict[str, onnx.ModelProto], x: np.ndarray, batches: list[int], repeats: int,
                  threads: int | None) -> dict[str, Any]:
    """The whole models timed interleaved; ``kept`` names the fastest by geometric mean over ``batches``,
    and ``<name>_over_all_int8`` compares each with the ``all_int8`` one."""
    sessions = [timed_session(m, x, threads) for m in models.values()]
    times = dict(zip(models, interleaved_latency(sessions, [x] * len(sessions), batches, repeats), strict=True))
    means = {name: geometric_mean([t[b] for b in batches]) for name, t in times.items()}
    report: dict[str, Any] = {"kept": min(means, key=lambda k: means[k])}
    for name, t in times.items():
        report.update({f"{name}_ms_b{b}": round(t[b], 5) for b in batches})
        report[f"{name}_over_all_int8"] = round(means[name] / means["all_int8"], 4)
    return report


def _time_pairs(islands: list[Island], batches: list[int], repeats: int,
                threads: int | None) -> list[tuple[dict[int, float], dict[int, float]]]:
    sessions, inputs = [], []
    for island in islands:
        for variant in (island.int8, island.float):
            sessions.append(make_session(variant, threads, spinning=False))
            inputs.append(island.codes)
    latencies = interleaved_latency(sessions, inputs, batches, repeats)
    return [(latencies[2 * i], latencies[2 * i + 1]) for i in range(len(islands))]


def cut_islands(model: onnx.ModelProto, names: list[str]) -> tuple[list[Island], dict[str, str]]:
    """One :class:`Island` per node that reads a DequantizeLinear activation and weight; the others with
    the reason they cannot be measured (they keep their int8 kernel)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = value_shapes(inferred)
    types = {v.name: v.type.tensor_type.elem_type for g in [inferred.graph]
             for v in [*g.input, *g.value_info, *g.output]}
    graph = model.graph
    prods, readers, inits = producers(graph), consumers(graph), initializer_map(graph)
    by_name = {n.name: n for n in graph.node}
    islands, unmeasured = [], {}
    for name in names:
        node = by_name.get(name)
        reason = _unfit(node, prods, shapes)
        if reason:
            unmeasured[name] = reason
            continue
        islands.append(_island(model, node, prods, readers, inits, shapes, types))
    return islands, unmeasured


def _unfit(node: onnx.NodeProto | None, prods: dict[str, onnx.NodeProto], shapes: dict) -> str | None:
    if node is None:
        return "not in the quantized graph"
    source = prods.get(node.input[0])
    if source is None or source.op_type != "DequantizeLinear":
        return "its activation is not quantized"
    weight = prods.get(node.input[1])
    if weight is None or weight.op_type != "DequantizeLinear":
        return "its weight is not quantized"
    shape = shapes.get(source.input[0])
    if not shape or any(not isinstance(d, int) for d in shape[1:]):
        return "its input shape is unknown"
    return None


def _island(model: onnx.ModelProto, node: onnx.NodeProto, prods, readers, inits, shapes, types) -> Island:
    """The int8 and float islands of ``node`` (see the module docstring)."""
    source = prods[node.input[0]]
    codes_name = source.input[0]
    constants = [prods[n] for n in node.input[1:] if n and n in prods]
    tail, out = _tail(node, readers, {o.name for o in model.graph.output})
    used = {i for n in [source, *constants, *tail] for i in n.input} | set(node.input)
    init_list = [inits[i] for i in used if i in inits]
    code_type = _elem_type(model, codes_name, prods, inits)
    dims = shapes[codes_name][1:]
    graph_in = helper.make_tensor_value_info(codes_name, code_type, ["batch", *dims])
    graph_out = helper.make_tensor_value_info(out, types.get(out, onnx.TensorProto.FLOAT), None)
    opset = list(model.opset_import)

    def build(nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto]) -> onnx.ModelProto:
        graph = helper.make_graph(nodes, f"island_{node.name}", [graph_in], [graph_out], initializers)
        return helper.make_model(graph, opset_imports=opset, ir_version=model.ir_version)

    int8 = build([source, *constants, node, *tail], init_list)
    float_node, float_inits = _float_node(model, node, prods, inits)
    float_used = {i for n in [source, *tail] for i in n.input} | set(float_node.input)
    floats = [inits[i] for i in float_used if i in inits] + float_inits
    float_model = build([source, float_node, *tail], floats)
    guard_float_readers(float_model, set())  # as apply_plan does for a node left in float
    _drop_unread(float_model.graph)
    rng = np.random.default_rng(0)
    dtype = CODE_DTYPES[code_type]
    info = np.iinfo(dtype)
    codes = rng.integers(info.min, info.max + 1, size=(64, *dims), dtype=np.int64).astype(dtype)
    return Island(node.name, int8, float_model, codes)


def _drop_unread(graph: onnx.GraphProto) -> None:
    """Remove nodes none of whose outputs is read (the per-tensor DequantizeLinear the guard replaced)."""
    read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [n for n in graph.node if any(o in read for o in n.output)]
    del graph.node[:]
    graph.node.extend(kept)


def _tail(node: onnx.NodeProto, readers, outputs: set[str]) -> tuple[list[onnx.NodeProto], str]:
    """The folded Relu/Clip and the QuantizeLinear that follow ``node``, when they are its only readers."""
    tail, out = [], node.output[0]
    users = readers.get(out, [])
    if out not in outputs and len(users) == 1 and users[0].op_type in FOLDED:
        tail.append(users[0])
        out = users[0].output[0]
        users = readers.get(out, [])
    if out not in outputs and len(users) == 1 and users[0].op_type == "QuantizeLinear":
        tail.append(users[0])
        out = users[0].output[0]
    return tail, out


def _float_node(model: onnx.ModelProto, node: onnx.NodeProto, prods,
                inits) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    """``node`` reading float copies of its dequantized weight and bias."""
    inputs, tensors = [node.input[0]], []
    for name in node.input[1:]:
        if not name or name not in prods:
            inputs.append(name)
            continue
        scale_type = numpy_helper.to_array(inits[prods[name].input[1]]).dtype
        value = constant_value(model, name, inits, prods).astype(scale_type)
        tensors.append(numpy_helper.from_array(value, f"{name}__float"))
        inputs.append(f"{name}__float")
    float_node = onnx.NodeProto()
    float_node.CopyFrom(node)
    del float_node.input[:]
    float_node.input.extend(inputs)
    return float_node, tensors


def _elem_type(model: onnx.ModelProto, name: str, prods, inits) -> int:
    """Element type of an integer activation tensor: its QuantizeLinear's zero point, else uint8."""
    q = prods.get(name)
    if q is not None and len(q.input) > 2 and q.input[2] in inits:
        return inits[q.input[2]].data_type
    return onnx.TensorProto.UINT8
