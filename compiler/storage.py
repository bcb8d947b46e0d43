"""Weight storage of a model: every Conv / Gemm / MatMul weight at its annotated bit width plus the
cheapest sparse index, against the same weights stored dense in float32.

A layer's weight is a (rows × cols) matrix: rows = output channels, cols = the features each output sums
over (Conv: Cin/g·kh·kw; Gemm/MatMul: the input features), flattened row-major. With b the weight bits
(``pimc.weight_bits``; a per-block ``bits`` map gives ``pimc.mean_bits``; 32 for an unannotated float
weight), n the non-zeros and P = rows·cols, the layer costs the cheapest of
    dense:     P·b                                          (no index)
    bitmap:    n·b + P                                      (one presence bit per weight)
    CSR:       n·(b + ⌈log2 cols⌉) + (rows + 1)·⌈log2(n + 1)⌉  (column index per non-zero, row pointers)
    relative:  min over r of Σ_gaps (1 + ⌊g / 2^r⌋)·(b + r)   (Deep Compression: an r-bit gap g to the previous
                                                            non-zero; a gap beyond 2^r − 1 costs filler zeros)
On top of the weights every layer stores
    scales:    32 bits per distinct quantization scale of a DequantizeLinear weight (per-channel: one per
               output channel; a per-tensor scale, or per-channel scales that are all equal, count once;
               zero points count 8 bits each unless all zero: a symmetric grid needs none)
    biases:    32 bits per bias entry (fp32 as exported, or the int32 accumulator of a quantized bias), or
               when cheaper 32 bits per non-zero entry + 1 presence bit per entry
and the fp32 reference counts the same biases at 32 bits. ``ratio`` = dense fp32 bits (weights + biases) /
stored bits (weights + index + scales + biases); ``weights_ratio`` = the same with the weights and their
index alone (no scales, no biases), the count that papers quoting "model size" compression usually give.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx

from . import annotations as ann
from .graph import attr, initializer_map, producers
from .workload import COMPUTE_OPS, constant_value

MAX_RELATIVE_BITS = 16


def layer_matrix(node: onnx.NodeProto, weight: np.ndarray) -> np.ndarray:
    """The weight as (outputs, features)."""
    if node.op_type == "Conv":
        return weight.reshape(weight.shape[0], -1)
    if node.op_type == "Gemm" and attr(node, "transB", 0):
        return weight.reshape(weight.shape[0], -1)
    return weight.reshape(-1, weight.shape[-1]).T


def relative_index_bits(flat_nonzero: np.ndarray, bits: float) -> tuple[float, int]:
    """Cheapest relative-index storage (weights + gaps + fillers) of a flat 0/1 array, and its r."""
    positions = np.flatnonzero(flat_nonzero)
    if positions.size == 0:
        return 0.0, 0
    gaps = np.diff(np.concatenate([[-1], positions])) - 1
    best, best_r = math.inf, 1
    for r in range(1, MAX_RELATIVE_BITS + 1):
        entries = float(np.sum(1 + gaps // (1 << r)))
        cost = entries * (bits + r)
        if cost < best:
            best, best_r = cost, r
    return best, best_r


def layer_storage(matrix: np.ndarray, bits: float) -> dict[str, Any]:
    rows, cols = matrix.shape
    params = matrix.size
    nonzero = matrix != 0
    nnz = int(nonzero.sum())
    options = {
        "dense": params * bits,
        "bitmap": nnz * bits + params,
        "csr": nnz * (bits + math.ceil(math.log2(max(cols, 2)))) + (rows + 1) * math.ceil(math.log2(nnz + 1) or 1),
    }
    options["relative"], r = relative_index_bits(nonzero.reshape(-1), bits)
    form = min(options, key=lambda k: options[k])
    return {"params": int(params), "nonzero": nnz, "weight_bits": bits, "format": form,
            "relative_index_bits": r if form == "relative" else None,
            "bits": float(options[form]), "dense_fp32_bits": float(params * 32)}


def scale_bits(model: onnx.ModelProto, name: str, inits, prods) -> float:
    """Bits of the quantization scale (and non-zero zero points) behind a DequantizeLinear weight."""
    node = prods.get(name)
    while node is not None and node.op_type == "Identity":
        node = prods.get(node.input[0])
    if node is None or node.op_type != "DequantizeLinear":
        return 0.0
    scale = constant_value(model, node.input[1], inits, prods)
    bits = 32.0 * (np.unique(scale).size if scale is not None else 1)
    zero = constant_value(model, node.input[2], inits, prods) if len(node.input) > 2 and node.input[2] else None
    if zero is not None and np.any(zero != 0):
        bits += 8.0 * zero.size
    return bits


def bias_bits(model: onnx.ModelProto, node: onnx.NodeProto, inits, prods) -> tuple[float, float]:
    """A Conv / Gemm bias at 32 bits per entry, dense or (when cheaper) its non-zeros + a presence bitmap
    (a MatMul's bias lives in a separate Add: not counted); returns (stored bits, dense fp32 bits)."""
    if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or not node.input[2]:
        return 0.0, 0.0
    bias = constant_value(model, node.input[2], inits, prods)
    if bias is None:
        return 0.0, 0.0
    return float(min(32 * bias.size, 32 * np.count_nonzero(bias) + bias.size)), 32.0 * bias.size


def node_bits(node: onnx.NodeProto) -> float:
    notes = ann.node_annotations(node)
    if "bits" in (notes.get("maps") or {}) and notes.get("mean_bits"):
        return float(notes["mean_bits"])
    return float(notes.get("weight_bits") or 32)


def model_storage(model: onnx.ModelProto) -> dict[str, Any]:
    """Stored weight bits of every compute node and of the model, and the ratio to dense fp32."""
    inits = initializer_map(model.graph)
    prods = producers(model.graph)
    layers = {}
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS or len(node.input) < 2:
            continue
        weight = constant_value(model, node.input[1], inits, prods)
        if weight is None or weight.ndim < 2:
            continue
        layer = layer_storage(layer_matrix(node, weight), node_bits(node))
        layer["weight_storage_bits"] = layer["bits"]
        layer["scale_bits"] = scale_bits(model, node.input[1], inits, prods)
        layer["bias_bits"], dense_bias = bias_bits(model, node, inits, prods)
        layer["bits"] += layer["scale_bits"] + layer["bias_bits"]
        layer["dense_fp32_bits"] += dense_bias
        layers[node.name or node.output[0]] = layer
    bits = sum(x["bits"] for x in layers.values())
    dense = sum(x["dense_fp32_bits"] for x in layers.values())
    weight_bits = sum(x["weight_storage_bits"] for x in layers.values())
    dense_weights = sum(32.0 * x["params"] for x in layers.values())
    return {"bits": float(bits), "dense_fp32_bits": float(dense),
            "ratio": round(dense / bits, 3) if bits else None,
            "weights_ratio": round(dense_weights / weight_bits, 3) if weight_bits else None,
            "breakdown": {"weights_and_index": float(weight_bits),
                          "scales": float(sum(x["scale_bits"] for x in layers.values())),
                          "biases": float(sum(x["bias_bits"] for x in layers.values()))},
            "layers": layers}
