"""eliminate-identity: remove nodes that do not change their input.

* Identity, and Dropout in inference (when its mask output is unused);
* Reshape / Flatten whose inferred output shape equals the input shape;
* Reshape → Reshape chains collapse into the last Reshape (when the first one has no other reader and the
  last target shape has no 0 "copy" entries, which would refer to the intermediate shape).
"""

from __future__ import annotations

import onnx

from ...compiler.graph import bypass, consumers, get_initializer, graph_output_names, value_shapes
from ...compiler.passbase import Pass, PassContext, PassResult


class EliminateIdentity(Pass, name="eliminate-identity", exact=True):
    """Remove Identity, inference Dropout and no-op Reshape/Flatten chains (exact)."""

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        removed: list[str] = []
        changed = True
        while changed:
            changed = self._one_round(model, removed)
        return PassResult(model, bool(removed), {"removed": removed})

    def _one_round(self, model: onnx.ModelProto, removed: list[str]) -> bool:
        graph = model.graph
        shapes = value_shapes(model)
        for node in list(graph.node):
            if _is_noop(node, graph, shapes) and bypass(graph, node):
                removed.append(node.name)
                return True
            if _collapse_reshape_chain(node, graph):
                removed.append(node.name)
                return True
        return False


def _is_noop(node: onnx.NodeProto, graph: onnx.GraphProto, shapes) -> bool:
    if node.op_type == "Identity":
        return True
    if node.op_type == "Dropout":
        readers = consumers(graph)
        mask_used = len(node.output) > 1 and node.output[1] and (
            readers.get(node.output[1]) or node.output[1] in graph_output_names(graph)
        )
        return not mask_used
    if node.op_type in ("Reshape", "Flatten"):
        src, dst = shapes.get(node.input[0]), shapes.get(node.output[0])
        return src is not None and dst is not None and src == dst and all(d is not None for d in src)
    return False


def _collapse_reshape_chain(node: onnx.NodeProto, graph: onnx.GraphProto) -> bool:
    if node.op_type != "Reshape":
        return False
    target = get_initializer(graph, node.input[1])
    if target is None or (target == 0).any():
        return False
    readers = consumers(graph)
    first = next((n for n in graph.node if node.input[0] in n.output), None)
    if first is None or first.op_type not in ("Reshape", "Flatten"):
        return False
    if len(readers.get(first.output[0], [])) != 1 or first.output[0] in graph_output_names(graph):
        return False
    node.input[0] = first.input[0]
    graph.node.remove(first)
    return True
