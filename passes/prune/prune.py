"""prune: non-structured magnitude pruning of Conv, Gemm and MatMul weights (ADMM-NN's sparsity set).

Each selected layer's weight, seen as rows (one per output, the reduction features as columns; see
``masks``), keeps a support S chosen by magnitude:
* ``sparsity`` s (per layer): the ⌈(1 − s)·n⌉ largest |w| of the layer;
* ``scope = global`` with ``sparsity`` s: one magnitude threshold over every selected layer that removes
  the fraction s of all their weights, so layers with large weights (usually the convs) keep more;
* ``nm = "N:M"``: N of every M consecutive weights along a row.
With calibration data (``refit``) the kept weights and the bias are then refitted by ridge least squares
to the *original* layer's output from the already-pruned model's input (``compiler.reconstruct``:
``conv_stats`` for group-1 2-D convs, ``dense_stats`` for Gemm/MatMul; MatMul has no bias to refit).
Grouped convs, Gemm with alpha/beta ≠ 1 or transA are pruned without refit.

Driver (``compiler.layerwise``): a forced ``sparsity`` or ``nm`` prunes every selected layer (force mode);
with both unset the sparsity of every layer is *searched* under the accuracy budget over SPARSITIES, the
cheapest (fewest non-zero MACs) within the allowance wins, and a layer where none fits, or where the
target's cost model says pruning is not cheaper (a dense datapath does not skip zeros), stays dense.
Layers are visited in ADMM-NN's hardware-aware order: convs before FC layers (graph order within each).

Annotations on every pruned node: ``pimc.sparsity`` (the fraction of zero weights), ``pimc.prune``
(``magnitude`` | ``global`` | ``n:m``) and, with N:M, ``pimc.nm``. The zeros themselves are in the
weight, which is where every target's sparse path reads them (``compiler.workload``: non-zeros of Conv,
Gemm and MatMul weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from ...compiler.annotations import get_node_annotation, set_node_annotation
from ...compiler.errors import PimcError
from ...compiler.graph import (
    all_names,
    attr,
    consumers,
    get_initializer,
    initializer_map,
    selection_miss,
    set_initializer,
    unique_name,
    value_shapes,
)
from ...compiler.layerwise import Candidate, Site, compress_layerwise, dense_macs
from ...compiler.passbase import Option, Pass, PassContext, PassResult
from ...compiler.reconstruct import ConvGeometry, LayerStats, conv_stats, dense_stats, relative_error, solve
from .masks import global_sparsities, nm_mask, parse_nm, sparsity_of, topk_mask

SPARSITIES = (0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)
PRUNABLE = ("Conv", "Gemm", "MatMul")
MAX_SCORED_FEATURES = 2304  # larger layers are searched without the refit error (each score is a solve)
_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


@dataclass
class PrunableLayer:
    """One prunable node: its weight as rows (Cout, F), how to store rows back, and its bias."""

    node: onnx.NodeProto
    weight: np.ndarray  # as stored
    rows: np.ndarray  # (Cout, F)
    bias: np.ndarray | None
    refittable: bool

    def stored(self, rows: np.ndarray) -> np.ndarray:
        """Rows (Cout, F) back in the weight's stored layout."""
        if self.node.op_type == "Conv":
            return rows.reshape(self.weight.shape)
        if self.node.op_type == "Gemm" and attr(self.node, "transB", 0):
            return rows
        return rows.T


