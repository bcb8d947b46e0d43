"""Workload extraction: every Conv / ConvTranspose / Gemm / MatMul becomes a ``LayerRecord``.

Backends read these records, never the raw graph. A record carries the geometry (batch, channels,
spatial sizes, kernel, stride, pads, dilation, groups), the constant weight (looked up through
``DequantizeLinear``/``Identity``), its density, bit widths, the fused activation and every pimc
annotation of the node, plus the per-element maps the node references.

MACs of a layer: ``batch · outH · outW · Cout · (Cin / groups) · kh · kw``. Effective MACs count only
non-zero weights: ``batch · outH · outW · nnz(W)``.

ConvTranspose (weight ``[Cin, Cout/G, kh, kw]``): every input pixel scatters one kernel, so MACs are
``batch · H · W · Cin · (Cout / G) · kh · kw`` and effective MACs ``batch · H · W · nnz(W)`` (the
zero-inserted-input conv form would count the inserted zeros too). ``scatter_record`` gives a backend
the same layer as the grouped 1×1 conv it runs as (GEMM ``X[B·H·W, Cin/G] · W[Cin/G, (Cout/G)·kh·kw]``
per group, whose partial products are then overlap-added into the output).

MatMul/Gemm: rows = every output element but the last axis (batched and broadcast MatMuls included).

1-D convolutions are records with ``h = out_h = kh = 1``. 3-D convolutions fold depth into the height
axis (``h = D·H``, ``out_h = outD·outH``, ``kh = kd·kh``, stride/pads/dilation of H and W), which keeps
the MAC counts exact; ``spatial_dims`` says which case a record is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from . import annotations as ann
from .errors import PimcError
from .graph import attr, initializer_map, producers, value_shapes

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
CONV_OPS = ("Conv", "ConvTranspose")


def next_larger_measured(table: tuple[np.ndarray, np.ndarray] | None, size):
    """The all-zero fraction measured for chunks of ``size`` (an int or an array of sizes): a size that was not
    measured reads the next larger measured one (aligned chunks nest, so that never overstates the zeros); 0
    where every measured size is smaller or nothing was measured."""
    if table is None:
        return np.zeros(np.shape(size)) if np.ndim(size) else 0.0
    sizes, fractions = table
    found = np.append(fractions, 0.0)[np.minimum(np.searchsorted(sizes, size), len(sizes))]
    return found if np.ndim(found) else float(found)


@dataclass
class LayerRecord:
    name: str
    op: str
    batch: int
    cin: int
    cout: int
    h: int
    w: int
    out_h: int
    out_w: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    spatial_dims: int = 2
    params: int = 0
    nonzero: int = 0
    weight_bits: int | None = None
    act_bits: int | None = None
    fused_activation: str | None = None
    annotations: dict[str, Any] = field(default_factory=dict)
    input: str = ""
    output: str = ""
    weight: np.ndarray | None = field(default=None, repr=False)
    maps: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def density(self) -> float:
        return self.nonzero / self.params if self.params else 1.0

    @property
    def cin_per_group(self) -> int:
        return self.cin // max(self.groups, 1)

    @property
    def is_transposed(self) -> bool:
        return self.op == "ConvTranspose"

    @property
    def macs(self) -> int:
        kh, kw = self.kernel
        if self.is_transposed:
            return self.batch * self.h * self.w * self.cin * (self.cout // max(self.groups, 1)) * kh * kw
        return self.batch * self.out_h * self.out_w * self.cout * self.cin_per_group * kh * kw

    @property
    def effective_macs(self) -> int:
        if self.weight is None:
            return self.macs
        pixels = self.h * self.w if self.is_transposed else self.out_h * self.out_w
        return self.batch * pixels * self.nonzero

    @property
    def role(self) -> str | None:
        return self.annotations.get("role")

    @property
    def input_density(self) -> float | None:
        """Measured non-zero fraction of the activation input (``activation-sparsity`` pass), else None."""
        zero = self.annotations.get("input_zero_fraction")
        return None if zero is None else 1.0 - float(zero)

    @property
    def input_stored_density(self) -> float | None:
        """Measured non-zero fraction of the map stored for this input (the map before a threshold gate
        that is applied on the way in, ``input_stored_zero_fraction``), else ``input_density``."""
        zero = self.annotations.get("input_stored_zero_fraction")
        return self.input_density if zero is None else 1.0 - float(zero)

    @property
    def output_density(self) -> float | None:
        """Measured non-zero fraction of the map the layer writes after its Relu, else None."""
        zero = self.annotations.get("output_zero_fraction")
        return None if zero is None else 1.0 - float(zero)

    def input_zero_chunk_fraction(self, size: int) -> float:
        """Measured all-zero fraction of aligned im2col chunks of ``size`` elements (``next_larger_measured``)."""
        return float(next_larger_measured(self._chunk_table("input_zero_chunks"), size))

    def channel_chunk_table(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(sizes, all-zero fractions) of the measured ``input_channel_chunks``, sizes increasing; None if absent."""
        return self._chunk_table("input_channel_chunks")

    def _chunk_table(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        chunks = self.annotations.get(key)
        if not chunks:
            return None
        sizes = sorted(int(k) for k in chunks)
        return np.array(sizes), np.array([float(chunks[str(g)]) for g in sizes])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("weight")
        data.pop("maps")
        data.update(density=self.density, macs=self.macs, effective_macs=self.effective_macs)
        return data


@dataclass
class Workload:
    layers: list[LayerRecord]
    tensor_annotations: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def effective_macs(self) -> int:
        return sum(layer.effective_macs for layer in self.layers)

    def by_name(self) -> dict[str, LayerRecord]:
        return {layer.name: layer for layer in self.layers}


def constant_value(
    model: onnx.ModelProto, name: str, _inits=None, _prods=None, _arrays=None
) -> np.ndarray | None:
    """The value of a tensor that is an initializer, possibly behind Identity / DequantizeLinear."""
    inits = _inits if _inits is not None else initializer_map(model.graph)
    prods = _prods if _prods is not None else producers(model.graph)
    if _arrays is not None and name in _arrays:
        return _arrays[name]
    if name in inits:
        return numpy_helper.to_array(inits[name])
    node = prods.get(name)
    if node is None:
        return None
    if node.op_type == "Identity":
        return constant_value(model, node.input[0], inits, prods, _arrays)
    if node.op_type == "DequantizeLinear":
        q = constant_value(model, node.input[0], inits, prods, _arrays)
        if q is None:
            return None
        scale = constant_value(model, node.input[1], inits, prods)
        zero = constant_value(model, node.input[2], inits, prods) if len(node.input) > 2 and node.input[2] else None
        axis = attr(node, "axis", 1)
        return dequantize(q, scale, zero, axis)
    return None


def dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int) -> np.ndarray:
    """DequantizeLinear of constants: (q − zero)·scale, per tensor or along ``axis``."""
    q = q.astype(np.float32)
    zero = np.zeros_like(scale) if zero is None else zero.astype(np.float32)
    if scale.ndim == 0 or scale.size == 1:
        return (q - zero.reshape(())) * scale.reshape(()).astype(np.float32)
    shape = [1] * q.ndim
    shape[axis] = -1
    return (q - zero.reshape(shape)) * scale.astype(np.float32).reshape(shape)


