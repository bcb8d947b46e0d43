"""shrink's analysis: channel spaces, per-channel constants and the removable channel sets (the math:
``shrink.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto

from ...compiler.graph import (
    attr,
    consumers,
    get_initializer,
    graph_output_names,
    value_shapes,
)
from ...compiler.workload import dequantize
from ..decompose._common import has_padding

_UNARY = {
    "Relu": lambda v, n: np.maximum(v, 0.0),
    "LeakyRelu": lambda v, n: np.where(v >= 0, v, float(attr(n, "alpha", 0.01)) * v),
    "Sigmoid": lambda v, n: 1.0 / (1.0 + np.exp(-v)),
    "Tanh": lambda v, n: np.tanh(v),
    "Identity": lambda v, n: v,
    "Dropout": lambda v, n: v,
    "MaxPool": lambda v, n: v,
    "GlobalAveragePool": lambda v, n: v,
    "GlobalMaxPool": lambda v, n: v,
    "ReduceMean": lambda v, n: v,  # over spatial axes only (``_unary_problem``): a per-channel constant stays
    "Flatten": lambda v, n: v,
}
FAKE_QUANT = ("QuantizeLinear", "DequantizeLinear")  # with a per-tensor grid: element-wise
_INTEGER_GRIDS = (TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16)
_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


@dataclass
class ChannelLayer:
    node: onnx.NodeProto
    kind: str  # conv | depthwise | gemm | matmul
    weight: np.ndarray  # always as [out, in, ...] (Gemm/MatMul transposed to [out, in])
    bias: np.ndarray | None
    src: str
    dst: str
    padded: bool = False
    through: tuple[onnx.NodeProto, ...] = ()  # per-tensor fake quantization between a Flatten and this FC
    weight_dq: onnx.NodeProto | None = None  # the DequantizeLinear giving the weight, when quantized
    bias_dq: onnx.NodeProto | None = None


@dataclass
class _Flat:
    """A Flatten/Reshape of an NCHW map read only by Gemm/MatMul: channel c is columns c·block … c·block+block−1."""

    node: onnx.NodeProto
    src: str
    block: int
    through: tuple[onnx.NodeProto, ...] = ()  # the fake quantization on the way to the FC layer


@dataclass
class Analysis:
    space: dict[str, str] = field(default_factory=dict)  # tensor -> space id
    width: dict[str, int] = field(default_factory=dict)  # space -> channels
    frozen: dict[str, str] = field(default_factory=dict)  # space -> reason
    layers: list[ChannelLayer] = field(default_factory=list)
    flats: dict[str, _Flat] = field(default_factory=dict)  # flattened tensor -> its link
    consts: dict[str, np.ndarray] = field(default_factory=dict)  # tensor -> per-channel value or nan
    params: list[tuple[onnx.NodeProto, int, str]] = field(default_factory=list)  # per-channel constants


def analyse(model: onnx.ModelProto) -> Analysis:
    graph = model.graph
    shapes = value_shapes(model)
    inits = {i.name for i in graph.initializer}
    uf = _UnionFind()
    a = Analysis()
    freeze: list[tuple[str, str]] = []
    data_tensors: set[str] = set()
    a.flats = _flatten_links(model, shapes, inits)
    for node in graph.node:
        _link_node(graph, node, shapes, inits, uf, a, freeze, data_tensors)
    for name in data_tensors:
        a.space[name] = uf.find(name)
    for name in data_tensors:
        shape = shapes.get(name)
        sid = a.space[name]
        if not shape or len(shape) < 2 or not isinstance(shape[1], int) or shape[1] <= 0:
            freeze.append((name, "channel count unknown"))
            continue
        if a.width.setdefault(sid, shape[1]) != shape[1]:
            freeze.append((name, "channel count mismatch"))
    for vi in list(graph.input) + list(graph.output):
        if vi.name in data_tensors:
            freeze.append((vi.name, "graph input" if vi.name not in graph_output_names(graph) else "graph output"))
    for tensor, reason in freeze:
        sid = a.space.get(tensor, uf.find(tensor))
        a.frozen.setdefault(sid, f"{reason} ('{tensor}')")
    _propagate_constants(graph, a)
    return a


def _link_node(graph, node, shapes, inits, uf, a, freeze, data_tensors) -> None:
    if node.op_type == "DequantizeLinear" and node.input[0] in inits:
        return  # a constant (a quantized weight or bias), not a map
    layer = _as_layer(graph, node, shapes, a.flats)
    if layer is not None:  # its weight and bias are constants, whether initializers or dequantized
        data_tensors.update((node.input[0], node.output[0]))
        a.layers.append(layer)
        return
    acts = [n for n in node.input if n and n not in inits]
    outs = [n for n in node.output if n]
    data_tensors.update(acts)
    data_tensors.update(outs)
    flat = next((f for f in a.flats.values() if f.node is node), None)
    if flat is not None:
        freeze.append((outs[0], f"flattened by '{node.name}' (its channels follow '{flat.src}')"))
        return
    op = node.op_type
    reason = None
    if op in _UNARY or op in ("AveragePool", "BatchNormalization", "Clip") + FAKE_QUANT:
        reason = _unary_problem(graph, node, shapes, inits, a)
        if reason is None:
            uf.union(node.input[0], node.output[0])
            return
    elif op in _BINARY:
        reason = _binary_problem(node, shapes, inits, a)
        if reason is None:
            for name in acts + outs:
                uf.union(name, node.output[0])
            return
    for name in acts + outs:
        freeze.append((name, reason or f"{op} node '{node.name}'"))


def _unary_problem(graph, node, shapes, inits, a) -> str | None:
    op = node.op_type
    if len([o for o in node.output if o]) != 1 or node.input[0] in inits:
        return f"{op} node '{node.name}' has extra outputs"
    if op == "Flatten":
        shape = shapes.get(node.input[0]) or []
        if int(attr(node, "axis", 1)) != 1 or any(d != 1 for d in shape[2:]):
            return f"Flatten '{node.name}' mixes channels with space"
    if op == "BatchNormalization":
        if attr(node, "training_mode", 0) or any(n not in inits for n in node.input[1:5]):
            return f"BatchNormalization '{node.name}' is not inference-only with constant parameters"
        a.params.extend((node, i, "bn") for i in range(1, 5))
    if op == "Clip" and any(n and n not in inits for n in node.input[1:]):
        return f"Clip '{node.name}' has computed bounds"
    if op == "ReduceMean" and not _spatial_mean(graph, node, shapes):
        return f"ReduceMean '{node.name}' reduces the batch or channel axis (or its axes are unknown)"
    if op in ("MaxPool", "AveragePool") and len(shapes.get(node.input[0]) or []) != 4:
        return f"{op} '{node.name}' is not 2-D"
    if op in FAKE_QUANT and _per_tensor_grid(graph, node) is None:
        return f"{op} '{node.name}' is not per tensor"
    return None


def _spatial_mean(graph, node: onnx.NodeProto, shapes) -> bool:
    """Whether a ReduceMean averages spatial axes only (axes from the attribute, or a constant input from opset
    18), so channel c of its output is the mean of channel c."""
    rank = len(shapes.get(node.input[0]) or [])
    axes = attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = get_initializer(graph, node.input[1])
    if axes is None or rank < 3:
        return False
    axes = [int(a) % rank for a in np.asarray(axes).reshape(-1)]
    return bool(axes) and min(axes) >= 2


def _per_tensor_grid(graph, node: onnx.NodeProto) -> tuple[float, float, float, float] | None:
    """(scale, zero point, lowest, highest code) of a per-tensor QuantizeLinear / DequantizeLinear."""
    scale = get_initializer(graph, node.input[1]) if len(node.input) > 1 else None
    zero_name = node.input[2] if len(node.input) > 2 else ""
    zero = get_initializer(graph, zero_name) if zero_name else np.zeros(1, np.uint8)
    if scale is None or zero is None or scale.size != 1 or zero.size != 1:
        return None
    if zero_name and next(i.data_type for i in graph.initializer if i.name == zero_name) not in _INTEGER_GRIDS:
        return None  # int4, float8, …: numpy does not hold the grid's range
    info = np.iinfo(zero.dtype)
    return float(scale.reshape(-1)[0]), float(zero.reshape(-1)[0]), float(info.min), float(info.max)


def _binary_problem(node, shapes, inits, a) -> str | None:
    if len(node.input) != 2:
        return f"{node.op_type} '{node.name}' arity"
    x, y = node.input
    out = shapes.get(node.output[0]) or []
    consts = [i for i, n in enumerate(node.input) if n in inits]
    if not consts:
        if shapes.get(x) != shapes.get(y) or not shapes.get(x):
            return f"{node.op_type} '{node.name}' broadcasts two activations"
        return None
    if len(consts) == 2:
        return f"{node.op_type} '{node.name}' of two constants"
    cshape = shapes.get(node.input[consts[0]]) or []
    axis = len(cshape) - (len(out) - 1)
    if len(out) < 2 or len(cshape) > len(out) or any(d != 1 for i, d in enumerate(cshape) if i != axis):
        return f"{node.op_type} '{node.name}' has a constant that is not per-channel"
    if node.op_type in ("Sub", "Div") and consts[0] == 0:
        return f"{node.op_type} '{node.name}' has the activation second"
    if 0 <= axis < len(cshape) and cshape[axis] != 1:
        a.params.append((node, consts[0], "binary"))
    return None


def _flatten_links(model: onnx.ModelProto, shapes, inits) -> dict[str, _Flat]:
    """Flatten (axis 1) / Reshape (constant [N|0|−1, C·H·W|−1]) of an NCHW map whose every reader is a
    Gemm/MatMul layer taking it as its input with C·H·W weight columns."""
    graph = model.graph
    readers = consumers(graph)
    outputs = graph_output_names(graph)
    links = {}
    for node in graph.node:
        if node.op_type not in ("Flatten", "Reshape") or len(node.output) != 1 or node.input[0] in inits:
            continue
        xshape = shapes.get(node.input[0]) or []
        if len(xshape) < 3 or not all(isinstance(d, int) and d > 0 for d in xshape[1:]):
            continue
        block = int(np.prod(xshape[2:]))
        if not _flattens_channels(graph, node, xshape, block):
            continue
        reached = _final_readers(graph, readers, outputs, node.output[0])
        if not reached:
            continue
        layers = [_as_layer(graph, u, shapes) if u.input[0] == t and t not in u.input[1:] else None
                  for t, u, _ in reached]
        if all(la is not None and la.kind in ("gemm", "matmul") and la.weight.shape[1] == xshape[1] * block
               for la in layers):
            links.update((t, _Flat(node, node.input[0], block, chain)) for t, _, chain in reached)
    return links


def _final_readers(graph, readers, outputs, tensor: str, chain: tuple[onnx.NodeProto, ...] = ()
                   ) -> list[tuple[str, onnx.NodeProto, tuple[onnx.NodeProto, ...]]]:
    """(tensor read, reader, fake quantization passed) for every reader of ``tensor``, looking through
    per-tensor fake quantization; empty when a graph output or a dangling end is on the way."""
    users = readers.get(tensor, [])
    if tensor in outputs or not users:
        return []
    found = []
    for user in users:
        if user.op_type in FAKE_QUANT and user.input[0] == tensor and _per_tensor_grid(graph, user) is not None:
            further = _final_readers(graph, readers, outputs, user.output[0], chain + (user,))
            if not further:
                return []
            found.extend(further)
        else:
            found.append((tensor, user, chain))
    return found


def _flattens_channels(graph, node, xshape, block: int) -> bool:
    if node.op_type == "Flatten":
        return int(attr(node, "axis", 1)) == 1 and block > 1
    target = get_initializer(graph, node.input[1]) if len(node.input) > 1 else None
    if target is None or target.ndim != 1 or target.size != 2 or int(attr(node, "allowzero", 0)):
        return False
    first, second = (int(v) for v in target)
    return first in (0, -1, xshape[0]) and second in (-1, xshape[1] * block) and (first, second) != (-1, -1)


def _as_layer(graph, node, shapes, flats: dict[str, _Flat] | None = None) -> ChannelLayer | None:
    layer = _plain_layer(graph, node, shapes)
    flat = (flats or {}).get(layer.src) if layer is not None else None
    if flat is not None and layer.kind in ("gemm", "matmul"):
        out = layer.weight.shape[0]
        layer.weight = layer.weight.reshape(out, -1, flat.block)
        layer.src = flat.src
        layer.through = flat.through
    return layer


def _plain_layer(graph, node, shapes) -> ChannelLayer | None:
    op = node.op_type
    if op not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
        return None
    w, wdq = _constant_input(graph, node.input[1])
    has_bias = op != "MatMul" and len(node.input) > 2 and bool(node.input[2])
    bias, bdq = _constant_input(graph, node.input[2]) if has_bias else (None, None)
    if w is None or (has_bias and bias is None) or w.ndim != (4 if op == "Conv" else 2):
        return None
    xshape = shapes.get(node.input[0]) or []
    layer = None
    if op == "Conv" and len(xshape) == 4 and isinstance(xshape[1], int):
        group = int(attr(node, "group", 1))
        kind = "conv" if group == 1 else None
        if group > 1 and group == xshape[1] and w.shape[1] == 1 and w.shape[0] % group == 0:
            kind = "depthwise"
        if kind is not None:
            layer = ChannelLayer(node, kind, w, bias, node.input[0], node.output[0], has_padding(node))
    elif op == "Gemm" and not attr(node, "transA", 0):
        plain = float(attr(node, "alpha", 1.0)) == 1.0 and float(attr(node, "beta", 1.0)) == 1.0
        outputs = w.shape[0] if attr(node, "transB", 0) else w.shape[1]
        if plain and (bias is None or bias.size in (1, outputs)):
            layer = ChannelLayer(node, "gemm", w if attr(node, "transB", 0) else w.T, bias, node.input[0], node.output[0])
    elif op == "MatMul" and len(xshape) == 2:
        layer = ChannelLayer(node, "matmul", w.T, None, node.input[0], node.output[0])
    if layer is None or not (_per_output_channel(graph, layer, wdq) and _per_output_channel(graph, layer, bdq)):
        return None
    layer.weight_dq, layer.bias_dq = wdq, bdq
    return layer


def _constant_input(graph, name: str) -> tuple[np.ndarray | None, onnx.NodeProto | None]:
    """A layer's weight or bias: an initializer, or DequantizeLinear of initializers read by one node only
    (its dequantized value and the DequantizeLinear); (None, None) for anything computed."""
    value = get_initializer(graph, name)
    if value is not None:
        return value, None
    dq = next((n for n in graph.node if name in n.output), None)
    if dq is None or dq.op_type != "DequantizeLinear" or sum(name in n.input for n in graph.node) != 1:
        return None, None
    q, scale, *rest = [get_initializer(graph, n) if n else None for n in dq.input]
    zero = rest[0] if rest else None
    if q is None or scale is None or (rest and dq.input[2] and zero is None):
        return None, None
    axis = int(attr(dq, "axis", 1)) % max(q.ndim, 1)
    if scale.size > 1 and (scale.ndim != 1 or scale.size != q.shape[axis] or int(attr(dq, "block_size", 0))):
        return None, None
    return dequantize(q, scale, zero, axis), dq


def _output_axis(layer: ChannelLayer, ndim: int) -> int:
    """The axis of the stored weight (or of the bias, ndim 1) that indexes the layer's outputs."""
    if ndim == 1 or layer.kind in ("conv", "depthwise") or (layer.kind == "gemm" and attr(layer.node, "transB", 0)):
        return 0
    return 1