class Prune(Pass, name="prune"):
    """Non-structured magnitude pruning of Conv/Gemm/MatMul weights (per layer, global or N:M), refitted."""

    options = (
        Option("sparsity", float, None, "force this fraction of zero weights (per layer, or over all selected "
               "layers with scope=global); unset with nm unset: searched per layer under the accuracy budget",
               minimum=0.0, maximum=1.0),
        Option("scope", str, "layer", "layer (every layer gets the sparsity) or global (one magnitude threshold)",
               choices=("layer", "global")),
        Option("nm", str, "", "N:M sparsity, e.g. 2:4: keep N of every M consecutive weights along a row"),
        Option("ops", list, list(PRUNABLE), "op types to prune (Conv, Gemm, MatMul)"),
        Option("include", list, [], "only prune nodes whose name matches one of these glob patterns"),
        Option("exclude", list, [], "never prune nodes whose name matches one of these glob patterns"),
        Option("refit", bool, True, "refit kept weights and bias to the original outputs (calibration data)"),
    )
    exact = False

    def __init__(self, **opts: Any):
        super().__init__(**opts)
        try:
            self._nm = parse_nm(self.opts["nm"])
        except ValueError as exc:
            raise PimcError(f"pass prune: {exc}") from None
        if self._nm and self.opts["sparsity"] is not None:
            raise PimcError("pass prune: give sparsity or nm, not both")
        if self.opts["scope"] == "global" and self.opts["sparsity"] is None:
            raise PimcError("pass prune: scope=global needs a sparsity")
        unknown = sorted(set(self.opts["ops"]) - set(PRUNABLE))
        if unknown:
            raise PimcError(f"pass prune: cannot prune op {unknown[0]} (use {', '.join(PRUNABLE)})")
        self._layer_sparsity: dict[str, float] = {}

    @property
    def forced(self) -> bool:
        return self.opts["sparsity"] is not None or self._nm is not None

    def is_exact(self) -> bool:
        return self.opts["sparsity"] == 0.0

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        if self.opts["sparsity"] == 0.0:
            return PassResult(model, False, {"pruned": [], "skipped": []})
        sites, skipped = self._sites(model)
        if self.opts["scope"] == "global":
            weights = {s.node: prunable_layer(model, s.node).rows for s in sites}
            self._layer_sparsity = global_sparsities(weights, self.opts["sparsity"]) if weights else {}
        result = compress_layerwise(model, sites, self._propose, ctx, force=self.forced)
        layers = result.chosen
        before = sum(x["params"] for x in layers)
        after = sum(x["nonzero"] for x in layers)
        stats = {
            "pruned": layers, "skipped": skipped + result.skipped,
            "params": int(before), "nonzero_after": int(after),
            "compression": round(before / after, 3) if after else None,
            **({"note": result.note} if result.note else {}),
        }
        return PassResult(result.model, bool(layers), stats)

    def _sites(self, model: onnx.ModelProto) -> tuple[list[Site], list[dict[str, str]]]:
        """Selected nodes in hardware-aware order (convs first), and the others with a reason."""
        graph = model.graph
        inits = initializer_map(graph)
        readers = consumers(graph)
        shapes = value_shapes(model)
        sites, skipped = [], []
        for node in graph.node:
            if node.op_type not in PRUNABLE:
                continue
            reason = self._ineligible(node, inits, readers)
            if reason:
                skipped.append({"node": node.name, "reason": reason})
                continue
            sites.append(Site(node.name, node.input[0], dense_macs(node, int(np.prod(inits[node.input[1]].dims)), shapes)))
        convs_first = sorted(range(len(sites)), key=lambda i: (_op_of(graph, sites[i].node) != "Conv", i))
        return [sites[i] for i in convs_first], skipped

    def _ineligible(self, node: onnx.NodeProto, inits: dict, readers: dict) -> str | None:
        if node.op_type not in self.opts["ops"]:
            return f"op {node.op_type} not in ops"
        missed = selection_miss(node.name, self.opts["include"], self.opts["exclude"])
        if missed:
            return missed
        if not node.name:
            return "node has no name"
        if len(node.input) < 2 or node.input[1] not in inits:
            return "weight is not a constant initializer (quantized or computed); run prune before quantize"
        tensor = inits[node.input[1]]
        if tensor.data_type not in _FLOATS:
            return f"weight type {onnx.TensorProto.DataType.Name(tensor.data_type)} is not floating point"
        if len(readers.get(node.input[1], [])) > 1:
            return "weight initializer is shared with another node"
        role = get_node_annotation(node, "role")
        if role not in (None, "coefficient"):
            return f"carries role '{role}'"
        if node.op_type != "Conv" and len(tensor.dims) != 2:
            return f"{node.op_type} weight of rank {len(tensor.dims)}"
        if node.op_type == "Gemm" and attr(node, "transA", 0):
            return "Gemm with transA"
        if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
            return "bias is not a constant initializer"
        if len(node.input) > 2 and node.input[2] and len(readers.get(node.input[2], [])) > 1:
            return "bias initializer is shared with another node"
        return None

    def _propose(self, model: onnx.ModelProto, site: Site, x_comp: np.ndarray | None,
                 x_ref: np.ndarray | None) -> list[Candidate]:
        layer = prunable_layer(model, site.node)
        stats = None
        if self.opts["refit"] and layer.refittable and x_comp is not None and x_ref is not None:
            stats = layer_stats(layer, x_comp, x_ref)
        per_weight_macs = site.macs / max(layer.rows.size, 1)
        return sorted((self._candidate(layer, stats, keep, per_weight_macs, how)
                       for keep, how in self._supports(layer)), key=lambda c: c.cost)

    def _supports(self, layer: PrunableLayer) -> list[tuple[np.ndarray, str]]:
        if self._nm is not None:
            return [(nm_mask(layer.rows, *self._nm), "n:m")]
        if self.opts["scope"] == "global":
            return [(topk_mask(layer.rows, self._layer_sparsity.get(layer.node.name, 0.0)), "global")]
        if self.opts["sparsity"] is not None:
            return [(topk_mask(layer.rows, self.opts["sparsity"]), "magnitude")]
        return [(topk_mask(layer.rows, s), "magnitude") for s in SPARSITIES]

    def _candidate(self, layer: PrunableLayer, stats: LayerStats | None, keep: np.ndarray, per_weight_macs: float,
                   how: str) -> Candidate:
        masked = np.where(keep, layer.rows, 0.0)
        refit = _Refit(layer, stats, keep)
        nnz = int(keep.sum())
        info = {"layer": layer.node.name, "op": layer.node.op_type, "params": int(keep.size), "nonzero": nnz,
                "sparsity": round(1.0 - nnz / max(keep.size, 1), 4), "prune": how, "refitted": stats is not None,
                "dense_cost": float(per_weight_macs * keep.size)}
        if stats is not None and not self.forced and stats.features <= MAX_SCORED_FEATURES:
            rows, bias = refit.result()
            info["relative_error"] = float(relative_error(stats, rows, bias if bias is not None
                                                          else bias_vector(layer)))
        nm = self.opts["nm"] if how == "n:m" else None

        def apply(target: onnx.ModelProto) -> None:
            rows, bias = refit.result()
            _write(target, layer, rows, bias, how, nm)

        def preview(target: onnx.ModelProto) -> None:
            _write(target, layer, masked, None, how, nm)

        return Candidate(float(per_weight_macs * nnz), apply, info, preview)


