"""decompose: PENNI kernel decomposition of every eligible Conv into a basis and a coefficient conv.

For a Conv with weight W[Cout, Cin, kh, kw] (kh·kw > 1, group = 1), reshape W to the kernel matrix
M = W.reshape(Cout·Cin, k²) with k² = kh·kw and take its *uncentred* SVD  M = U Σ Vᵀ.
The shared basis is B = Vᵀ[:d] (d × k²) and the coefficients C = U[:, :d] Σ[:d] (Cout·Cin × d), so
M ≈ C B, the best rank-d approximation in the Frobenius norm (Eckart–Young). The SVD is uncentred on
purpose: PCA would subtract the mean kernel and, unless that mean were kept as an extra basis vector,
the reconstruction would be biased by it; the uncentred SVD spans the mean direction whenever it carries
energy, and at d = k² it reconstructs M exactly.

The layer then becomes
    basis:        depthwise Conv, group = Cin, Cin·d outputs, weight[c·d + j] = B_j (same stride, pads,
                  dilation as the original), no bias;
    coefficient:  1×1 Conv, weight[o, c·d + j] = C[o·Cin + c, j], with the original bias,
so  y[o] = Σ_c Σ_j C[o, c, j] · (x_c ∗ B_j) = Σ_c x_c ∗ (Σ_j C[o, c, j] B_j) = Σ_c x_c ∗ W[o, c].

Rank choice: ``rank`` d (capped at min(k², Cout·Cin)) or, if ``energy`` is given, the smallest d with
Σ_{i<d} σ_i² ≥ energy · Σ σ_i². Optional pruning zeroes coefficients per layer: ``prune`` = t zeroes
|c| < t·std(C); ``sparsity`` = s zeroes the fraction s of smallest |c|.

Models already in decomposed form (from this pass or the PENNI exporter) are recognised: their pairs
are validated, missing annotations are completed, and they are not decomposed again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper

from ...compiler.annotations import get_node_annotation
from ...compiler.errors import PimcError
from ...compiler.graph import all_names, attr, selection_miss, set_initializer, unique_name
from ...compiler.passbase import Option, Pass, PassContext, PassResult, register_pass
from ._common import (
    BASIS,
    COEFFICIENT,
    Pair,
    annotate_pair,
    conv_bias,
    conv_weight,
    find_pairs,
    pair_layer_name,
)

_COPIED_ATTRS = ("strides", "pads", "dilations", "auto_pad")


@register_pass
class Decompose(Pass):
    name = "decompose"
    summary = "PENNI: split k×k convs into a shared-basis depthwise conv and a 1×1 coefficient conv (SVD)"
    options = (
        Option("rank", int, 5, "basis size d per layer (capped at kh·kw); ignored when energy is set", minimum=1),
        Option("energy", float, None, "keep the smallest d holding this fraction of kernel energy",
               minimum=0.0, maximum=1.0),
        Option("prune", float, None, "zero coefficients with |c| < prune·std(C), per layer", minimum=0.0),
        Option("sparsity", float, None, "zero this fraction of the smallest coefficients, per layer",
               minimum=0.0, maximum=1.0),
        Option("include", list, [], "only decompose convs whose name matches one of these glob patterns"),
        Option("exclude", list, [], "never decompose convs whose name matches one of these glob patterns"),
    )
    exact = False
    tolerance = 1e-5

    def __init__(self, **opts: Any):
        super().__init__(**opts)
        if self.opts["prune"] is not None and self.opts["sparsity"] is not None:
            raise PimcError("pass decompose: give prune or sparsity, not both")
        self._all_full_rank: bool | None = None

    def is_exact(self) -> bool:
        lossless = self.opts["prune"] is None and self.opts["sparsity"] in (None, 0.0)
        if self._all_full_rank is not None:
            return lossless and self._all_full_rank
        return lossless and (self.opts["energy"] == 1.0 or self.opts["energy"] is None and self.opts["rank"] >= 49)

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        graph = model.graph
        existing = _adopt_existing(model)
        in_pairs = {n.name for p in existing for n in (p["basis"], p["coefficient"])}
        layers: list[dict[str, Any]] = []
        skipped: list[dict[str, str]] = []
        full_rank = True
        for node in list(graph.node):
            if node.op_type != "Conv" or node.name in in_pairs:
                continue
            reason = self._ineligible(graph, node)
            if reason:
                skipped.append({"node": node.name, "reason": reason})
                continue
            info = self._decompose(model, node)
            full_rank &= info["rank"] == min(info["kernel"][0] * info["kernel"][1], info["cout"] * info["cin"])
            layers.append(info)
        self._all_full_rank = full_rank
        changed = bool(layers) or any(p["completed"] for p in existing)
        stats = {
            "decomposed": layers,
            "already_decomposed": [{k: v for k, v in p.items() if k not in ("basis", "coefficient")}
                                   for p in existing],
            "skipped": skipped,
            "params_before": int(sum(x["params_before"] for x in layers)),
            "params_after": int(sum(x["params_after"] for x in layers)),
        }
        return PassResult(model, changed, stats)

    def _ineligible(self, graph: onnx.GraphProto, node: onnx.NodeProto) -> str | None:
        role = get_node_annotation(node, "role")
        if role in (BASIS, COEFFICIENT):
            return f"already a {role} conv"
        if role is not None:
            return f"carries role '{role}' from another pass"
        missed = selection_miss(node.name, self.opts["include"], self.opts["exclude"])
        if missed:
            return missed
        if int(attr(node, "group", 1)) != 1:
            return f"grouped conv (group={attr(node, 'group', 1)})"
        weight = conv_weight(graph, node)
        if weight is None:
            return "weight is not a constant initializer (quantized or computed)"
        if weight.ndim != 4:
            return f"not a 2-D convolution (weight rank {weight.ndim})"
        if weight.shape[2] * weight.shape[3] == 1:
            return "1×1 kernel"
        if len(node.input) > 2 and node.input[2] and conv_bias(graph, node) is None:
            return "bias is not a constant initializer"
        return None

    def _rank(self, sigma: np.ndarray, k2: int, rows: int) -> int:
        limit = min(k2, rows)
        if self.opts["energy"] is None:
            return min(self.opts["rank"], limit)
        energy = np.cumsum(sigma.astype(np.float64) ** 2)
        if energy[-1] == 0:
            return 1
        d = int(np.searchsorted(energy / energy[-1], self.opts["energy"] - 1e-12) + 1)
        return max(1, min(d, limit))

    def _decompose(self, model: onnx.ModelProto, node: onnx.NodeProto) -> dict[str, Any]:
        graph = model.graph
        weight = conv_weight(graph, node)
        cout, cin, kh, kw = weight.shape
        matrix = weight.reshape(cout * cin, kh * kw).astype(np.float64)
        u, sigma, vt = np.linalg.svd(matrix, full_matrices=False)
        d = self._rank(sigma, kh * kw, cout * cin)
        basis = vt[:d]
        coef = u[:, :d] * sigma[:d]
        pruned = self._prune(coef)
        coef = np.where(pruned, 0.0, coef)
        err = np.linalg.norm(matrix - coef @ basis) / max(np.linalg.norm(matrix), 1e-30)
        basis_w = np.tile(basis.reshape(1, d, kh, kw), (cin, 1, 1, 1)).reshape(cin * d, 1, kh, kw)
        coef_w = coef.reshape(cout, cin, d).reshape(cout, cin * d, 1, 1)
        _rewrite(model, node, basis_w.astype(weight.dtype), coef_w.astype(weight.dtype), cin)
        nnz = int(np.count_nonzero(coef))
        return {
            "layer": node.name, "cout": int(cout), "cin": int(cin), "kernel": [int(kh), int(kw)], "rank": int(d),
            "energy_kept": float(np.sum(sigma[:d] ** 2) / max(np.sum(sigma**2), 1e-30)),
            "relative_error": float(err), "coefficients": int(coef.size), "coefficients_nonzero": nnz,
            "params_before": int(weight.size), "params_after": int(d * kh * kw + nnz),
        }

    def _prune(self, coef: np.ndarray) -> np.ndarray:
        mags = np.abs(coef)
        if self.opts["prune"] is not None:
            return mags < self.opts["prune"] * float(np.std(coef))
        if self.opts["sparsity"]:
            count = int(round(self.opts["sparsity"] * coef.size))
            mask = np.zeros(coef.size, dtype=bool)
            mask[np.argsort(mags, axis=None, kind="stable")[:count]] = True
            return mask.reshape(coef.shape)
        return np.zeros(coef.shape, dtype=bool)


def _rewrite(model: onnx.ModelProto, node: onnx.NodeProto, basis_w, coef_w, cin: int) -> None:
    graph = model.graph
    names = all_names(graph)
    layer = node.name
    bw_name = unique_name(names, f"{layer}.basis_weight")
    cw_name = unique_name(names, f"{layer}.coefficient_weight")
    mid = unique_name(names, f"{layer}.basis_out")
    set_initializer(graph, bw_name, basis_w)
    set_initializer(graph, cw_name, coef_w)
    basis_attrs = {a.name: a for a in node.attribute if a.name in _COPIED_ATTRS}
    basis = helper.make_node("Conv", [node.input[0], bw_name], [mid], name=unique_name(names, f"{layer}.basis"))
    basis.attribute.extend(basis_attrs.values())
    basis.attribute.append(helper.make_attribute("group", cin))
    basis.attribute.append(helper.make_attribute("kernel_shape", list(basis_w.shape[2:])))
    coef_inputs = [mid, cw_name] + ([node.input[2]] if len(node.input) > 2 and node.input[2] else [])
    coef = helper.make_node("Conv", coef_inputs, list(node.output), name=unique_name(names, f"{layer}.coefficient"),
                            kernel_shape=[1, 1])
    for prop in node.metadata_props:
        coef.metadata_props.add(key=prop.key, value=prop.value)
    annotate_pair(Pair(basis, coef, cin, basis_w.shape[0] // cin, tuple(basis_w.shape[2:])), layer)
    index = list(graph.node).index(node)
    graph.node.remove(node)
    graph.node.insert(index, coef)
    graph.node.insert(index, basis)


def _adopt_existing(model: onnx.ModelProto) -> list[dict[str, Any]]:
    """Validate the pairs already in the model and complete their annotations."""
    graph = model.graph
    annotated = [n for n in graph.node if get_node_annotation(n, "role") in (BASIS, COEFFICIENT)]
    pairs = find_pairs(model)
    paired = {n.name for p in pairs for n in (p.basis, p.coefficient)}
    broken = [n.name for n in annotated if n.name not in paired]
    if broken:
        raise PimcError(f"decomposed layer annotations are inconsistent: node '{broken[0]}' is annotated as "
                        "basis/coefficient but is not part of a valid depthwise + 1×1 pair")
    found = []
    for pair in pairs:
        layer = pair_layer_name(pair)
        want = {"role": None, "rank": pair.rank, "layer": layer, "kernel": list(pair.kernel)}
        completed = any(get_node_annotation(n, k) != v for n in (pair.basis, pair.coefficient)
                        for k, v in want.items() if k != "role")
        completed |= get_node_annotation(pair.basis, "role") != BASIS
        completed |= get_node_annotation(pair.coefficient, "role") != COEFFICIENT
        rank_note = get_node_annotation(pair.basis, "rank")
        if rank_note is not None and int(rank_note) != pair.rank:
            raise PimcError(f"node '{pair.basis.name}' is annotated rank={rank_note} but has {pair.rank} "
                            "basis kernels per input channel")
        annotate_pair(pair, layer)
        found.append({"layer": layer, "basis": pair.basis, "coefficient": pair.coefficient, "rank": pair.rank,
                      "completed": bool(completed)})
    return found
