"""shrink's rewrite: cut the removable channels from producers, readers, constants and maps (the math:
``shrink.py``)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ...compiler.annotations import get_node_annotation, get_node_map, set_node_annotation, set_node_map
from ...compiler.graph import (
    all_names,
    attr,
    get_initializer,
    set_initializer,
    unique_name,
    value_shapes,
)
from ..decompose._common import BASIS, COEFFICIENT
from .analysis import Analysis, ChannelLayer, input_constant


def apply_removal(model, a: Analysis, removable: dict[str, set[int]], removed) -> None:
    graph = model.graph
    names = all_names(graph)
    shapes = value_shapes(model)
    for layer in a.layers:
        rin = removable.get(a.space.get(layer.src), set())
        rout = removable.get(a.space.get(layer.dst), set())
        if rin or rout:
            _edit_layer(graph, names, layer, a, rin, rout, removed)
            _slice_maps(model, layer, rin, rout, removed)
    _reshape_targets(graph, names, a, removable)
    for node, index, _kind in a.params:
        sid = a.space.get(node.output[0])
        rem = removable.get(sid, set())
        if rem:
            value = get_initializer(graph, node.input[index])
            keep = [c for c in range(a.width[sid]) if c not in rem]
            out_rank = len(shapes.get(node.output[0]) or [])
            axis = 0 if node.op_type == "BatchNormalization" else value.ndim - (out_rank - 1)
            new = unique_name(names, f"{node.input[index]}.shrunk")
            set_initializer(graph, new, np.take(value, keep, axis=axis))
            node.input[index] = new


def _reshape_targets(graph, names, a: Analysis, removable: dict[str, set[int]]) -> None:
    """A Reshape with an explicit C·H·W follows the channels its input lost."""
    for flat in a.flats.values():
        rem = removable.get(a.space.get(flat.src), set())
        if flat.node.op_type != "Reshape" or not rem:
            continue
        target = get_initializer(graph, flat.node.input[1])
        if int(target[1]) == -1:
            continue
        kept = a.width[a.space[flat.src]] - len(rem)
        new = unique_name(names, f"{flat.node.input[1]}.shrunk")
        set_initializer(graph, new, np.array([int(target[0]), kept * flat.block], dtype=target.dtype))
        flat.node.input[1] = new


def _edit_layer(graph, names, layer: ChannelLayer, a: Analysis, rin: set[int], rout: set[int], removed) -> None:
    node = layer.node
    w = layer.weight.astype(np.float64)
    out = w.shape[0]
    bias = None if layer.bias is None else np.broadcast_to(layer.bias.astype(np.float64).reshape(-1), (out,)).copy()
    stat = removed[node.name]
    keep_out = [o for o in range(out) if o not in rout]
    drop_in: list[int] = []
    if layer.kind == "depthwise":
        groups = a.width[a.space[layer.src]]
        m = out // groups
        new_groups = groups - len(rin)
        stat["groups"] += len(rin)
        stat["out_channels"] += len(rout)
        new_m = len(keep_out) // max(new_groups, 1)
        _set_group(node, new_groups)
        if new_m != m:
            for n in [node] + [x for x in graph.node if get_node_annotation(x, "role") == COEFFICIENT
                               and x.input[0] == node.output[0]]:
                if get_node_annotation(n, "role") in (BASIS, COEFFICIENT):
                    set_node_annotation(n, "rank", int(new_m))
            stat["basis_kernels"] += m - new_m
    else:
        if rin:
            v = input_constant(graph, a, layer)
            v = np.zeros(w.shape[1]) if v is None else np.nan_to_num(v)
            drop_in = sorted(rin)
            shift = w.reshape(out, w.shape[1], -1).sum(axis=2)[:, drop_in] @ v[drop_in]
            if np.any(shift != 0):
                if layer.bias_dq is not None:
                    raise AssertionError("a constant channel reached a quantized bias")
                bias = (np.zeros(out) if bias is None else bias) + shift
            stat["in_channels"] += len(rin)
        stat["out_channels"] += len(rout)
    w = np.delete(w, drop_in, axis=1)[keep_out]
    bias = None if bias is None else bias[keep_out]
    _write_layer(graph, names, layer, w, bias, drop_in, keep_out)
    if get_node_annotation(node, "sparsity") is not None:
        set_node_annotation(node, "sparsity", round(1 - np.count_nonzero(w) / w.size, 6))


def _slice_maps(model: onnx.ModelProto, layer: ChannelLayer, rin: set[int], rout: set[int], removed) -> None:
    """Cut the node's per-element maps like its weight: rows of removed filters, columns of removed inputs.

    The ``pattern`` map is [Cout, Cin/groups] by contract, so both axes follow the weight. Another map
    (e.g. the block-wise ``bits`` map) is cut along rows only when it has one row per filter and no input
    channel went; otherwise it is left as it was and the node is listed under ``maps_not_resized``.
    """
    node = layer.node
    out, cin = layer.weight.shape[:2]
    keep_out = [o for o in range(out) if o not in rout]
    keep_in = [c for c in range(cin) if c not in rin] if layer.kind == "conv" else list(range(cin))
    for kind in sorted(get_node_annotation(node, "maps", {}) or {}):
        array = get_node_map(model, node, kind)
        if array is None or array.ndim < 1:
            continue
        if kind == "pattern" and array.shape[:2] == (out, cin):
            set_node_map(model, node, kind, array[keep_out][:, keep_in])
        elif array.shape[0] == out and (layer.kind != "conv" or not rin):
            set_node_map(model, node, kind, array[keep_out])
        else:
            removed[node.name]["maps_not_resized"] += 1


def _set_group(node: onnx.NodeProto, group: int) -> None:
    for i, at in enumerate(node.attribute):
        if at.name == "group":
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute("group", int(group)))


def _write_layer(graph, names, layer: ChannelLayer, w: np.ndarray, bias: np.ndarray | None, drop_in: list[int],
                 keep_out: list[int]) -> None:
    node = layer.node
    if layer.weight_dq is None:
        wname = unique_name(names, f"{node.input[1]}.shrunk")
        set_initializer(graph, wname, _stored_layout(layer, w).astype(layer.weight.dtype))
        node.input[1] = wname
        dtype = layer.weight.dtype if layer.bias is None else layer.bias.dtype
    else:
        q = get_initializer(graph, layer.weight_dq.input[0])
        view = _stored_layout(layer, q, inverse=True)
        _cut_dequantized(graph, names, layer.weight_dq, _stored_layout(layer, np.delete(view, drop_in, axis=1)[keep_out]),
                         keep_out)
        dtype = get_initializer(graph, layer.weight_dq.input[1]).dtype
    if bias is None:
        return
    if layer.bias_dq is not None:
        q = get_initializer(graph, layer.bias_dq.input[0])
        _cut_dequantized(graph, names, layer.bias_dq, q if q.size == 1 else q.reshape(-1)[keep_out], keep_out)
        return
    if layer.kind == "matmul":
        raise AssertionError("MatMul cannot take a bias")
    bname = unique_name(names, f"{node.name}.bias_shrunk")
    original = layer.bias
    if layer.kind == "gemm" and original is not None and original.ndim == 2:
        bias = bias.reshape(1, -1)
    set_initializer(graph, bname, bias.astype(dtype))
    if len(node.input) > 2:
        node.input[2] = bname
    else:
        node.input.append(bname)


def _stored_layout(layer: ChannelLayer, array: np.ndarray, inverse: bool = False) -> np.ndarray:
    """The analysis view [out, in(, …)] of a weight as the node stores it, or (``inverse``) the stored weight
    as the analysis view."""
    transposed = layer.kind == "matmul" or (layer.kind == "gemm" and not attr(layer.node, "transB", 0))
    if inverse:
        return (array.T if transposed else array).reshape(layer.weight.shape[0], *layer.weight.shape[1:])
    if layer.kind in ("gemm", "matmul"):
        array = array.reshape(array.shape[0], -1)
    return array.T if transposed else array


def _cut_dequantized(graph, names, dq: onnx.NodeProto, codes: np.ndarray, keep_out: list[int]) -> None:
    """Point a DequantizeLinear at the cut integer codes; a per-channel scale and zero point keep the rows kept."""
    new = unique_name(names, f"{dq.input[0]}.shrunk")
    set_initializer(graph, new, np.ascontiguousarray(codes))
    dq.input[0] = new
    for i in (1, 2):
        if i < len(dq.input) and dq.input[i]:
            value = get_initializer(graph, dq.input[i])
            if value.size > 1:
                name = unique_name(names, f"{dq.input[i]}.shrunk")
                set_initializer(graph, name, np.ascontiguousarray(value.reshape(-1)[keep_out]))
                dq.input[i] = name
