"""channel-prune: remove whole output channels (filters) of Conv / Gemm layers, with every channel they are tied
to, and narrow every layer that reads them.

Channel groups. ``shrink``'s analysis (``passes/shrink/analysis.py``) joins the tensors whose channels are the
same channels into *spaces*: a residual Add ties its two inputs and its output, Concat-free elementwise ops
and pooling pass channels through, a Flatten feeding an FC layer links the FC's columns. A space's
*producers* are the layers that write it (for a residual stream: the stem and the last conv of every block).
Channel c of a space goes only with all its producers' filter c (DepGraph's rule: tied channels go together
or not at all). A space is left alone, with its reason, when the analysis froze it (a graph input or output,
an op it cannot see through), when a depthwise or MatMul layer writes it (the coupling is not modelled), or
when a producer's weight is quantized.

Saliency and strength (forced, ``ratio``). For space S with producers P and width C, channel c scores

    s_c = Σ_{p ∈ P}  ‖W_p[c]‖² / mean_c' ‖W_p[c']‖²          (each producer normalised by its mean filter energy)

and the ⌊ratio · C⌋ lowest are removed, the kept count rounded up to a multiple of ``block`` (onnxruntime's
CPU convolutions work in blocks of 8 channels with AVX2, 16 with AVX-512; a narrower layer still pays for a
block), never below one block. Removing means: every producer's filter c and bias c become zero, so channel
c is the constant 0 everywhere in the space (BatchNorms are folded before; ReLU keeps 0), and ``shrink`` then
drops it from the producers and the readers exactly. The pass is therefore exactly "the original model with
those filters zeroed", narrowed. It changes the outputs (a lossy pass); no refit and no search under the
accuracy budget yet: without ``ratio`` it changes nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from ...compiler.graph import attr, get_initializer, set_initializer
from ...compiler.passbase import Option, Pass, PassContext, PassResult
from ..shrink.analysis import Analysis, ChannelLayer, analyse
from ..shrink.shrink import Shrink


class ChannelPrune(Pass, name="channel-prune"):
    """Remove whole filters with the channels tied to them (residual Adds), then narrow every reader (shrink)."""

    options = (
        Option("ratio", float, None, "fraction of each channel group's channels removed, lowest filter energy "
               "first (forced; unset: nothing is removed)", minimum=0.0, maximum=0.95),
        Option("block", int, 8, "keep a multiple of this many channels per group (onnxruntime's CPU block: 8 "
               "with AVX2, 16 with AVX-512)", minimum=1),
    )

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        ratio = self.opts["ratio"]
        if not ratio:
            return PassResult(model, False, {"skipped": "no ratio: channel-prune removes channels only when forced"})
        analysis = analyse(model)
        groups, skipped = [], []
        for sid, width in sorted(analysis.width.items()):
            producers = [layer for layer in analysis.layers if analysis.space.get(layer.dst) == sid]
            reason = _unprunable(model.graph, analysis, sid, producers)
            if reason:
                if producers:
                    skipped.append({"layers": [p.node.name for p in producers], "reason": reason})
                continue
            remove = chosen_channels(producers, width, ratio, self.opts["block"])
            if remove:
                for layer in producers:
                    _zero_filters(model.graph, layer, remove)
                groups.append({"layers": [p.node.name for p in producers], "width": width,
                               "removed": [int(c) for c in remove]})
        if not groups:
            return PassResult(model, False, {"groups": [], "skipped": skipped})
        narrowed = Shrink().run(model, ctx)
        stats: dict[str, Any] = {"groups": groups, "skipped": skipped,
                                 "channels_removed": narrowed.stats.get("channels_removed", 0)}
        return PassResult(narrowed.model, True, stats)


def _unprunable(graph: onnx.GraphProto, a: Analysis, sid: str, producers: list[ChannelLayer]) -> str | None:
    if sid in a.frozen:
        return a.frozen[sid]
    if not producers:
        return "no layer writes these channels"
    if any(p.kind not in ("conv", "gemm") for p in producers):
        return "written by a depthwise or MatMul layer (coupling not modelled)"
    if any(p.weight_dq is not None or p.bias_dq is not None for p in producers):
        return "a producer's weights are quantized"
    stored = {t.name for t in graph.initializer}
    if any(p.node.input[1] not in stored or (len(p.node.input) > 2 and p.node.input[2] and p.node.input[2]
                                                 not in stored) for p in producers):
        return "a producer's weight or bias is not an initializer"
    return None


def chosen_channels(producers: list[ChannelLayer], width: int, ratio: float, block: int) -> list[int]:
    """The channels to remove: the lowest summed normalised filter energy, the kept count a multiple of
    ``block`` (at least one block, at most the width)."""
    score = np.zeros(width)
    for layer in producers:
        energy = np.square(layer.weight.reshape(layer.weight.shape[0], -1)).sum(axis=1)
        score += energy / max(float(energy.mean()), 1e-30)
    keep = int(np.ceil((1.0 - ratio) * width / block) * block)
    keep = min(width, max(block, keep))
    if keep >= width:
        return []
    return sorted(int(c) for c in np.argsort(score, kind="stable")[: width - keep])


def _zero_filters(graph: onnx.GraphProto, layer: ChannelLayer, channels: list[int]) -> None:
    """Filter c and bias c of the layer's stored tensors become zero."""
    node = layer.node
    name = node.input[1]
    weight = get_initializer(graph, name).copy()
    if layer.kind == "gemm" and not attr(node, "transB", 0):
        weight[:, channels] = 0.0  # stored [in, out]
    else:
        weight[channels] = 0.0
    set_initializer(graph, name, weight)
    if len(node.input) > 2 and node.input[2]:
        bias = get_initializer(graph, node.input[2]).copy()
        bias[..., channels] = 0.0  # a Gemm's C may be [out] or [1, out]
        set_initializer(graph, node.input[2], bias)
