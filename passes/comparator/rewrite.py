"""The comparator-conv rewrite of one site: anchor conv, comparison, 1×1 conv and their annotations (the
math: ``comparator_conv.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from ...compiler import annotations as ann
from ...compiler.errors import PimcError
from ...compiler.graph import (
    all_names,
    remove_initializers,
    set_initializer,
    unique_name,
)


@dataclass
class ConvSite:
    """One convolution chosen for substitution, with everything the fit needs."""

    node: onnx.NodeProto
    weight: np.ndarray
    bias: np.ndarray | None
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilations: tuple[int, int]
    out_hw: tuple[int, int]

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def cout(self) -> int:
        return int(self.weight.shape[0])

    @property
    def cin(self) -> int:
        return int(self.weight.shape[1])

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])


def rewrite_site(
    model: onnx.ModelProto, site: ConvSite, anchors: np.ndarray, pointwise: np.ndarray, bias: np.ndarray,
    opts: dict[str, Any],
) -> None:
    """Replace the conv node by anchor Conv → comparator → 1×1 Conv, keeping its output name."""
    graph = model.graph
    names = all_names(graph)
    node = _node_by_name(model, site.name)
    anchor_w = unique_name(names, f"{site.name}.anchor.weight")
    pw_w = unique_name(names, f"{site.name}.lbc_pointwise.weight")
    pw_b = unique_name(names, f"{site.name}.lbc_pointwise.bias")
    set_initializer(graph, anchor_w, anchors.astype(np.float32))
    set_initializer(graph, pw_w, pointwise.reshape(site.cout, -1, 1, 1))
    set_initializer(graph, pw_b, bias.reshape(-1))
    anchor_out = unique_name(names, f"{site.name}.anchor_out")
    compared = unique_name(names, f"{site.name}.compared")
    groups = 1 if opts["variant"] == "lbc" else site.cin
    kept = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name not in ("group",)}
    anchor = helper.make_node("Conv", [node.input[0], anchor_w], [anchor_out],
                              name=unique_name(names, f"{site.name}.anchor"), group=groups, **kept)
    comparison, comparator = _comparison_nodes(names, site.name, anchor_out, compared, opts["comparator"])
    pw = helper.make_node("Conv", [compared, pw_w, pw_b], [node.output[0]],
                          name=unique_name(names, f"{site.name}.lbc_pointwise"), kernel_shape=[1, 1])
    _annotate(site, anchor, comparator, pw, anchors, opts)
    position = list(graph.node).index(node)
    graph.node.remove(node)
    for offset, new in enumerate([anchor, *comparison, pw]):
        graph.node.insert(position + offset, new)
    _drop_if_unused(graph, [i for i in node.input[1:] if i])


def _comparison_nodes(
    names: set[str], layer: str, source: str, dest: str, comparator: str
) -> tuple[list[onnx.NodeProto], onnx.NodeProto]:
    """The comparison with zero (Relu, or Greater → Cast for the binary bit) and its comparing node."""
    if comparator == "relu":
        relu = helper.make_node("Relu", [source], [dest], name=unique_name(names, f"{layer}.comparator"))
        return [relu], relu
    zero = unique_name(names, f"{layer}.comparator.zero")
    bits = unique_name(names, f"{layer}.comparator_bits")
    greater = helper.make_node("Greater", [source, zero], [bits], name=unique_name(names, f"{layer}.comparator"))
    return [
        helper.make_node("Constant", [], [zero], name=unique_name(names, f"{layer}.comparator_zero"),
                         value=helper.make_tensor(zero, TensorProto.FLOAT, [], [0.0])),
        greater,
        helper.make_node("Cast", [bits], [dest], name=unique_name(names, f"{layer}.comparator_cast"),
                         to=TensorProto.FLOAT),
    ], greater


def _annotate(site: ConvSite, anchor, comparison, pw, anchors: np.ndarray, opts: dict[str, Any]) -> None:
    density = float(np.count_nonzero(anchors) / anchors.size)
    for key, value in (("role", "anchor"), ("layer", site.name), ("anchor_density", round(density, 6)),
                       ("seed", opts["seed"]), ("variant", opts["variant"])):
        ann.set_node_annotation(anchor, key, value)
    ann.set_node_annotation(comparison, "role", "comparator")
    ann.set_node_annotation(comparison, "layer", site.name)
    ann.set_node_annotation(comparison, "comparator", opts["comparator"])
    annotate_pointwise(pw, site.name, site.cin, site.cout, list(site.kernel), 1, int(anchors.shape[0]),
                       opts["variant"], opts["comparator"])
    ann.set_node_annotation(pw, "fit_error", round(float(opts["fit_error"]), 6))


def annotate_pointwise(
    node: onnx.NodeProto, layer: str, cin: int, cout: int, kernel: list[int], groups: int, anchors: int,
    variant: str, comparator: str,
) -> None:
    """The pointwise node's annotations: role, the original conv's shape (for the cnn baseline), ..."""
    values = {
        "role": "lbc_pointwise", "layer": layer, "original_cin": cin, "original_cout": cout, "kernel": kernel,
        "original_groups": groups, "anchors": anchors, "variant": variant, "comparator": comparator,
    }
    if comparator == "binary":
        values["act_bits"] = 1
    for key, value in values.items():
        ann.set_node_annotation(node, key, value)


def _drop_if_unused(graph: onnx.GraphProto, names: list[str]) -> None:
    used = {i for n in graph.node for i in n.input}
    remove_initializers(graph, [name for name in names if name not in used])


def _node_by_name(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    for node in model.graph.node:
        if node.name == name:
            return node
    raise PimcError(f"comparator-conv: internal error, node '{name}' not found")
