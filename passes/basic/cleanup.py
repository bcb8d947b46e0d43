"""cleanup: remove dead nodes and unused initializers, then sort the graph topologically.

A node is dead when none of its outputs reaches a graph output. Initializers referenced by a node's
``pimc.maps`` annotation are kept (they carry per-element compression maps). The sort is stable: nodes
keep their relative order wherever the data dependencies allow it.
"""

from __future__ import annotations

import onnx

from ...compiler.annotations import referenced_map_names
from ...compiler.errors import PimcError
from ...compiler.graph import graph_output_names, remove_initializers
from ...compiler.passbase import Pass, PassContext, PassResult, register_pass


@register_pass
class Cleanup(Pass):
    name = "cleanup"
    summary = "Remove dead nodes and unused initializers; stable topological sort (exact)"
    exact = True

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        graph = model.graph
        dead = remove_dead_nodes(graph)
        unused = remove_unused_initializers(model)
        reordered = toposort(graph)
        changed = bool(dead or unused or reordered)
        return PassResult(model, changed, {"dead_nodes": dead, "unused_initializers": unused, "reordered": reordered})


def remove_dead_nodes(graph: onnx.GraphProto) -> list[str]:
    live: set[str] = set(graph_output_names(graph))
    keep: list[onnx.NodeProto] = []
    dead: list[str] = []
    for node in reversed(graph.node):
        if any(o in live for o in node.output if o):
            keep.append(node)
            live.update(i for i in node.input if i)
            live.update(_subgraph_reads(node))
        else:
            dead.append(node.name)
    if dead:
        keep.reverse()
        del graph.node[:]
        graph.node.extend(keep)
    return sorted(dead)


def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    reads: set[str] = set()
    for a in node.attribute:
        subgraphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for g in subgraphs:
            for n in g.node:
                reads.update(n.input)
                reads.update(_subgraph_reads(n))
    return reads


def remove_unused_initializers(model: onnx.ModelProto) -> list[str]:
    graph = model.graph
    used: set[str] = set(graph_output_names(graph)) | referenced_map_names(model)
    for node in graph.node:
        used.update(node.input)
        used.update(_subgraph_reads(node))
    unused = sorted(init.name for init in graph.initializer if init.name not in used)
    if unused:
        remove_initializers(graph, unused)
        drop = set(unused)
        inputs = [i for i in graph.input if i.name not in drop]
        del graph.input[:]
        graph.input.extend(inputs)
    return unused


def toposort(graph: onnx.GraphProto) -> bool:
    """Stable Kahn sort; True when the order changed. A cycle is an error."""
    nodes = list(graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    deps: list[set[int]] = []
    for node in nodes:
        reads = {i for i in node.input if i} | _subgraph_reads(node)
        deps.append({producer[r] for r in reads if r in producer} - set())
    waiting = [len(d) for d in deps]
    users: list[list[int]] = [[] for _ in nodes]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    import heapq

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
    if len(order) != len(nodes):
        raise PimcError("the graph has a cycle")
    if order == list(range(len(nodes))):
        return False
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)
    return True


