"""Constant folding: Constant nodes become initializers, and nodes whose inputs are all constant are
evaluated once (with onnx's reference evaluator) and replaced by initializers.

Quantize/Dequantize nodes are never folded: they carry the quantization onnxruntime must execute.
Random ops, nodes with subgraphs and nodes outside the default domain are left alone.

Size limit: a node whose inputs or outputs exceed ``_MAX_FOLDED_ELEMENTS`` (64 Mi elements, at most
512 MiB) stays unfolded. The output size is predicted with onnx's shape inference on the node and its
constant inputs *before* evaluating it, so a 730-byte ``ConstantOfShape([30000, 30000])`` is never
materialised; a generator op whose output size cannot be predicted is not folded either.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph import attr, opset_version

_NEVER_FOLD = {
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
    "If", "Loop", "Scan", "SequenceConstruct", "SequenceEmpty", "Optional",
}
_MAX_FOLDED_ELEMENTS = 64 * 2**20
_GENERATORS = {"ConstantOfShape", "Expand", "Tile", "Range", "Resize", "Upsample", "Pad", "OneHot", "EyeLike"}
_SHAPE_INPUT_MAX = 1024  # constant inputs up to this size feed inference's data propagation


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


def _evaluate(node: onnx.NodeProto, values: list[np.ndarray | None], opset: int) -> list[np.ndarray] | None:
    """Run one node on onnx's reference evaluator; ``None`` values are omitted optional inputs."""
    from onnx.reference import ReferenceEvaluator

    present = [k for k, v in enumerate(values) if v is not None]
    inputs = [helper.make_tensor_value_info(f"i{k}", onnx.TensorProto.UNDEFINED, None) for k in present]
    outputs = [helper.make_tensor_value_info(f"o{k}", onnx.TensorProto.UNDEFINED, None) for k in range(len(node.output))]
    clone = onnx.NodeProto()
    clone.CopyFrom(node)
    for k in range(len(node.input)):
        clone.input[k] = f"i{k}" if values[k] is not None else ""
    for k, name in enumerate(node.output):
        clone.output[k] = f"o{k}" if name else ""
    graph = helper.make_graph([clone], "fold", inputs, [o for k, o in enumerate(outputs) if node.output[k]])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    try:
        feeds = {f"i{k}": values[k] for k in present}
        results = iter(np.asarray(o) for o in ReferenceEvaluator(model).run(None, feeds))
        return [next(results) if name else None for name in node.output]
    except Exception:
        return None


def fold_constants(model: onnx.ModelProto) -> int:
    """Fold in place; returns how many nodes were removed.

    Besides nodes whose inputs are all constant, two cases need only types and shapes: ``Shape`` of a
    tensor whose shape is fully static, and ``CastLike`` whose second input only lends its element type.
    """
    graph = model.graph
    opset = opset_version(model)
    inits = {init.name: init for init in graph.initializer}
    graph_inputs = {i.name for i in graph.input}  # an input with an initializer is only its default
    outputs = {o.name for o in graph.output}
    types = _known_types(graph)
    known: dict[str, np.ndarray] = {}
    new_inits: list[onnx.TensorProto] = []
    keep: list[onnx.NodeProto] = []
    folded = 0

    def value(name: str) -> np.ndarray | None:
        if name in known:
            return known[name]
        if name in inits and name not in graph_inputs:
            arr = numpy_helper.to_array(inits[name])
            known[name] = arr
            return arr
        return None

    for node in graph.node:
        result = _fold_one(node, value, types, opset)
        if result is None or any(o in outputs for o in node.output if o):
            keep.append(node)
            continue
        for name, arr in zip(node.output, result, strict=True):
            if name:
                known[name] = arr
                new_inits.append(numpy_helper.from_array(np.asarray(arr, order="C"), name))
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
        graph.initializer.extend(new_inits)
    return folded


def _known_types(graph: onnx.GraphProto) -> dict[str, tuple[int, list[int] | None]]:
    """Element type and static shape (None when any dimension is symbolic) of every typed value."""
    types: dict[str, tuple[int, list[int] | None]] = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or t.elem_type == onnx.TensorProto.UNDEFINED:
            continue
        shape = None
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shape = [d.dim_value for d in t.shape.dim]
        types[vi.name] = (t.elem_type, shape)
    for init in graph.initializer:
        types[init.name] = (init.data_type, list(init.dims))
    return types


