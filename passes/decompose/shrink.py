"""shrink: remove channels that pruning made dead, across layers, without changing the outputs.

Channel spaces. Tensors linked by channel-preserving ops (Relu and other elementwise activations,
Identity/Dropout, MaxPool, AveragePool, GlobalAverage/MaxPool, inference BatchNormalization, Flatten of a
1×1 map, Add/Sub/Mul/Div of two activations, or with a per-channel constant) share one set of channel
indices — a *space*. Every space is bounded by *layers* (Conv with group 1, depthwise Conv with
group = Cin, Gemm, MatMul with a constant weight) that produce it or read it. Any other op, a graph
input or a graph output touching a space freezes it (reported in ``skipped``).

Constant channels. Walking the graph in order, channel c of a tensor is a known constant v_c when it is
the same value at every position: a layer output whose inputs with non-zero weights are all constant
(a filter with all-zero weights gives its bias), provided v = 0 or the layer has no padding (zero padding
would make borders differ); activations, BN, max/global pooling, and average pooling without counted
padding map constants to constants.

Channel c of space S may go when every reading layer K either does not use it (all of K's weights on
input c are zero) or can absorb it exactly: for v_c = 0 nothing changes, and for v_c ≠ 0 a layer
without padding adds v_c · Σ_{kernel} W_K[o, c] to its bias b_K[o] (Gemm: v_c · W[o, c]). A depthwise
layer couples two spaces: input channel g may go only with all its m outputs g·m..g·m+m−1; on the output
side besides whole groups, output index j may go from every group (an unused *basis kernel* of a
decomposed pair, which lowers its rank d). Producers drop the filter rows of removed channels, BN and
per-channel constants are sliced. The removable sets are found as a greatest fixed point (start from the
locally removable channels, drop any that violate a coupling, repeat), and at least one channel of a
space is always kept. The whole analysis repeats until nothing changes, since removing inputs can leave
further filters all-zero. Every step is an exact algebraic identity, so the pass is exact.

Flattened maps. A Flatten (axis 1) or a Reshape to a constant [N | 0 | −1, C·H·W | −1] of an NCHW map
whose every reader is a Gemm/MatMul with C·H·W weight columns links that map's space to the FC layers:
channel c of the space is the block of columns c·H·W … c·H·W + H·W − 1 (the FC weight is viewed as
[out, C, H·W], exactly like a conv kernel of H·W taps). A dead channel drops its whole block; a constant
channel c = v_c (the same value at every position) adds v_c · Σ_block W[o, ·] to the Gemm bias (a MatMul,
having no bias, only drops v_c = 0 channels); an explicit C·H·W in the Reshape target follows.

Quantized graphs (QDQ). A weight or bias given as DequantizeLinear(q, scale[, zero point]) of initializers,
read by that layer alone, is analysed at its dequantized value and cut in its integer form: q loses the
same rows and columns, a per-output-channel scale and zero point lose the removed rows (a scale per input
channel is not cut: such a layer is left alone). A quantized bias cannot absorb a constant channel exactly
(b + v·ΣW is off the bias grid), so only channels it does not use, or that are 0, go from its input. An
activation QuantizeLinear or DequantizeLinear with a per-tensor scale and zero point maps every element
alike, so it preserves channels (a constant v maps to clip(rint(v/s) + z) and (v − z)·s) and a Flatten may
reach its Gemm through such a pair. Each cut is the removal of a term that is zero, or of an output nobody
reads, so the quantized model stays exact.

Per-element maps travel with the weights: a ``pattern`` map ([Cout, Cin/groups] pattern ids of
pattern-prune) loses the rows of removed filters and the columns of removed input channels; other maps
lose rows when they have one row per filter (see ``_slice_maps``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from ...compiler.annotations import get_node_annotation, get_node_map, set_node_annotation, set_node_map
from ...compiler.graph import (
    all_names,
    attr,
    consumers,
    get_initializer,
    graph_output_names,
    remove_value_info,
    set_initializer,
    unique_name,
    value_shapes,
)
from ...compiler.loader import infer_shapes
from ...compiler.passbase import Pass, PassContext, PassResult, register_pass
from ...compiler.workload import dequantize
from ._common import BASIS, COEFFICIENT, has_padding

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
    "Flatten": lambda v, n: v,
}
FAKE_QUANT = ("QuantizeLinear", "DequantizeLinear")  # with a per-tensor grid: element-wise
_INTEGER_GRIDS = (TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16)
_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}
MAX_ROUNDS = 50


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
class _Layer:
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
class _Analysis:
    space: dict[str, str] = field(default_factory=dict)  # tensor -> space id
    width: dict[str, int] = field(default_factory=dict)  # space -> channels
    frozen: dict[str, str] = field(default_factory=dict)  # space -> reason
    layers: list[_Layer] = field(default_factory=list)
    flats: dict[str, _Flat] = field(default_factory=dict)  # flattened tensor -> its link
    consts: dict[str, np.ndarray] = field(default_factory=dict)  # tensor -> per-channel value or nan
    params: list[tuple[onnx.NodeProto, int, str]] = field(default_factory=list)  # per-channel constants


@register_pass
class Shrink(Pass):
    name = "shrink"
    summary = "Remove dead channels, unused basis kernels and all-zero filters across layers (exact)"
    exact = True
    tolerance = 1e-4

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for n in model.graph.node for a in n.attribute):
            return PassResult(model, False, {"skipped": [{"node": "*", "reason": "graph has control-flow subgraphs"}]})
        removed: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        blocked: dict[str, str] = {}
        changed = False
        for _ in range(MAX_ROUNDS):
            model = infer_shapes(model, "shrink")
            analysis = _analyse(model)
            removable = _removable_sets(model, analysis, blocked)
            if not any(removable.values()):
                break
            _apply(model, analysis, removable, removed)
            remove_value_info(model.graph)
            changed = True
        changed = _sync_ranks(model.graph) or changed
        stats: dict[str, Any] = {
            "removed": {k: dict(v) for k, v in sorted(removed.items())},
            "channels_removed": int(sum(v.get("out_channels", 0) for v in removed.values())),
            "skipped": [{"node": k, "reason": v} for k, v in sorted(blocked.items())],
        }
        return PassResult(model, changed, stats)


def _sync_ranks(graph: onnx.GraphProto) -> bool:
    """``rank`` of every basis node (and its coefficient partner) = basis outputs per input channel.

    A basis conv whose input shrank to one channel has group 1 and is shrunk as a dense conv, which does
    not update the annotation itself. True when an annotation changed."""
    synced = False
    for node in graph.node:
        if get_node_annotation(node, "role") != BASIS:
            continue
        weight = get_initializer(graph, node.input[1])
        groups = int(next((a.i for a in node.attribute if a.name == "group"), 1))
        if weight is None or weight.shape[0] % groups:
            continue
        rank = weight.shape[0] // groups
        if get_node_annotation(node, "rank") == rank:
            continue
        for n in graph.node:
            if n is node or (get_node_annotation(n, "role") == COEFFICIENT and n.input[0] == node.output[0]):
                set_node_annotation(n, "rank", rank)
                synced = True
    return synced


def _analyse(model: onnx.ModelProto) -> _Analysis:
    graph = model.graph
    shapes = value_shapes(model)
    inits = {i.name for i in graph.initializer}
    uf = _UnionFind()
    a = _Analysis()
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
    if op in ("MaxPool", "AveragePool") and len(shapes.get(node.input[0]) or []) != 4:
        return f"{op} '{node.name}' is not 2-D"
    if op in FAKE_QUANT and _per_tensor_grid(graph, node) is None:
        return f"{op} '{node.name}' is not per tensor"
    return None


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


def _as_layer(graph, node, shapes, flats: dict[str, _Flat] | None = None) -> _Layer | None:
    layer = _plain_layer(graph, node, shapes)
    flat = (flats or {}).get(layer.src) if layer is not None else None
    if flat is not None and layer.kind in ("gemm", "matmul"):
        out = layer.weight.shape[0]
        layer.weight = layer.weight.reshape(out, -1, flat.block)
        layer.src = flat.src
        layer.through = flat.through
    return layer


def _plain_layer(graph, node, shapes) -> _Layer | None:
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
            layer = _Layer(node, kind, w, bias, node.input[0], node.output[0], has_padding(node))
    elif op == "Gemm" and not attr(node, "transA", 0):
        plain = float(attr(node, "alpha", 1.0)) == 1.0 and float(attr(node, "beta", 1.0)) == 1.0
        outputs = w.shape[0] if attr(node, "transB", 0) else w.shape[1]
        if plain and (bias is None or bias.size in (1, outputs)):
            layer = _Layer(node, "gemm", w if attr(node, "transB", 0) else w.T, bias, node.input[0], node.output[0])
    elif op == "MatMul" and len(xshape) == 2:
        layer = _Layer(node, "matmul", w.T, None, node.input[0], node.output[0])
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


def _output_axis(layer: _Layer, ndim: int) -> int:
    """The axis of the stored weight (or of the bias, ndim 1) that indexes the layer's outputs."""
    if ndim == 1 or layer.kind in ("conv", "depthwise") or (layer.kind == "gemm" and attr(layer.node, "transB", 0)):
        return 0
    return 1


