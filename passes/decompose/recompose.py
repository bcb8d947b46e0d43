"""recompose: fold basis/coefficient pairs back into one dense conv where that runs faster on onnxruntime.

A pair (depthwise basis B with Cin groups of d kernels, 1×1 coefficients C[Cout, Cin·d], biases b_B,
b_C) computes  y[o] = b_C[o] + Σ_{c,j} C[o, c·d+j] · (b_B[c·d+j] + x_c ∗ B_{c,j}), which is the single conv
    W[o, c] = Σ_j C[o, c·d+j] · B_{c,j},     b[o] = b_C[o] + Σ_{c,j} C[o, c·d+j] · b_B[c·d+j]
with the basis conv's stride, pads and dilation. The identity is exact (only float rounding differs).

Cost rule (``mode=auto``). onnxruntime does not skip zero weights, so the two forms cost
    dense       = H'·W'·Cout·Cin·k²                      MACs
    decomposed  = H'·W'·(Cin·d·k² + Cout·Cin·d)          MACs,
and the two-conv form is slower per MAC: ``benchmarks/decompose_layout.py`` measured a time-per-MAC
penalty of 2.3–3.7× (median 2.8×) for the depthwise-with-multiplier + 1×1 pair over a dense 3×3 on
this machine's onnxruntime CPU provider (batch 1 and 64, 8–32 px maps, 16–64 channels; the depthwise
stage is memory-bound). A pair is recomposed when dense ≤ ``penalty`` · decomposed (default 2.8), i.e.
unless the rank d is far below k² relative to the channel counts. ``always`` / ``never`` override it.
Run ``shrink`` first so both forms are costed at their shrunk shapes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper

from ...compiler.annotations import PREFIX, set_node_annotation
from ...compiler.graph import all_names, set_initializer, unique_name
from ...compiler.passbase import Option, Pass, PassContext, PassResult
from ._common import conv_bias, conv_weight, dense_weight, find_pairs, pair_layer_name

_COPIED_ATTRS = ("strides", "pads", "dilations", "auto_pad")
MEASURED_PENALTY = 2.8


class Recompose(Pass, name="recompose"):
    """Fold basis/coefficient pairs into one dense conv where that is faster on onnxruntime (exact)."""

    options = (
        Option("mode", str, "auto", "auto: cost rule; always / never", choices=("auto", "always", "never")),
        Option("penalty", float, MEASURED_PENALTY, "measured time-per-MAC penalty of the two-conv form",
               minimum=0.0),
    )
    exact = True
    tolerance = 1e-4

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        folded: list[dict[str, Any]] = []
        kept: list[dict[str, Any]] = []
        if self.opts["mode"] == "never":
            return PassResult(model, False, {"recomposed": [], "kept": []})
        for pair in find_pairs(model, require_annotation=True):
            cout = conv_weight(model.graph, pair.coefficient).shape[0]
            k2 = pair.kernel[0] * pair.kernel[1]
            dense = cout * pair.cin * k2
            decomposed = pair.cin * pair.rank * k2 + cout * pair.cin * pair.rank
            info = {"layer": pair_layer_name(pair), "cin": pair.cin, "cout": int(cout), "rank": pair.rank,
                    "dense_macs_per_pixel": int(dense), "decomposed_macs_per_pixel": int(decomposed)}
            if self.opts["mode"] == "always" or dense <= self.opts["penalty"] * decomposed:
                _fold(model, pair)
                folded.append(info)
            else:
                kept.append(info)
        return PassResult(model, bool(folded), {"recomposed": folded, "kept": kept})


def _fold(model: onnx.ModelProto, pair) -> None:
    graph = model.graph
    basis_w = conv_weight(graph, pair.basis)
    coef_w = conv_weight(graph, pair.coefficient)
    weight = dense_weight(basis_w, coef_w, pair.cin)
    cout = coef_w.shape[0]
    bias = np.zeros(cout, np.float64)
    coef_bias = conv_bias(graph, pair.coefficient)
    basis_bias = conv_bias(graph, pair.basis)
    has_bias = coef_bias is not None or basis_bias is not None
    if coef_bias is not None:
        bias += coef_bias.astype(np.float64)
    if basis_bias is not None:
        bias += coef_w.reshape(cout, -1).astype(np.float64) @ basis_bias.astype(np.float64)
    names = all_names(graph)
    layer = pair_layer_name(pair)
    w_name = unique_name(names, f"{layer}.recomposed_weight")
    set_initializer(graph, w_name, weight.astype(coef_w.dtype))
    inputs = [pair.basis.input[0], w_name]
    if has_bias:
        b_name = unique_name(names, f"{layer}.recomposed_bias")
        set_initializer(graph, b_name, bias.astype(coef_w.dtype))
        inputs.append(b_name)
    node = helper.make_node("Conv", inputs, list(pair.coefficient.output), name=unique_name(names, layer))
    node.attribute.extend(a for a in pair.basis.attribute if a.name in _COPIED_ATTRS)
    node.attribute.append(helper.make_attribute("kernel_shape", list(weight.shape[2:])))
    for prop in pair.coefficient.metadata_props:
        if prop.key not in (PREFIX + k for k in ("role", "rank", "kernel", "layer", "weight_bits")):
            node.metadata_props.add(key=prop.key, value=prop.value)
    set_node_annotation(node, "recomposed_from", layer)
    index = list(graph.node).index(pair.basis)
    graph.node.remove(pair.coefficient)
    graph.node.remove(pair.basis)
    graph.node.insert(index, node)
