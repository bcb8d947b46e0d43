"""Constant folding: Constant nodes become initializers, and nodes whose inputs are all constant are
evaluated once (with onnx's reference evaluator) and replaced by initializers.

Quantize/Dequantize nodes are never folded: they carry the quantization onnxruntime must execute.
Random ops, nodes with subgraphs and nodes outside the default domain are left alone.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph import opset_version

_NEVER_FOLD = {
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
    "If", "Loop", "Scan", "SequenceConstruct", "SequenceEmpty", "Optional",
}
_MAX_FOLDED_ELEMENTS = 64 * 2**20


def constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a ``Constant`` node (any of its attribute forms)."""
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
    return None


def _evaluate(node: onnx.NodeProto, values: list[np.ndarray], opset: int) -> list[np.ndarray] | None:
    from onnx.reference import ReferenceEvaluator

    inputs = [helper.make_tensor_value_info(f"i{k}", onnx.TensorProto.UNDEFINED, None) for k in range(len(values))]
    outputs = [helper.make_tensor_value_info(f"o{k}", onnx.TensorProto.UNDEFINED, None) for k in range(len(node.output))]
    clone = onnx.NodeProto()
    clone.CopyFrom(node)
    for k, name in enumerate(node.input):
        clone.input[k] = f"i{k}" if name else ""
    for k in range(len(node.output)):
        clone.output[k] = f"o{k}"
    graph = helper.make_graph([clone], "fold", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    try:
        feeds = {f"i{k}": v for k, v in enumerate(values)}
        return [np.asarray(o) for o in ReferenceEvaluator(model).run(None, feeds)]
    except Exception:
        return None


def fold_constants(model: onnx.ModelProto) -> int:
    """Fold in place; returns how many nodes were removed."""
    graph = model.graph
    opset = opset_version(model)
    known: dict[str, np.ndarray] = {}
    init_names = {init.name for init in graph.initializer}
    graph_inputs = {i.name for i in graph.input} - init_names
    outputs = {o.name for o in graph.output}
    new_inits: list[onnx.TensorProto] = []
    keep: list[onnx.NodeProto] = []
    folded = 0

    def value(name: str) -> np.ndarray | None:
        if name in known:
            return known[name]
        if name in init_names and name not in graph_inputs:
            arr = numpy_helper.to_array(next(i for i in graph.initializer if i.name == name))
            known[name] = arr
            return arr
        return None

    for node in graph.node:
        result = _fold_one(node, value, opset)
        if result is None or any(o in outputs for o in node.output):
            keep.append(node)
            continue
        for name, arr in zip(node.output, result, strict=True):
            known[name] = arr
            new_inits.append(numpy_helper.from_array(arr, name))
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
        graph.initializer.extend(new_inits)
    return folded


def _fold_one(node: onnx.NodeProto, value, opset: int) -> list[np.ndarray] | None:
    if node.domain not in ("", "ai.onnx") or node.op_type in _NEVER_FOLD:
        return None
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return None
    if node.op_type == "Constant":
        v = constant_node_value(node)
        return None if v is None else [v]
    if not node.input:
        return None
    values = []
    for name in node.input:
        if not name:
            values.append(None)
            continue
        v = value(name)
        if v is None:
            return None
        values.append(v)
    if node.op_type == "Identity":
        return [values[0]]
    present = [v for v in values if v is not None]
    if sum(v.size for v in present) > _MAX_FOLDED_ELEMENTS:
        return None
    if None in values:
        return None
    result = _evaluate(node, values, opset)
    if result is None or sum(r.size for r in result) > _MAX_FOLDED_ELEMENTS:
        return None
    return result