def _per_output_channel(graph, layer: ChannelLayer, dq: onnx.NodeProto | None) -> bool:
    """A quantized tensor can be cut only when its scale is per tensor or per output channel."""
    if dq is None or get_initializer(graph, dq.input[1]).size == 1:
        return True
    ndim = get_initializer(graph, dq.input[0]).ndim
    return int(attr(dq, "axis", 1)) % ndim == _output_axis(layer, ndim)


def _propagate_constants(graph: onnx.GraphProto, a: Analysis) -> None:
    layers = {id(layer.node): layer for layer in a.layers}
    for node in graph.node:
        outs = [o for o in node.output if o]
        if len(outs) != 1 or a.space.get(outs[0]) is None:
            continue
        width = a.width.get(a.space[outs[0]])
        if width is None:
            continue
        value = _node_constant(graph, node, layers.get(id(node)), a)
        if value is not None and value.shape == (width,):
            a.consts[outs[0]] = value


def _node_constant(graph, node, layer, a) -> np.ndarray | None:
    if layer is not None:
        return _layer_constant(layer, input_constant(graph, a, layer))
    op = node.op_type
    v = a.consts.get(node.input[0]) if node.input else None
    if op in _UNARY:
        return None if v is None else _UNARY[op](v, node)
    if op == "AveragePool":
        if v is None:
            return None
        counted = has_padding(node) and int(attr(node, "count_include_pad", 0))
        return np.where(v == 0, 0.0, np.nan) if counted else v
    if op == "Clip" and v is not None:
        lo, hi = _clip_bounds(graph, node)
        return np.clip(v, lo, hi)
    if op in FAKE_QUANT and v is not None:
        return _fake_quant_constant(graph, node, v)
    if op == "BatchNormalization" and v is not None:
        scale, bias, mean, var = (get_initializer(graph, n).astype(np.float64) for n in node.input[1:5])
        return (v - mean) / np.sqrt(var + float(attr(node, "epsilon", 1e-5))) * scale + bias
    if op in _BINARY:
        return _binary_constant(graph, node, a)
    return None


