"""Test-local stand-ins for the escalate target tests: tiny ONNX builders and an SVD decomposition.

The decomposition here follows the annotation contract of the ``decompose`` pass (basis node
``role="basis"``, coefficient node ``role="coefficient"``, ``rank``, ``layer``, ``kernel``) so the
target can be tested on its own; the real pass is exercised by the pipeline tests when registered.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from pimc.compiler import annotations as ann
from pimc.compiler.graph import attr
from pimc.compiler.loader import infer_shapes


def conv_model(
    weight: np.ndarray, h: int = 8, w: int = 8, stride: int = 1, pad: int = 1, group: int = 1, batch: int = 1
) -> onnx.ModelProto:
    cout, cg, kh, kw = weight.shape
    cin = cg * group
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [batch, cin, h, w])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv", strides=[stride, stride],
                            pads=[pad] * 4, group=group, kernel_shape=[kh, kw])
    graph = helper.make_graph([node], "g", [x], [y], [numpy_helper.from_array(weight.astype(np.float32), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return infer_shapes(model)


def decompose_model(model: onnx.ModelProto, rank: int, threshold: float = 0.0) -> onnx.ModelProto:
    """Replace every k×k (k > 1, group 1) Conv by an annotated basis / coefficient pair (uncentred SVD)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        weight = numpy_helper.to_array(inits[node.input[1]]) if node.op_type == "Conv" else None
        if weight is None or attr(node, "group", 1) != 1 or weight.shape[2] * weight.shape[3] == 1:
            nodes.append(node)
            continue
        nodes.extend(_pair(graph, node, weight, rank, threshold))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return infer_shapes(model)


def _pair(graph, node, weight, rank, threshold):
    cout, cin, kh, kw = weight.shape
    flat = weight.reshape(cout * cin, kh * kw).astype(np.float64)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    basis = vt[:rank]
    coef = flat @ basis.T
    if threshold > 0:
        coef[np.abs(coef) < threshold * coef.std()] = 0.0
    wb = np.tile(basis.reshape(1, rank, kh, kw), (cin, 1, 1, 1)).reshape(cin * rank, 1, kh, kw)
    wc = coef.reshape(cout, cin * rank, 1, 1)
    graph.initializer.append(numpy_helper.from_array(wb.astype(np.float32), node.name + "_basis_w"))
    graph.initializer.append(numpy_helper.from_array(wc.astype(np.float32), node.name + "_coef_w"))
    mid = node.output[0] + "_basis"
    b = helper.make_node("Conv", [node.input[0], node.name + "_basis_w"], [mid], name=node.name + "_basis",
                         group=cin, kernel_shape=[kh, kw], strides=attr(node, "strides", [1, 1]),
                         pads=attr(node, "pads", [0, 0, 0, 0]), dilations=attr(node, "dilations", [1, 1]))
    c_inputs = [mid, node.name + "_coef_w"] + list(node.input[2:3])
    c = helper.make_node("Conv", c_inputs, list(node.output), name=node.name + "_coef", kernel_shape=[1, 1])
    for n, role in ((b, "basis"), (c, "coefficient")):
        ann.set_node_annotation(n, "role", role)
        ann.set_node_annotation(n, "rank", rank)
        ann.set_node_annotation(n, "layer", node.name)
        ann.set_node_annotation(n, "kernel", [kh, kw])
    for prop in node.metadata_props:
        if prop.key in ("pimc.fused_activation",):
            c.metadata_props.add(key=prop.key, value=prop.value)
    return [b, c]


def pair_model(basis: np.ndarray, coef: np.ndarray, h: int = 8, w: int = 8, pad: int = 1,
               notes: dict | None = None) -> onnx.ModelProto:
    """One annotated basis/coefficient pair: basis [m, kh, kw] shared by all channels, coef [Cout, Cin, m]."""
    m, kh, kw = basis.shape
    cout, cin, _ = coef.shape
    wb = np.tile(basis[None], (cin, 1, 1, 1)).reshape(cin * m, 1, kh, kw).astype(np.float32)
    wc = coef.reshape(cout, cin * m, 1, 1).astype(np.float32)
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, cin, h, w])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    b = helper.make_node("Conv", ["x", "Wb"], ["mid"], name="conv_basis", group=cin, kernel_shape=[kh, kw],
                         pads=[pad] * 4)
    c = helper.make_node("Conv", ["mid", "Wc"], ["y"], name="conv_coef", kernel_shape=[1, 1])
    for n, role in ((b, "basis"), (c, "coefficient")):
        ann.set_node_annotation(n, "role", role)
        ann.set_node_annotation(n, "rank", m)
        ann.set_node_annotation(n, "layer", "conv")
        ann.set_node_annotation(n, "kernel", [kh, kw])
    for (node_name, key), value in (notes or {}).items():
        ann.set_node_annotation(b if node_name == "basis" else c, key, value)
    inits = [numpy_helper.from_array(wb, "Wb"), numpy_helper.from_array(wc, "Wc")]
    graph = helper.make_graph([b, c], "g", [x], [y], inits)
    return infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def rows_with_nnz(cout: int, cin: int, m: int, per_row: int, seed: int = 0) -> np.ndarray:
    """Coefficients [Cout, Cin, m] whose every output row has exactly ``per_row`` non-zeros."""
    rng = np.random.default_rng(seed)
    coef = np.zeros((cout, cin * m), dtype=np.float32)
    for o in range(cout):
        coef[o, rng.choice(cin * m, per_row, replace=False)] = rng.uniform(0.5, 1.5, per_row)
    return coef.reshape(cout, cin, m)
