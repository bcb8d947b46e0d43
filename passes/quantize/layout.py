"""The ``int8`` layout: where Q/DQ pairs go so that onnxruntime fuses them into its integer kernels
(QLinearConv, QGemm, QLinearAdd, QLinearGlobalAveragePool, QLinearConcat, …); see ``fused_layout``."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from ...compiler.graph import (
    consumers,
    graph_output_names,
    initializer_map,
    producers,
)
from .qdq import COMPUTE_OPS, ActQuant, float_types

FUSED_OPS = ("Add", "GlobalAveragePool", "AveragePool", "Concat")
SHARED_PARAM_OPS = ("MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze")
FOLDED_ACTIVATIONS = ("Relu", "Clip")


def fused_layout(model: onnx.ModelProto, node_acts: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """Tensors to quantize besides the compute nodes' inputs, so that every quantized compute node and every
    op in ``FUSED_OPS`` between them reads DequantizeLinear and writes QuantizeLinear (onnxruntime's QDQ
    selectors: QLinearConv, QGemm, QLinearMatMul, QLinearAdd, QLinearGlobalAveragePool, QLinearConcat, …).

    A node's output read only by a ``Relu`` / ``Clip`` is quantized after that activation (its range folds
    the activation: with a zero point of 0 onnxruntime drops the Relu). Outputs of ``SHARED_PARAM_OPS``
    (MaxPool, Flatten, …) whose input is quantized share the input's scale and zero point, so onnxruntime
    runs them on the integer tensor. Graph outputs stay float. Returns (tensors to calibrate, aliases:
    tensor → the tensor whose parameters it shares)."""
    graph = model.graph
    inits = initializer_map(graph)
    readers = consumers(graph)
    outputs = graph_output_names(graph)
    types = float_types(model)
    by_name = {n.name: n for n in graph.node}
    wanted: list[str] = list(dict.fromkeys(node_acts.values()))
    nodes = [by_name[n] for n in node_acts if n in by_name] + _fusable_nodes(graph, inits, types)
    for node in nodes:
        for name in _activation_inputs(node, inits):
            _add(wanted, name)
        target = _folded_output(node.output[0], readers, outputs)
        if target is not None and _is_float(types.get(target, TensorProto.FLOAT)):
            _add(wanted, target)
    aliases: dict[str, str] = {}
    for node in graph.node:
        if node.op_type not in SHARED_PARAM_OPS or not node.input or node.output[0] in outputs:
            continue
        source = aliases.get(node.input[0], node.input[0])
        if source in wanted or node.input[0] in aliases:
            aliases[node.output[0]] = source
    return [t for t in wanted if t not in aliases], aliases


def _add(items: list[str], name: str) -> None:
    if name not in items:
        items.append(name)


def _is_float(elem: int) -> bool:
    return elem in (TensorProto.FLOAT, TensorProto.FLOAT16)


def _activation_inputs(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> list[str]:
    if node.op_type in COMPUTE_OPS:
        return [node.input[0]] if node.input[0] not in inits else []
    if node.op_type == "Concat":
        return [name for name in node.input if name and name not in inits]
    return [node.input[0]] if node.op_type != "Add" else list(node.input[:2])


def _fusable_nodes(
    graph: onnx.GraphProto, inits: dict[str, onnx.TensorProto], types: dict[str, int]
) -> list[onnx.NodeProto]:
    """Nodes of ``FUSED_OPS`` whose inputs are float activations (an Add of two tensors, not a bias)."""
    prods = producers(graph)
    result = []
    for node in graph.node:
        if node.op_type not in FUSED_OPS or not node.input:
            continue
        inputs = _activation_inputs(node, inits)
        if node.op_type == "Add" and len(inputs) != 2 or any(n in inits for n in inputs):
            continue
        if any(prods.get(n) is not None and prods[n].op_type == "Constant" for n in inputs):
            continue
        if all(_is_float(types.get(n, TensorProto.FLOAT)) for n in inputs):
            result.append(node)
    return result


def _folded_output(tensor: str, readers: dict[str, list[onnx.NodeProto]], outputs: set[str]) -> str | None:
    """Where the Q of ``tensor`` goes: after its only reader if that is a Relu/Clip; None for graph outputs."""
    if tensor in outputs:
        return None
    users = readers.get(tensor, [])
    if len(users) == 1 and users[0].op_type in FOLDED_ACTIVATIONS and users[0].input[0] == tensor:
        folded = users[0].output[0]
        return None if folded in outputs else folded
    return tensor


def share_params(acts: dict[str, ActQuant], aliases: dict[str, str]) -> None:
    """Give every aliased tensor its source's activation parameters (same scale and zero point)."""
    for tensor, source in aliases.items():
        if source in acts:
            acts[tensor] = acts[source]