def _dims(shape: list | None, name: str, node: onnx.NodeProto) -> list[int]:
    if shape is None:
        raise PimcError(f"node '{node.name}' ({node.op_type}): shape of '{name}' is unknown")
    return [d if isinstance(d, int) and d > 0 else 1 for d in shape]


def _conv_record(node, shapes, weight) -> LayerRecord:
    x = _dims(shapes.get(node.input[0]), node.input[0], node)
    y = _dims(shapes.get(node.output[0]), node.output[0], node)
    if len(x) != len(y) or len(x) not in (3, 4, 5):
        raise PimcError(f"node '{node.name}': only 1-D, 2-D and 3-D convolutions are supported (input rank {len(x)})")
    wshape = list(weight.shape) if weight is not None else _dims(shapes.get(node.input[1]), node.input[1], node)
    spatial = len(x) - 2
    kernel = [int(k) for k in wshape[2:]]
    strides = list(attr(node, "strides", [1] * spatial))
    dilations = list(attr(node, "dilations", [1] * spatial))
    pads = list(attr(node, "pads", [0] * (2 * spatial)))
    auto_pad = attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if len(pads) != 2 * spatial or auto_pad != "NOTSET":
        pads = _effective_pads(x[2:], y[2:], kernel, strides, dilations, node.op_type == "ConvTranspose",
                               lower=auto_pad == "SAME_LOWER")
    in_sp, out_sp = x[2:], y[2:]
    if spatial == 1:
        in_sp, out_sp, kernel = [1, *in_sp], [1, *out_sp], [1, *kernel]
        strides, dilations, pads = [1, *strides], [1, *dilations], [0, pads[0], 0, pads[1]]
    elif spatial == 3:
        in_sp, out_sp = [in_sp[0] * in_sp[1], in_sp[2]], [out_sp[0] * out_sp[1], out_sp[2]]
        kernel = [kernel[0] * kernel[1], kernel[2]]
        strides, dilations = strides[1:], dilations[1:]
        pads = [pads[1], pads[2], pads[4], pads[5]]
    return LayerRecord(
        name=node.name, op=node.op_type, batch=x[0], cin=x[1], cout=y[1], h=in_sp[0], w=in_sp[1],
        out_h=out_sp[0], out_w=out_sp[1], kernel=(kernel[0], kernel[1]), stride=(strides[0], strides[1]),
        pads=tuple(pads), dilation=(dilations[0], dilations[1]), groups=int(attr(node, "group", 1)),
        spatial_dims=spatial, input=node.input[0], output=node.output[0],
    )


