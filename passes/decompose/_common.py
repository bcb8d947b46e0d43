"""Shared helpers of the decompose / shrink / recompose passes (no torch here).

A *decomposed pair* is a depthwise basis Conv (``group = Cin``, ``Cin·d`` outputs, output channel
``c·d + j`` = input channel ``c`` convolved with basis kernel ``j``) whose output feeds only a 1×1
coefficient Conv (``Cout × Cin·d``), as written by the ``decompose`` pass and the PENNI exporter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ...compiler.annotations import get_node_annotation, set_node_annotation
from ...compiler.graph import attr, consumers, get_initializer, graph_output_names, producers

BASIS = "basis"
COEFFICIENT = "coefficient"


@dataclass
class Pair:
    basis: onnx.NodeProto
    coefficient: onnx.NodeProto
    cin: int
    rank: int
    kernel: tuple[int, int]


def conv_weight(graph: onnx.GraphProto, node: onnx.NodeProto) -> np.ndarray | None:
    if node.op_type != "Conv" or len(node.input) < 2:
        return None
    return get_initializer(graph, node.input[1])


def conv_bias(graph: onnx.GraphProto, node: onnx.NodeProto) -> np.ndarray | None:
    if len(node.input) > 2 and node.input[2]:
        return get_initializer(graph, node.input[2])
    return None


def has_padding(node: onnx.NodeProto) -> bool:
    auto_pad = attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad not in ("NOTSET", "VALID"):
        return True
    return any(int(p) != 0 for p in attr(node, "pads", []) or [])


def basis_matrix(weight: np.ndarray, cin: int, rank: int) -> np.ndarray | None:
    """The shared (d, kh·kw) basis if every input channel uses the same d kernels, else None."""
    kh, kw = weight.shape[2:]
    per_channel = weight.reshape(cin, rank, kh * kw)
    first = per_channel[0]
    if not np.array_equal(per_channel, np.broadcast_to(first, per_channel.shape)):
        return None
    return first


def find_pairs(model: onnx.ModelProto, require_annotation: bool = False) -> list[Pair]:
    """Every structurally valid basis/coefficient pair, in graph order.

    Without ``require_annotation`` an unannotated depthwise conv is accepted as a basis only if all its
    input channels share the same kernels (so a MobileNet depthwise layer is never mistaken for one).
    """
    graph = model.graph
    readers = consumers(graph)
    outputs = graph_output_names(graph)
    pairs = []
    for node in graph.node:
        pair = _pair_at(graph, node, readers, outputs, require_annotation)
        if pair is not None:
            pairs.append(pair)
    return pairs


def _pair_at(graph, node, readers, outputs, require_annotation) -> Pair | None:
    role = get_node_annotation(node, "role")
    if node.op_type != "Conv" or (role is not None and role != BASIS) or (require_annotation and role != BASIS):
        return None
    weight = conv_weight(graph, node)
    group = int(attr(node, "group", 1))
    if weight is None or weight.ndim != 4 or weight.shape[1] != 1 or group < 1 or weight.shape[0] % group:
        return None
    cin, rank = group, weight.shape[0] // group
    users = readers.get(node.output[0], [])
    if node.output[0] in outputs or len(users) != 1 or conv_bias(graph, node) is not None and role != BASIS:
        return None
    coef = users[0]
    cw = conv_weight(graph, coef)
    if cw is None or cw.ndim != 4 or cw.shape[2:] != (1, 1) or int(attr(coef, "group", 1)) != 1:
        return None
    if cw.shape[1] != cin * rank or coef.input[0] != node.output[0] or has_padding(coef):
        return None
    if any(int(s) != 1 for s in attr(coef, "strides", [1, 1]) or [1, 1]):
        return None
    if role != BASIS and (cin < 2 and rank < 2 or basis_matrix(weight, cin, rank) is None):
        return None
    if get_node_annotation(coef, "role") not in (None, COEFFICIENT):
        return None
    return Pair(node, coef, cin, rank, (int(weight.shape[2]), int(weight.shape[3])))


def annotate_pair(pair: Pair, layer: str) -> None:
    for node, role in ((pair.basis, BASIS), (pair.coefficient, COEFFICIENT)):
        set_node_annotation(node, "role", role)
        set_node_annotation(node, "rank", int(pair.rank))
        set_node_annotation(node, "layer", layer)
        set_node_annotation(node, "kernel", [int(k) for k in pair.kernel])


def pair_layer_name(pair: Pair) -> str:
    return str(get_node_annotation(pair.basis, "layer") or get_node_annotation(pair.coefficient, "layer")
               or pair.basis.name)


def dense_weight(basis_w: np.ndarray, coef_w: np.ndarray, cin: int) -> np.ndarray:
    """The dense kernel W[o, c] = Σ_j C[o, c·d + j] · B_c,j of a pair (per-channel bases allowed)."""
    kh, kw = basis_w.shape[2:]
    rank = basis_w.shape[0] // cin
    cout = coef_w.shape[0]
    b = basis_w.reshape(cin, rank, kh, kw).astype(np.float64)
    c = coef_w.reshape(cout, cin, rank).astype(np.float64)
    return np.einsum("ocj,cjhw->ochw", c, b).astype(coef_w.dtype)


def producer_of(graph: onnx.GraphProto, name: str) -> onnx.NodeProto | None:
    return producers(graph).get(name)


def stored_conv_params(model: onnx.ModelProto) -> int:
    """Conv weights a compressed model stores: d·kh·kw per basis node (shared), non-zeros elsewhere.

    A basis node's weight repeats the layer's d kernels for every input channel, but they are one shared
    basis; every other Conv (coefficient, recomposed or plain) counts its non-zero weights.
    """
    total = 0
    for node in model.graph.node:
        weight = conv_weight(model.graph, node)
        if weight is None:
            continue
        if get_node_annotation(node, "role") == BASIS:
            total += int(get_node_annotation(node, "rank") or weight.shape[0] // int(attr(node, "group", 1))) \
                * int(weight.shape[2] * weight.shape[3])
        else:
            total += int(np.count_nonzero(weight))
    return total
