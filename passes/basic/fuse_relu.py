"""fuse-relu: mark Conv/Gemm → Relu pairs whose ReLU a target can fuse (the CiM macro resolves the sign
first and skips the rest of the A/D conversion for negative pre-activations).

The pass only annotates: the producer gets ``pimc.fused_activation = "Relu"`` and the Relu gets
``pimc.fused_into = <producer>``. It also measures, on calibration inputs (``--data``; random inputs
otherwise, which the annotation says), the fraction of negative pre-activations:
``pimc.neg_fraction`` and ``pimc.neg_fraction_source``. The graph computes exactly what it did.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ...compiler import annotations as ann
from ...compiler.graph import consumers, graph_output_names
from ...compiler.passbase import Option, Pass, PassContext, PassResult
from ...compiler.verify import run_model

_FUSABLE = ("Conv", "Gemm", "MatMul")


class FuseRelu(Pass, name="fuse-relu", exact=True):
    """Mark Conv→Relu pairs for ReLU fusion and measure the negative fraction (annotation only)."""

    options = (
        Option("measure", bool, True, "measure the negative pre-activation fraction on the --data "
               "calibration samples (never on random inputs: without data nothing is measured)"),
        Option("samples", int, 64, "calibration samples used for the measurement", minimum=1),
    )

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        pairs = find_pairs(model.graph)
        for producer, relu in pairs:
            ann.set_node_annotation(producer, "fused_activation", "Relu")
            ann.set_node_annotation(relu, "fused_into", producer.name)
        fractions: dict[str, float] = {}
        if pairs and self.opts["measure"] and ctx.has_real_data:
            fractions = measure_negative_fraction(model, [p for p, _ in pairs], ctx, self.opts["samples"])
            for producer, _ in pairs:
                ann.set_node_annotation(producer, "neg_fraction", round(fractions[producer.name], 6))
                ann.set_node_annotation(producer, "neg_fraction_source", ctx.data_spec)
        return PassResult(model, bool(pairs), {"marked": [p.name for p, _ in pairs], "neg_fraction": fractions},
                          annotations_only=True)


def find_pairs(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    readers = consumers(graph)
    outputs = graph_output_names(graph)
    pairs = []
    for node in graph.node:
        if node.op_type not in _FUSABLE or node.output[0] in outputs:
            continue
        users = readers.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type == "Relu":
            pairs.append((node, users[0]))
    return pairs


def measure_negative_fraction(
    model: onnx.ModelProto, producers: list[onnx.NodeProto], ctx: PassContext, samples: int
) -> dict[str, float]:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = graph_output_names(probe.graph)
    for node in producers:
        if node.output[0] not in existing:
            probe.graph.output.append(helper.make_empty_tensor_value_info(node.output[0]))
    feeds = ctx.calibration_feeds(model, count=max(1, min(samples, 8)))
    names = [o.name for o in probe.graph.output]
    negative = dict.fromkeys((n.output[0] for n in producers), 0)
    total = dict.fromkeys((n.output[0] for n in producers), 0)
    for outs in run_model(probe, feeds):
        for name, value in zip(names, outs, strict=True):
            if name in negative:
                negative[name] += int(np.count_nonzero(np.asarray(value) < 0))
                total[name] += int(np.asarray(value).size)
    return {n.name: negative[n.output[0]] / max(total[n.output[0]], 1) for n in producers}