def _per_output_channel(graph, layer: _Layer, dq: onnx.NodeProto | None) -> bool:
    """A quantized tensor can be cut only when its scale is per tensor or per output channel."""
    if dq is None or get_initializer(graph, dq.input[1]).size == 1:
        return True
    ndim = get_initializer(graph, dq.input[0]).ndim
    return int(attr(dq, "axis", 1)) % ndim == _output_axis(layer, ndim)


def _propagate_constants(graph: onnx.GraphProto, a: _Analysis) -> None:
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
        return _layer_constant(layer, _input_constant(graph, a, layer))
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


def _input_constant(graph, a: _Analysis, layer: _Layer) -> np.ndarray | None:
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


def _layer_constant(layer: _Layer, v: np.ndarray | None) -> np.ndarray | None:
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


def _removable_sets(model, a: _Analysis, blocked: dict[str, str]) -> dict[str, set[int]]:
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
        v = _input_constant(model.graph, a, layer)
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


def _note_frozen(a: _Analysis, sid: str, blocked: dict[str, str]) -> None:
    for layer in a.layers:
        if a.space.get(layer.dst) == sid and layer.kind in ("conv", "gemm", "matmul"):
            dead = ~np.any(layer.weight.reshape(layer.weight.shape[0], -1) != 0, axis=1)
            if dead.any():
                blocked.setdefault(layer.node.name, f"{int(dead.sum())} all-zero filters kept: {a.frozen[sid]}")


def _fixed_point(a: _Analysis, cand: dict[str, set[int]]) -> None:
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


def _couple(a: _Analysis, layer: _Layer, cand: dict[str, set[int]]) -> None:
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


def _apply(model, a: _Analysis, removable: dict[str, set[int]], removed) -> None:
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


def _reshape_targets(graph, names, a: _Analysis, removable: dict[str, set[int]]) -> None:
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


def _edit_layer(graph, names, layer: _Layer, a: _Analysis, rin: set[int], rout: set[int], removed) -> None:
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
            v = _input_constant(graph, a, layer)
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


def _slice_maps(model: onnx.ModelProto, layer: _Layer, rin: set[int], rout: set[int], removed) -> None:
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


def _write_layer(graph, names, layer: _Layer, w: np.ndarray, bias: np.ndarray | None, drop_in: list[int],
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


def _stored_layout(layer: _Layer, array: np.ndarray, inverse: bool = False) -> np.ndarray:
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