def input_constant(graph, a: Analysis, layer: ChannelLayer) -> np.ndarray | None:
    """The per-channel constants of the layer's input as the layer reads them (after any fake quantization
    between a Flatten and it)."""
    v = a.consts.get(layer.src)
    for node in layer.through:
        v = None if v is None else _fake_quant_constant(graph, node, v)
    return v


def _fake_quant_constant(graph, node: onnx.NodeProto, v: np.ndarray) -> np.ndarray:
    scale, zero, lo, hi = _per_tensor_grid(graph, node)
    if node.op_type == "QuantizeLinear":
        return np.clip(np.rint(v / scale) + zero, lo, hi)
    return (v - zero) * scale


def _clip_bounds(graph, node) -> tuple[float, float]:
    lo, hi = attr(node, "min", -np.inf), attr(node, "max", np.inf)
    if len(node.input) > 1 and node.input[1]:
        lo = float(get_initializer(graph, node.input[1]))
    if len(node.input) > 2 and node.input[2]:
        hi = float(get_initializer(graph, node.input[2]))
    return lo, hi


def _binary_constant(graph, node, a) -> np.ndarray | None:
    vals = []
    for name in node.input:
        init = get_initializer(graph, name)
        if init is not None:
            vals.append(init.astype(np.float64).reshape(-1) if init.size > 1 else np.float64(init.reshape(-1)[0]))
        else:
            vals.append(a.consts.get(name))
    if any(v is None for v in vals):
        return None
    with np.errstate(all="ignore"):
        return _BINARY[node.op_type](vals[0], vals[1])