def _fold_one(node: onnx.NodeProto, value, types, opset: int) -> list[np.ndarray] | None:
    if node.domain not in ("", "ai.onnx") or node.op_type in _NEVER_FOLD:
        return None
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return None
    if node.op_type == "Constant":
        v = constant_node_value(node)
        return None if v is None else [v]
    if not node.input:
        return None
    if node.op_type in ("Shape", "CastLike"):
        typed = _fold_by_type(node, value, types)
        if typed is not None:
            return typed
    values: list[np.ndarray | None] = []
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
    if not present or sum(v.size for v in present) > _MAX_FOLDED_ELEMENTS:
        return None
    if not _output_fits(node, values, opset):
        return None
    result = _evaluate(node, values, opset)
    if result is None or sum(r.size for r in result if r is not None) > _MAX_FOLDED_ELEMENTS:
        return None
    return result


def _output_fits(node: onnx.NodeProto, values: list[np.ndarray | None], opset: int) -> bool:
    """Whether the node's outputs, predicted before evaluation, stay within the folding limit."""
    predicted = _predicted_elements(node, values, opset)
    if predicted is None:
        return node.op_type not in _GENERATORS
    return predicted <= _MAX_FOLDED_ELEMENTS


def _predicted_elements(node: onnx.NodeProto, values: list[np.ndarray | None], opset: int) -> int | None:
    """Total elements of the node's outputs: element-wise-or-smaller ops bounded by their inputs, the
    common generators from their shape inputs, anything else from onnx shape inference."""
    if node.op_type in _NOT_GROWING:
        return sum(v.size for v in values if v is not None)
    direct = _generator_elements(node, values)
    if direct is not None:
        return direct
    return _inferred_elements(node, values, opset)


_NOT_GROWING = {
    "Identity", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Concat", "Split",
    "Neg", "Abs", "Sqrt", "Reciprocal", "Relu", "Exp", "Log", "Floor", "Ceil", "Sign", "Not", "Shape", "Size",
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
}


def _generator_elements(node: onnx.NodeProto, values: list[np.ndarray | None]) -> int | None:
    """Output elements of ConstantOfShape / Expand / Tile from their inputs' values, else None."""
    try:
        if node.op_type == "ConstantOfShape":
            return int(np.prod(values[0].astype(np.int64), dtype=object))
        if node.op_type == "Expand":
            shape = np.broadcast_shapes(values[0].shape, tuple(int(d) for d in values[1]))
            return int(np.prod(shape, dtype=object))
        if node.op_type == "Tile":
            return values[0].size * int(np.prod(values[1].astype(np.int64), dtype=object))
    except (ValueError, TypeError, IndexError, AttributeError):
        return None
    return None


def _inferred_elements(node: onnx.NodeProto, values: list[np.ndarray | None], opset: int) -> int | None:
    """Total elements of the node's outputs from onnx shape inference (small constant inputs are given
    as values, larger ones as typed shapes); None when some output shape stays unknown."""
    inputs, inits = [], []
    clone = onnx.NodeProto()
    clone.CopyFrom(node)
    for k, v in enumerate(values):
        clone.input[k] = f"i{k}" if v is not None else ""
        if v is None:
            continue
        if v.size <= _SHAPE_INPUT_MAX:
            inits.append(numpy_helper.from_array(np.asarray(v), f"i{k}"))
        else:
            elem = helper.np_dtype_to_tensor_dtype(v.dtype)
            inputs.append(helper.make_tensor_value_info(f"i{k}", elem, list(v.shape)))
    outputs = [helper.make_empty_tensor_value_info(f"o{k}") for k, name in enumerate(node.output) if name]
    for k, name in enumerate(node.output):
        clone.output[k] = f"o{k}" if name else ""
    graph = helper.make_graph([clone], "size", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        return None
    known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    total = 0
    for out in outputs:
        vi = known.get(out.name)
        if vi is None or not vi.type.tensor_type.HasField("shape"):
            return None
        dims = vi.type.tensor_type.shape.dim
        if not all(d.HasField("dim_value") for d in dims):
            return None
        total += int(np.prod([d.dim_value for d in dims], dtype=np.int64)) if dims else 1
    return total


def _fold_by_type(node: onnx.NodeProto, value, types) -> list[np.ndarray] | None:
    if node.op_type == "Shape":
        known = types.get(node.input[0])
        if known is None or known[1] is None:
            return None
        dims = np.array(known[1], dtype=np.int64)
        start, end = attr(node, "start", 0), attr(node, "end", None)
        return [dims[start:end]]
    source = value(node.input[0])
    like = types.get(node.input[1])
    if source is None or like is None:
        return None
    try:
        return [source.astype(helper.tensor_dtype_to_np_dtype(like[0]))]
    except (KeyError, TypeError, ValueError):
        return None
