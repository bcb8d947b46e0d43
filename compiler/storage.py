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
Biases are not counted (they are a few per layer and stay at their accumulator width on every target).
``ratio`` = dense fp32 bits / stored bits.
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
        layers[node.name or node.output[0]] = layer_storage(layer_matrix(node, weight), node_bits(node))
    bits = sum(x["bits"] for x in layers.values())
    dense = sum(x["dense_fp32_bits"] for x in layers.values())
    return {"bits": float(bits), "dense_fp32_bits": float(dense),
            "ratio": round(dense / bits, 3) if bits else None, "layers": layers}
