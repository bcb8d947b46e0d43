"""fold-batchnorm: Conv followed by BatchNormalization becomes one Conv.

    y = γ · (conv(x, W) + b − μ) / √(σ² + ε) + β
      = conv(x, s·W) + (s·(b − μ) + β)        with s = γ / √(σ² + ε), per output channel.

Exact up to float rounding. Applies only when the Conv's output feeds the BatchNormalization alone and
all BN parameters are constants (inference-mode BN with a single output).
"""

from __future__ import annotations

import numpy as np
import onnx

from ...compiler.graph import (
    all_names,
    attr,
    consumers,
    get_initializer,
    graph_output_names,
    set_initializer,
    unique_name,
)
from ...compiler.passbase import Pass, PassContext, PassResult, register_pass


@register_pass
class FoldBatchnorm(Pass):
    name = "fold-batchnorm"
    summary = "Fold BatchNormalization into the preceding Conv (exact)"
    exact = True

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        folded = []
        while True:
            pair = _find_foldable(model.graph)
            if pair is None:
                break
            _fold(model.graph, *pair)
            folded.append(pair[0].name)
        return PassResult(model, bool(folded), {"folded": folded})


def _find_foldable(graph: onnx.GraphProto):
    readers = consumers(graph)
    outputs = graph_output_names(graph)
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.output[0] in outputs:
            continue
        users = readers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "BatchNormalization":
            continue
        bn = users[0]
        if len([o for o in bn.output if o]) != 1 or attr(bn, "training_mode", 0):
            continue
        if get_initializer(graph, node.input[1]) is None:
            continue
        if any(get_initializer(graph, name) is None for name in bn.input[1:5]):
            continue
        return node, bn
    return None


def _fold(graph: onnx.GraphProto, conv: onnx.NodeProto, bn: onnx.NodeProto) -> None:
    gamma, beta, mean, var = (get_initializer(graph, n).astype(np.float64) for n in bn.input[1:5])
    eps = attr(bn, "epsilon", 1e-5)
    weight = get_initializer(graph, conv.input[1])
    scale = gamma / np.sqrt(var + eps)
    bias = get_initializer(graph, conv.input[2]).astype(np.float64) if len(conv.input) > 2 and conv.input[2] else 0.0
    new_w = (weight.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype(weight.dtype)
    new_b = (scale * (bias - mean) + beta).astype(weight.dtype)
    names = all_names(graph)
    w_name = unique_name(names, f"{conv.name}.weight_bnfolded")
    b_name = unique_name(names, f"{conv.name}.bias_bnfolded")
    set_initializer(graph, w_name, new_w)
    set_initializer(graph, b_name, new_b)
    conv.input[1] = w_name
    if len(conv.input) > 2:
        conv.input[2] = b_name
    else:
        conv.input.append(b_name)
    conv.output[0] = bn.output[0]
    graph.node.remove(bn)