def _layer_constant(layer: ChannelLayer, v: np.ndarray | None) -> np.ndarray | None:
    out = layer.weight.shape[0]
    bias = np.zeros(out) if layer.bias is None else np.broadcast_to(layer.bias.astype(np.float64).reshape(-1), (out,))
    if v is None or not np.isfinite(v).any():  # no constant input: only an all-zero filter gives a constant
        return np.where(np.any(layer.weight.reshape(out, -1), axis=1), np.nan, bias)
    w = layer.weight.astype(np.float64)
    sums = w.reshape(out, w.shape[1], -1).sum(axis=2)
    used = np.any(w.reshape(out, w.shape[1], -1) != 0, axis=2)
    if layer.kind == "depthwise":
        group = v.shape[0] if v is not None else None
        if v is None:
            return np.where(~used[:, 0], bias, np.nan)
        vin = np.repeat(v, out // group)
        ok = ~used[:, 0] | (vin == 0) | (not layer.padded and np.isfinite(vin))
        return np.where(ok, bias + np.where(used[:, 0], sums[:, 0] * np.nan_to_num(vin), 0.0), np.nan)
    if v is None:
        v = np.full(w.shape[1], np.nan)
    absorbable = (v == 0) | (np.isfinite(v) & (not layer.padded))
    ok = np.all(~used | absorbable[None, :], axis=1)
    return np.where(ok, bias + (sums * np.where(used, np.nan_to_num(v)[None, :], 0.0)).sum(axis=1), np.nan)


def removable_sets(model, a: Analysis, blocked: dict[str, str]) -> dict[str, set[int]]:
    spaces = set(a.width)
    cand: dict[str, set[int]] = {}
    for sid in spaces:
        if sid in a.frozen:
            _note_frozen(a, sid, blocked)
            continue
        cand[sid] = set(range(a.width[sid]))
    for layer in a.layers:
        sid = a.space.get(layer.src)
        if sid not in cand:
            continue
        if layer.kind == "depthwise":
            continue
        v = input_constant(model.graph, a, layer)
        v = np.full(a.width[sid], np.nan) if v is None else v
        used = np.any(layer.weight.reshape(layer.weight.shape[0], layer.weight.shape[1], -1) != 0, axis=(0, 2))
        for c in list(cand[sid]):
            if not used[c]:
                continue
            if not np.isfinite(v[c]):
                cand[sid].discard(c)
            elif v[c] != 0 and (layer.padded or layer.kind == "matmul" or layer.bias_dq is not None):
                cand[sid].discard(c)
                why = ("zero padding" if layer.padded else "a MatMul, which has no bias" if layer.kind == "matmul"
                       else "a quantized bias")
                blocked.setdefault(f"{layer.node.name}:in{c}", f"constant input channel {c} = {v[c]:.4g} meets "
                                   f"{why} (cannot fold into the bias exactly)")
    _fixed_point(a, cand)
    return cand


def _note_frozen(a: Analysis, sid: str, blocked: dict[str, str]) -> None:
    for layer in a.layers:
        if a.space.get(layer.dst) == sid and layer.kind in ("conv", "gemm", "matmul"):
            dead = ~np.any(layer.weight.reshape(layer.weight.shape[0], -1) != 0, axis=1)
            if dead.any():
                blocked.setdefault(layer.node.name, f"{int(dead.sum())} all-zero filters kept: {a.frozen[sid]}")


def _fixed_point(a: Analysis, cand: dict[str, set[int]]) -> None:
    dws = [layer for layer in a.layers if layer.kind == "depthwise"]
    while True:
        before = {k: set(v) for k, v in cand.items()}
        for layer in dws:
            _couple(a, layer, cand)
        for sid, rem in cand.items():
            if rem and len(rem) >= a.width[sid]:
                rem.discard(min(rem))
        if before == cand:
            return


def _couple(a: Analysis, layer: ChannelLayer, cand: dict[str, set[int]]) -> None:
    src = cand.get(a.space.get(layer.src))
    dst = cand.get(a.space.get(layer.dst))
    groups = a.width[a.space[layer.src]]
    m = layer.weight.shape[0] // groups
    if dst is None:
        if src is not None:
            src.clear()
        return
    if src is None:
        src = set()
    for g in list(src):
        if any(g * m + j not in dst for j in range(m)):
            src.discard(g)
    keep_groups = [g for g in range(groups) if g not in src]
    gone_j = {j for j in range(m) if all(g * m + j in dst for g in keep_groups)}
    if len(gone_j) == m and keep_groups:
        gone_j.discard(min(gone_j))
    allowed = {g * m + j for g in range(groups) for j in range(m) if g in src or j in gone_j}
    dst.intersection_update(allowed)