def _effective_pads(x: list[int], y: list[int], kernel: list[int], strides: list[int], dilations: list[int],
                    transposed: bool, lower: bool = False) -> list[int]:
    """Total padding per axis implied by the input/output sizes (auto_pad SAME_*/VALID), split begin/end
    (an odd total puts the extra one at the end, at the beginning for SAME_LOWER)."""
    begins, ends = [], []
    for i, k in enumerate(kernel):
        span = (k - 1) * dilations[i] + 1
        if transposed:
            total = max(0, strides[i] * (x[i] - 1) + span - y[i])
        else:
            total = max(0, (y[i] - 1) * strides[i] + span - x[i])
        begin = total - total // 2 if lower else total // 2
        begins.append(begin)
        ends.append(total - begin)
    return begins + ends


def _matmul_record(node, shapes, weight) -> LayerRecord:
    a = _dims(shapes.get(node.input[0]), node.input[0], node)
    y = _dims(shapes.get(node.output[0]), node.output[0], node)
    if node.op_type == "Gemm" and attr(node, "transA", 0):
        a = a[::-1]
    k = a[-1]
    b_rank = len(shapes.get(node.input[1]) or [0, 0]) if len(node.input) > 1 else 2
    n = y[-1] if y and b_rank > 1 else 1
    rows = math.prod(y[:-1] if b_rank > 1 else y) if y else 1
    return LayerRecord(
        name=node.name, op=node.op_type, batch=1, cin=k, cout=n, h=rows, w=1, out_h=rows, out_w=1,
        input=node.input[0], output=node.output[0],
    )


def _fused_activation(node, consumers_of, annotations: dict[str, Any]) -> str | None:
    marked = annotations.get("fused_activation")
    if marked:
        return str(marked)
    return None


_REUSED: dict[int, tuple[onnx.ModelProto, Workload]] | None = None


@contextlib.contextmanager
def reusing_workloads() -> Iterator[None]:
    """Within this block, a model extracted again (the same object) returns its first workload. Only for
    code that reads models without changing them, such as costing one model on several baselines."""
    global _REUSED
    outer, _REUSED = _REUSED, {} if _REUSED is None else _REUSED
    try:
        yield
    finally:
        _REUSED = outer


def extract_workload(model: onnx.ModelProto, _known=None) -> Workload:
    """Layer records of every compute node, in graph order. Needs shape-inferred models.

    ``_known`` (internal): ``(arrays, nonzeros)`` by initializer name, already computed by the caller.
    """
    if _REUSED is not None:
        kept = _REUSED.get(id(model))
        if kept is None:  # the model is kept alive with its workload, so its id is not reused meanwhile
            kept = _REUSED[id(model)] = (model, _extract_workload(model, _known))
        return kept[1]
    return _extract_workload(model, _known)


def _extract_workload(model: onnx.ModelProto, _known=None) -> Workload:
    arrays, nonzeros = _known if _known is not None else (None, {})
    graph = model.graph
    shapes = value_shapes(model)
    inits = initializer_map(graph)
    prods = producers(graph)
    layers: list[LayerRecord] = []
    for node in graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        weight = constant_value(model, node.input[1], inits, prods, arrays) if len(node.input) > 1 else None
        if node.op_type in CONV_OPS:
            record = _conv_record(node, shapes, weight)
        else:
            if node.op_type == "Gemm" and weight is not None and attr(node, "transB", 0):
                weight = weight.T
            record = _matmul_record(node, shapes, weight)
        notes = ann.node_annotations(node)
        record.annotations = notes
        record.weight = weight
        if weight is not None:
            record.params = int(weight.size)
            known = nonzeros.get(node.input[1])
            record.nonzero = known if known is not None else int(np.count_nonzero(weight))
        record.weight_bits = notes.get("weight_bits")
        record.act_bits = notes.get("act_bits")
        record.fused_activation = _fused_activation(node, None, notes)
        for kind in (notes.get("maps") or {}):
            value = ann.get_node_map(model, node, kind)
            if value is not None:
                record.maps[kind] = value
        layers.append(record)
    return Workload(layers=layers, tensor_annotations=ann.tensor_annotations(model))


def scatter_record(rec: LayerRecord) -> LayerRecord:
    """A ConvTranspose as the grouped 1×1 conv it runs as: each of the ``B·H·W`` input pixels times the
    ``[Cin/G, (Cout/G)·kh·kw]`` weight of its group gives ``(Cout/G)·kh·kw`` partial products, which are
    overlap-added into the ``OH × OW`` output. MACs and effective MACs equal those of ``rec``."""
    if not rec.is_transposed:
        return rec
    g = max(rec.groups, 1)
    kh, kw = rec.kernel
    kg = rec.cout // g
    weight = None
    if rec.weight is not None:
        w = np.asarray(rec.weight).reshape(g, rec.cin // g, kg * kh * kw)
        weight = w.transpose(0, 2, 1).reshape(g * kg * kh * kw, rec.cin // g, 1, 1)
    return dataclasses.replace(
        rec, op="Conv", cout=g * kg * kh * kw, out_h=rec.h, out_w=rec.w, kernel=(1, 1), stride=(1, 1),
        pads=(0, 0, 0, 0), dilation=(1, 1), weight=weight, maps={},
        annotations={**rec.annotations, "lowered_from": "ConvTranspose"},
    )
