"""Small helpers over ``onnx.GraphProto``: lookups, attributes, producers and consumers."""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper


def initializer_map(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in graph.initializer}


def get_initializer(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    return None


def set_initializer(graph: onnx.GraphProto, name: str, array: np.ndarray) -> None:
    """Replace (or add) an initializer, keeping its position so output files stay deterministic."""
    tensor = numpy_helper.from_array(np.asarray(array, order="C"), name)
    for i, init in enumerate(graph.initializer):
        if init.name == name:
            graph.initializer[i].CopyFrom(tensor)
            return
    graph.initializer.append(tensor)


def add_initializer(graph: onnx.GraphProto, name: str, array: np.ndarray) -> None:
    """Append an initializer under a name no tensor has yet (e.g. from ``unique_name``)."""
    graph.initializer.append(numpy_helper.from_array(np.asarray(array, order="C"), name))


def remove_initializers(graph: onnx.GraphProto, names: Iterable[str]) -> None:
    """Remove initializers and the graph inputs that list them (IR 3 style, or
    ``keep_initializers_as_inputs``), so no removed weight is left behind as a required feed.

    Every pass that drops initializers goes through here: inputs and initializers stay in step."""
    drop = set(names)
    if not drop:
        return
    _delete_named(graph.initializer, drop)
    _delete_named(graph.input, drop)


def _delete_named(items, drop: set[str]) -> None:
    """Delete in place, from the back: rebuilding the list would copy every remaining tensor."""
    for i in reversed([i for i, item in enumerate(items) if item.name in drop]):
        del items[i]


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """Tensor name -> the node that produces it."""
    return {out: node for node in graph.node for out in node.output if out}


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it (including subgraph reads are ignored)."""
    result: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            if name:
                result[name].append(node)
    return result


def graph_output_names(graph: onnx.GraphProto) -> set[str]:
    return {o.name for o in graph.output}


def value_shapes(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    """Shapes known for every tensor (inputs, outputs, value_info, initializers)."""
    shapes: dict[str, list[int | str | None]] = {}
    g = model.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim
            ]
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (old opsets list weights as inputs too)."""
    inits = {init.name for init in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def unique_name(existing: set[str], base: str) -> str:
    """A name not in ``existing``; adds it to the set."""
    name, i = base, 1
    while name in existing:
        name = f"{base}_{i}"
        i += 1
    existing.add(name)
    return name


def all_names(graph: onnx.GraphProto) -> set[str]:
    names = {n.name for n in graph.node}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    names.update(i.name for i in graph.initializer)
    names.update(i.name for i in graph.input)
    return names


def opset_version(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


def conv_weight(graph: onnx.GraphProto, node: onnx.NodeProto) -> np.ndarray | None:
    """The Conv/Gemm/MatMul weight if it is a constant initializer."""
    if len(node.input) < 2:
        return None
    return get_initializer(graph, node.input[1])


def rename_input_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every node that reads ``old`` reads ``new`` instead."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def bypass(graph: onnx.GraphProto, node: onnx.NodeProto) -> bool:
    """Remove a node whose first output equals its first input, rewiring readers. False if unsafe.

    When the node's output is a graph output, the producer of its input is renamed to keep the
    graph's interface, which is only safe when nothing else reads that tensor.
    """
    src, dst = node.input[0], node.output[0]
    if dst in graph_output_names(graph):
        prod = producers(graph).get(src)
        readers = consumers(graph).get(src, [])
        if prod is None or len(readers) != 1 or src in graph_output_names(graph):
            return False
        for i, name in enumerate(prod.output):
            if name == src:
                prod.output[i] = dst
    else:
        rename_input_uses(graph, dst, src)
    graph.node.remove(node)
    return True


def remove_value_info(graph: onnx.GraphProto) -> None:
    del graph.value_info[:]


def subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Every tensor name read inside the node's subgraphs (If/Loop/Scan bodies), recursively."""
    reads: set[str] = set()
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            subgraphs = [a.g]
        elif a.type == onnx.AttributeProto.GRAPHS:
            subgraphs = list(a.graphs)
        else:
            continue
        for g in subgraphs:
            for n in g.node:
                reads.update(i for i in n.input if i)
                reads.update(subgraph_reads(n))
    return reads


def _kahn(graph: onnx.GraphProto) -> list[int]:
    """Stable Kahn order of node indices; nodes on (or behind) a cycle are missing from it."""
    nodes = list(graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    users: list[list[int]] = [[] for _ in nodes]
    waiting = [0] * len(nodes)
    for i, node in enumerate(nodes):
        deps = {producer[r] for r in ({x for x in node.input if x} | subgraph_reads(node)) if r in producer}
        deps.discard(i)
        waiting[i] = len(deps)
        for j in deps:
            users[j].append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    return order


def topological_order(graph: onnx.GraphProto) -> list[int] | None:
    """A stable topological order of the node indices (original order wherever dependencies allow);
    None when the graph has a cycle."""
    order = _kahn(graph)
    return order if len(order) == len(graph.node) else None


def cycle_nodes(graph: onnx.GraphProto) -> list[str]:
    """Names (or op types) of the nodes no topological order can place: a cycle and what depends on it."""
    placed = set(_kahn(graph))
    return [n.name or n.op_type for i, n in enumerate(graph.node) if i not in placed]


def sort_nodes(graph: onnx.GraphProto) -> bool | None:
    """Sort the nodes topologically in place (stable). True if the order changed, None on a cycle."""
    order = topological_order(graph)
    if order is None:
        return None
    if order == list(range(len(order))):
        return False
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)
    return True


def selection_miss(name: str, include: list[str], exclude: list[str]) -> str | None:
    """Why a node name is left out by ``include``/``exclude`` glob patterns, or None if it is selected."""
    import fnmatch

    if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
        return "not matched by include"
    if any(fnmatch.fnmatchcase(name, p) for p in exclude):
        return "matched by exclude"
    return None
