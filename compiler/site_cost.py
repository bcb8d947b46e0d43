"""A layer's cost on the target, at the cost of that layer: the site alone, lowered and costed.

Every target here costs a model as a sum over its layers (layers run one after another; see each backend's
header), so the change a candidate makes to the whole model's (latency, energy) equals the change it makes
to a model holding only the rewritten layer:
    cost(M with site s rewritten) − cost(M) = cost(site_model(s) rewritten) − cost(site_model(s))
``site_model`` copies the node, its constant inputs and the shapes of the rest, so a candidate's
``preview`` writes into a model of one layer and the target lowers that one layer, not the whole network.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx
from onnx import helper

from .loader import infer_shapes
from .modelio import copy_model

CostFn = Callable[[onnx.ModelProto], tuple[float, float]]


def site_model(model: onnx.ModelProto, node_name: str) -> onnx.ModelProto:
    """A model of the one node ``node_name``: its initializers copied, its other inputs graph inputs."""
    graph = model.graph
    node = next(n for n in graph.node if n.name == node_name)
    inits = {i.name: i for i in graph.initializer}
    infos = {v.name: v for v in (*graph.input, *graph.value_info, *graph.output)}
    inputs = [_info(infos, name) for name in node.input if name and name not in inits]
    outputs = [_info(infos, name) for name in node.output if name]
    used = [inits[name] for name in node.input if name in inits]
    mini = helper.make_graph([node], f"site_{node_name}", inputs, outputs, initializer=used)
    out = helper.make_model(mini, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return infer_shapes(out, f"layer {node_name}")


def _info(infos: dict[str, onnx.ValueInfoProto], name: str) -> onnx.ValueInfoProto:
    return infos[name] if name in infos else helper.make_empty_tensor_value_info(name)


class SiteCoster:
    """(latency_s, energy_j) of one layer as it is and as each candidate would rewrite it."""

    def __init__(self, model: onnx.ModelProto, cost_fn: CostFn):
        self.model = model
        self.cost_fn = cost_fn
        self._sites: dict[str, tuple[onnx.ModelProto, tuple[float, float]]] = {}
        self.evaluations = 0

    def base(self, node_name: str) -> tuple[float, float]:
        return self._site(node_name)[1]

    def rewritten(self, node_name: str, write: Callable[[onnx.ModelProto], None]) -> tuple[float, float]:
        trial = copy_model(self._site(node_name)[0])
        write(trial)
        self.evaluations += 1
        return self.cost_fn(infer_shapes(trial, f"candidate for {node_name}"))

    def _site(self, node_name: str) -> tuple[onnx.ModelProto, tuple[float, float]]:
        if node_name not in self._sites:
            mini = site_model(self.model, node_name)
            self._sites[node_name] = (mini, self.cost_fn(mini))
        return self._sites[node_name]
