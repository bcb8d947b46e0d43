"""cleanup: remove dead nodes and unused initializers, after sorting the graph topologically.

A node is dead when none of its outputs reaches a graph output. Per-element compression maps that no
node's ``pimc.maps`` annotation names any more are dropped (named old-layout map initializers are kept).
The sort is stable: nodes keep their relative order wherever the data dependencies allow it.
"""

from __future__ import annotations

import onnx

from ...compiler.annotations import prune_maps, referenced_map_names
from ...compiler.errors import PimcError
from ...compiler.graph import cycle_nodes, graph_output_names, remove_initializers, sort_nodes, subgraph_reads
from ...compiler.passbase import Pass, PassContext, PassResult


class Cleanup(Pass, name="cleanup", exact=True):
    """Remove dead nodes and unused initializers; stable topological sort (exact)."""

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        graph = model.graph
        reordered = toposort(graph)
        dead = remove_dead_nodes(graph)
        unused = remove_unused_initializers(model)
        stale_maps = prune_maps(model)
        changed = bool(dead or unused or reordered or stale_maps)
        stats = {"dead_nodes": dead, "unused_initializers": unused, "unused_maps": stale_maps, "reordered": reordered}
        return PassResult(model, changed, stats)


def remove_dead_nodes(graph: onnx.GraphProto) -> list[str]:
    """Drop nodes no graph output depends on; the graph must be topologically sorted."""
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
    return subgraph_reads(node)


def remove_unused_initializers(model: onnx.ModelProto) -> list[str]:
    graph = model.graph
    used: set[str] = set(graph_output_names(graph)) | referenced_map_names(model)
    for node in graph.node:
        used.update(node.input)
        used.update(_subgraph_reads(node))
    unused = sorted(init.name for init in graph.initializer if init.name not in used)
    remove_initializers(graph, unused)
    return unused


def toposort(graph: onnx.GraphProto) -> bool:
    """Stable Kahn sort; True when the order changed. A cycle is an error."""
    changed = sort_nodes(graph)
    if changed is None:
        raise PimcError(f"the graph has a cycle through {', '.join(cycle_nodes(graph)[:5])}")
    return changed
