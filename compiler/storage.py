"""Weight storage of a model: every Conv / Gemm / MatMul weight at its annotated bit width plus the
cheapest sparse index, against the same weights stored dense in float32.

A layer's weight is a (rows × cols) matrix: rows = output channels, cols = the features each output sums
over (Conv: Cin/g·kh·kw; Gemm/MatMul: the input features), flattened row-major. With b the weight bits
(``pimc.weight_bits``; a per-block ``bits`` map gives ``pimc.mean_bits``; 32 for an unannotated float
weight), n the non-zeros and P = rows·cols, the layer costs the cheapest of
    dense:     P·b                                          (no index)
    bitmap:    n·v + P                                      (one presence bit per weight; v below)
    CSR:       n·(v + ⌈log2 cols⌉) + (rows + 1)·⌈log2(n + 1)⌉  (column index per non-zero, row pointers)
    relative:  min over r of Σ_gaps (1 + ⌊g / 2^r⌋)·(b + r)   (Deep Compression: an r-bit gap g to the previous
                                                            non-zero; a gap beyond 2^r − 1 costs filler zeros)
    huffman:   min over r, k of H(gaps_r,k) + k·n + H(values) + codebooks + ⌈log2(P + 1)⌉  (Deep Compression's
               third stage, below; H(·) a stream's Huffman-coded bits; the last term stores n, where the
               decoder stops)
A stored non-zero never needs the zero code: bitmap and CSR store each non-zero in v = ⌈log2(2^b − 1)⌉ bits
(= b for b ≥ 2; 0 for b = 1; b itself for a fractional or > 16-bit b). The relative index keeps b: its
filler entries are zeros.

Huffman (Han, Mao & Dally, "Deep Compression", ICLR 2016, §4: Huffman coding of the relative-index gaps and
of the quantized weight codes). With r-bit gaps, a non-zero at gap g (zeros since the previous non-zero) is
⌊g / 2^r⌋ escape symbols E ("skip 2^r positions", no weight: unlike the relative format's filler it needs no
zero value) then the gap symbol g mod 2^r; of that symbol the low k ≤ r bits are sent raw (as DEFLATE's
"extra bits", RFC 1951 §3.2.5) and the high r − k bits Huffman-coded, so the gap alphabet is
{0 … 2^(r−k) − 1, E} and the gaps cost H(gap symbols) + k·n + codebook, minimised over 1 ≤ r ≤ 16, 0 ≤ k ≤ r
(k = 0: every gap symbol Huffman-coded; k > 0 keeps the codebook of long gaps small). The values are the n
non-zeros' codes over the 2^b − 1 non-zero codes of a b-bit grid (integer b ≤ 8 and at most 2^b − 1 distinct
non-zero values in the layer; else each value costs b bits raw, no codebook). A Huffman code of symbol counts
c_s has lengths ℓ_s (the optimal prefix code, Huffman 1952) and costs Σ_s c_s·ℓ_s bits; its canonical
codebook (as DEFLATE, RFC 1951 §3.2.2) is sent as 8 header bits (r and k, or b, and w) + 1 flag bit + the cheaper of
    every symbol's length:  A·w                    (A the alphabet size, w = ⌈log2(ℓ_max + 1)⌉, 0 = unused)
    the used symbols only:  m·(⌈log2 A⌉ + w)       (m symbols used: each symbol's number and its length)
A one-symbol stream gets ℓ = 1.
On top of the weights every layer stores
    scales:    32 bits per distinct quantization scale of a DequantizeLinear weight (per-channel: one per
               output channel; a per-tensor scale, or per-channel scales that are all equal, count once;
               zero points count 8 bits each unless all zero: a symmetric grid needs none)
    biases:    32 bits per bias entry (fp32 as exported, or the int32 accumulator of a quantized bias), or
               when cheaper 32 bits per non-zero entry + 1 presence bit per entry
and the fp32 reference counts the same biases at 32 bits. ``ratio`` = dense fp32 bits (weights + biases) /
stored bits (weights + index + scales + biases); ``weights_ratio`` = the same with the weights and their
index alone (no scales, no biases), the count that papers quoting "model size" compression usually give;
``weights_ratio_fixed_length`` = ``weights_ratio`` with the cheapest of dense, bitmap, CSR and relative only
(no entropy coding: the three sparse indices above).

The dense fp32 reference is the model as it was brought to pimc. A pass that changes shapes (``shrink``
removing dead channels, the prune exporter's clean-up) would otherwise make the reference the smaller model.
So every exporter (and ``pimc.compress``) records the dense model it started from in its output's
``metadata_props`` under ``pimc.reference_storage`` (``replace_reference``), as does the first pipeline to see an
unrecorded model (``stamp_reference``). Every later count divides by that. ``reference`` says
which one was used. ``dense_fp32_bits_this_model`` is the dense fp32 size of the shapes as they are now.
Removing a hidden channel needs no index: which hidden channels survive does not matter, since the function
does not depend on their order.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx

from . import annotations as ann
from .graph import attr, initializer_map, producers
from .workload import COMPUTE_OPS, constant_value

MAX_RELATIVE_BITS = 16
MAX_HUFFMAN_VALUE_BITS = 8  # values are Huffman-coded only on a grid of at most 2^8 − 1 non-zero codes
ENTROPY_FORMATS = ("huffman",)
CODEBOOK_HEADER_BITS = 8 + 1  # r and k (or b) and the length width w, + which of the two codebook layouts


def layer_matrix(node: onnx.NodeProto, weight: np.ndarray) -> np.ndarray:
    """The weight as (outputs, features)."""
    if node.op_type == "Conv":
        return weight.reshape(weight.shape[0], -1)
    if node.op_type == "Gemm" and attr(node, "transB", 0):
        return weight.reshape(weight.shape[0], -1)
    return weight.reshape(-1, weight.shape[-1]).T


def relative_index_bits(flat_nonzero: np.ndarray, bits: float) -> tuple[float, int]:
    """Cheapest relative-index storage (weights + gaps + fillers) of a flat 0/1 array, and its r."""
    if not flat_nonzero.any():
        return 0.0, 0
    gaps = gaps_of(flat_nonzero)
    best, best_r = math.inf, 1
    for r in range(1, MAX_RELATIVE_BITS + 1):
        entries = float(np.sum(1 + gaps // (1 << r)))
        cost = entries * (bits + r)
        if cost < best:
            best, best_r = cost, r
    return best, best_r


def nonzero_value_bits(bits: float) -> float:
    """Fixed-length bits of one stored non-zero on a b-bit grid: the zero code is never needed."""
    if float(bits).is_integer() and 1 <= bits <= 16:
        return float(math.ceil(math.log2(2 ** int(bits) - 1)))
    return float(bits)


def huffman_lengths(counts: Iterable[int]) -> list[int]:
    """Code length of each symbol of an optimal (Huffman) prefix code for these counts; 0 for a count of 0,
    1 when only one symbol occurs."""
    counts = [int(c) for c in counts]
    used = [i for i, c in enumerate(counts) if c > 0]
    lengths = [0] * len(counts)
    if len(used) == 1:
        lengths[used[0]] = 1
    if len(used) <= 1:
        return lengths
    heap = [(counts[i], i, [i]) for i in used]  # (weight, tie-break, leaves)
    heapq.heapify(heap)
    order = len(counts)
    while len(heap) > 1:
        w1, _, a = heapq.heappop(heap)
        w2, _, b = heapq.heappop(heap)
        for leaf in a + b:
            lengths[leaf] += 1
        heapq.heappush(heap, (w1 + w2, order, a + b))
        order += 1
    return lengths


def codebook_bits(lengths: list[int], alphabet: int) -> float:
    """Bits of a canonical Huffman codebook over ``alphabet`` symbols (the module header's formula)."""
    used = [x for x in lengths if x > 0]
    if not used:
        return 0.0
    width = math.ceil(math.log2(max(used) + 1))
    every = alphabet * width
    listed = len(used) * (math.ceil(math.log2(max(alphabet, 2))) + width)
    return float(CODEBOOK_HEADER_BITS + min(every, listed))


def huffman_stream_bits(counts: np.ndarray, alphabet: int) -> float:
    """Σ c_s·ℓ_s + the codebook of one Huffman-coded stream."""
    lengths = huffman_lengths(counts.tolist())
    return float(np.dot(counts, lengths)) + codebook_bits(lengths, alphabet)


def gaps_of(flat_nonzero: np.ndarray) -> np.ndarray:
    """Zeros before each non-zero since the previous one (the first counts from the array's start)."""
    positions = np.flatnonzero(flat_nonzero)
    return np.diff(np.concatenate([[-1], positions])) - 1


def huffman_gap_bits(gaps: np.ndarray, r: int, k: int = 0) -> float:
    """r-bit gaps with escape symbols, the low k bits raw and the high r − k Huffman-coded (alphabet
    2^(r−k) + 1), codebook included."""
    return _histogram_gap_bits(*np.unique(gaps, return_counts=True), r, k)


def _histogram_gap_bits(distinct: np.ndarray, times: np.ndarray, r: int, k: int) -> float:
    """:func:`huffman_gap_bits` from the gaps' histogram (each distinct gap and how often it occurs), so
    trying every (r, k) costs the number of distinct gaps, not of non-zeros."""
    span, symbols = 1 << r, 1 << (r - k)
    counts = np.bincount((distinct % span) >> k, weights=times, minlength=symbols + 1).astype(np.int64)
    counts[symbols] = int(np.sum((distinct // span) * times))  # the escape symbol E
    return huffman_stream_bits(counts, symbols + 1) + float(k * int(times.sum()))


def huffman_value_bits(values: np.ndarray, bits: float) -> float:
    """The non-zero values Huffman-coded over the 2^b − 1 non-zero codes of a b-bit grid, codebook
    included; b bits each (no codebook) when the layer is not on such a grid."""
    _, counts = np.unique(values, return_counts=True)
    alphabet = 2 ** int(bits) - 1 if float(bits).is_integer() and 1 <= bits <= MAX_HUFFMAN_VALUE_BITS else 0
    if counts.size == 0 or counts.size > alphabet:
        return float(values.size * bits)
    return huffman_stream_bits(np.concatenate([counts, np.zeros(alphabet - counts.size, np.int64)]), alphabet)


def huffman_bits(flat: np.ndarray, bits: float) -> tuple[float, tuple[int, int]]:
    """Cheapest Huffman storage (gaps + values + codebooks) of a flat weight array, and its (r, k)."""
    nonzero = flat != 0
    if not nonzero.any():
        return 0.0, (0, 0)
    gaps = gaps_of(nonzero)
    values = huffman_value_bits(flat[nonzero], bits)
    distinct, times = np.unique(gaps, return_counts=True)
    costs = {(r, k): _histogram_gap_bits(distinct, times, r, k)
             for r in range(1, MAX_RELATIVE_BITS + 1) for k in range(r + 1)}
    best = min(costs, key=lambda rk: costs[rk])
    count = math.ceil(math.log2(flat.size + 1))  # n, so that the decoder knows where the stream ends
    return costs[best] + values + count, best


def layer_storage(matrix: np.ndarray, bits: float) -> dict[str, Any]:
    rows, cols = matrix.shape
    params = matrix.size
    nonzero = matrix != 0
    nnz = int(nonzero.sum())
    value = nonzero_value_bits(bits)
    options = {
        "dense": params * bits,
        "bitmap": nnz * value + params,
        "csr": nnz * (value + math.ceil(math.log2(max(cols, 2)))) + (rows + 1) * math.ceil(math.log2(nnz + 1) or 1),
    }
    options["relative"], r = relative_index_bits(nonzero.reshape(-1), bits)
    options["huffman"], huffman_r = huffman_bits(matrix.reshape(-1), bits)
    form = min(options, key=lambda k: options[k])  # ties keep the first (simplest) format
    return {"params": int(params), "nonzero": nnz, "weight_bits": bits, "format": form,
            "relative_index_bits": r if form == "relative" else None,
            "huffman_index_bits": list(huffman_r) if form == "huffman" else None,  # [r, raw low bits k]
            "candidates": {k: float(v) for k, v in options.items()},
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


REFERENCE_KEY = "pimc.reference_storage"


def weighted_nodes(model: onnx.ModelProto) -> Iterable[tuple[onnx.NodeProto, np.ndarray, dict, dict]]:
    """(node, weight, initializers, producers) of every Conv / Gemm / MatMul with a constant ≥ 2-D weight."""
    inits = initializer_map(model.graph)
    prods = producers(model.graph)
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS or len(node.input) < 2:
            continue
        weight = constant_value(model, node.input[1], inits, prods)
        if weight is not None and weight.ndim >= 2:
            yield node, weight, inits, prods


def dense_fp32(model: onnx.ModelProto) -> dict[str, float]:
    """The model's weights (and their biases) stored dense in float32."""
    weights = biases = 0.0
    for node, weight, inits, prods in weighted_nodes(model):
        weights += 32.0 * weight.size
        biases += bias_bits(model, node, inits, prods)[1]
    return {"dense_fp32_bits": weights + biases, "dense_fp32_weight_bits": weights}


def stamp_reference(model: onnx.ModelProto, reference: dict[str, float] | None = None) -> None:
    """Record ``reference`` (default: the model's own dense fp32 size) as the storage reference, unless one
    is already recorded."""
    if recorded_reference(model) is None:
        text = json.dumps(reference or dense_fp32(model), sort_keys=True)
        model.metadata_props.add(key=REFERENCE_KEY, value=text)


def replace_reference(model: onnx.ModelProto, reference: dict[str, float]) -> None:
    """Record ``reference`` as the storage reference in place of any recorded one: an exporter's output gets
    the dense model it was made from, not an intermediate model a pipeline inside the exporter saw."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != REFERENCE_KEY]
    del model.metadata_props[:]
    for key, value in kept:
        model.metadata_props.add(key=key, value=value)
    stamp_reference(model, reference)


def recorded_reference(model: onnx.ModelProto) -> dict[str, float] | None:
    """The recorded reference, or None when absent or not two positive numbers."""
    text = next((p.value for p in model.metadata_props if p.key == REFERENCE_KEY), None)
    try:
        value = json.loads(text) if text is not None else None
        reference = {k: float(value[k]) for k in ("dense_fp32_bits", "dense_fp32_weight_bits")}
    except (ValueError, TypeError, KeyError):
        return None
    return reference if all(math.isfinite(v) and v > 0 for v in reference.values()) else None


def model_storage(model: onnx.ModelProto) -> dict[str, Any]:
    """Stored weight bits of every compute node and of the model, and the ratio to dense fp32."""
    layers = {}
    for node, weight, inits, prods in weighted_nodes(model):
        layer = layer_storage(layer_matrix(node, weight), node_bits(node))
        layer["weight_storage_bits"] = layer["bits"]
        layer["scale_bits"] = scale_bits(model, node.input[1], inits, prods)
        layer["bias_bits"], dense_bias = bias_bits(model, node, inits, prods)
        layer["bits"] += layer["scale_bits"] + layer["bias_bits"]
        layer["dense_fp32_bits"] += dense_bias
        layers[node.name or node.output[0]] = layer
    bits = sum(x["bits"] for x in layers.values())
    own = sum(x["dense_fp32_bits"] for x in layers.values())
    recorded = recorded_reference(model)
    dense = recorded["dense_fp32_bits"] if recorded else own
    dense_weights = recorded["dense_fp32_weight_bits"] if recorded else sum(32.0 * x["params"] for x in layers.values())
    weight_bits = sum(x["weight_storage_bits"] for x in layers.values())
    fixed = sum(min(v for k, v in x["candidates"].items() if k not in ENTROPY_FORMATS) for x in layers.values())
    return {"bits": float(bits), "dense_fp32_bits": float(dense),
            "reference": f"the model as brought to pimc ({REFERENCE_KEY})" if recorded else "this model",
            "dense_fp32_bits_this_model": float(own),
            "ratio": round(dense / bits, 3) if bits else None,
            "weights_ratio": round(dense_weights / weight_bits, 3) if weight_bits else None,
            "weights_ratio_fixed_length": round(dense_weights / fixed, 3) if fixed else None,
            "breakdown": {"weights_and_index": float(weight_bits),
                          "scales": float(sum(x["scale_bits"] for x in layers.values())),
                          "biases": float(sum(x["bias_bits"] for x in layers.values()))},
            "layers": layers}