@dataclass
class _Refit:
    """The ridge refit of one support, solved on first use (a kept weight whose input feature is never
    active on the calibration data keeps its value)."""

    layer: PrunableLayer
    stats: LayerStats | None
    keep: np.ndarray
    _done: tuple[np.ndarray, np.ndarray | None] | None = None

    def result(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self._done is None:
            masked = np.where(self.keep, self.layer.rows, 0.0)
            if self.stats is None:
                self._done = (masked, None)
            else:
                rows, bias = solve(self.stats, self.keep, fit_bias=self.layer.node.op_type != "MatMul")
                silent = np.diag(self.stats.gram)[:-1] == 0
                rows = np.where(self.keep, np.where(silent[None, :], self.layer.rows, rows), 0.0)
                self._done = (rows, bias if self.layer.node.op_type != "MatMul" else None)
        return self._done


def _op_of(graph: onnx.GraphProto, name: str) -> str:
    return next(n.op_type for n in graph.node if n.name == name)


def prunable_layer(model: onnx.ModelProto, name: str) -> PrunableLayer:
    graph = model.graph
    node = next(n for n in graph.node if n.name == name)
    weight = get_initializer(graph, node.input[1])
    bias = get_initializer(graph, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if node.op_type == "Conv":
        rows = weight.reshape(weight.shape[0], -1)
        refittable = weight.ndim == 4 and int(attr(node, "group", 1)) == 1
    else:
        rows = weight if node.op_type == "Gemm" and attr(node, "transB", 0) else weight.T
        refittable = node.op_type == "MatMul" or (
            float(attr(node, "alpha", 1.0)) == 1.0 and float(attr(node, "beta", 1.0)) == 1.0
            and (bias is None or bias.size == rows.shape[0]))
    return PrunableLayer(node, weight, rows, bias, refittable)


def bias_vector(layer: PrunableLayer) -> np.ndarray:
    cout = layer.rows.shape[0]
    if layer.bias is None:
        return np.zeros(cout)
    return np.broadcast_to(layer.bias.astype(np.float64).reshape(-1), (cout,)).copy()


def layer_stats(layer: PrunableLayer, x_comp: np.ndarray, x_ref: np.ndarray) -> LayerStats:
    if layer.node.op_type == "Conv":
        kernel = tuple(int(k) for k in layer.weight.shape[2:])
        geo = ConvGeometry.of(layer.node, kernel, x_comp.shape[2:])
        return conv_stats(x_comp, x_ref, layer.weight, bias_vector(layer), geo)
    return dense_stats(x_comp, x_ref, layer.rows.T, bias_vector(layer) if layer.node.op_type == "Gemm" else None)


def _write(model: onnx.ModelProto, layer: PrunableLayer, rows: np.ndarray, bias: np.ndarray | None, how: str,
           nm: str | None) -> None:
    graph = model.graph
    node = next(n for n in graph.node if n.name == layer.node.name)
    dtype = layer.weight.dtype
    set_initializer(graph, node.input[1], layer.stored(rows).astype(dtype))
    if bias is not None:
        write_bias(graph, node, layer, bias.astype(dtype))
    set_node_annotation(node, "sparsity", round(sparsity_of(rows), 6))
    set_node_annotation(node, "prune", how)
    if nm:
        set_node_annotation(node, "nm", nm)


def write_bias(graph: onnx.GraphProto, node: onnx.NodeProto, layer: PrunableLayer, bias: np.ndarray) -> None:
    if layer.bias is not None:
        set_initializer(graph, node.input[2], bias.reshape(layer.bias.shape))
        return
    if not np.any(bias):
        return
    name = unique_name(all_names(graph), f"{node.name}.bias")
    set_initializer(graph, name, bias)
    while len(node.input) < 3:
        node.input.append("")
    node.input[2] = name
