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
from typing import Any

import onnx

from ...compiler.annotations import get_node_annotation, set_node_annotation
from ...compiler.graph import (
    get_initializer,
    remove_value_info,
)
from ...compiler.loader import infer_shapes
from ...compiler.passbase import Pass, PassContext, PassResult
from ..decompose._common import BASIS, COEFFICIENT
from .analysis import analyse, removable_sets
from .rewrite import apply_removal

MAX_ROUNDS = 50  # analysis and rewrite repeat until nothing more can go


class Shrink(Pass, name="shrink", exact=True):
    """Remove dead channels, unused basis kernels and all-zero filters across layers (exact)."""

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
            analysis = analyse(model)
            removable = removable_sets(model, analysis, blocked)
            if not any(removable.values()):
                break
            apply_removal(model, analysis, removable, removed)
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
