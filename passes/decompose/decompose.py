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

Rank choice. By default (``rank`` and ``energy`` unset) the rank d and the coefficient sparsity s of
every layer are *searched* under the accuracy budget (``compiler.layerwise``): candidates d ∈ RANKS ×
s ∈ SPARSITIES, each refitted by layer-wise reconstruction, the cheapest within the budget wins, and a
layer where none pays off or fits stays dense (listed under ``skipped`` with the reason). Without labelled
data nothing lossy happens. A user may force ``rank`` d (capped at min(k², Cout·Cin)) or ``energy`` (the
smallest d with Σ_{i<d} σ_i² ≥ energy · Σ σ_i²), and ``prune`` (zero |c| < t·std(C)) or ``sparsity``
(zero the fraction s of smallest |c|).

Reconstruction (``refit``, with calibration data): the basis stays the SVD basis; the kept coefficients
and the bias are refitted by ridge least squares so that the 1×1 conv reproduces the *original* layer's
output from the basis maps of the already-compressed model (``compiler.reconstruct``). With z_(c,j) =
Σ_t B[j,t] x_(c,t) the statistics transform by T = I_Cin ⊗ B. Coefficients are pruned by the saliency
c² · E[z²] of the dense refit (the output energy each one carries), then refitted on what is left.

Models already in decomposed form (from this pass or the PENNI exporter) are recognised: their pairs
are validated, missing annotations are completed, and they are not decomposed again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from ...compiler.annotations import get_node_annotation
from ...compiler.errors import PimcError
from ...compiler.graph import all_names, attr, selection_miss, set_initializer, unique_name, value_shapes
from ...compiler.layerwise import Candidate, Site, compress_layerwise, dense_macs
from ...compiler.passbase import Option, Pass, PassContext, PassResult
from ...compiler.reconstruct import (
    ConvGeometry,
    LayerStats,
    conv_stats,
    relative_error,
    samples_for_statistics,
    solve,
    solve_dense_with_inverse,
)
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
RANKS = (2, 3, 4, 5, 6)
FORCED_DEFAULT_RANK = 5  # PENNI's d, when only prune/sparsity is forced
SPARSITIES = (0.0, 0.3, 0.5, 0.7)


class Decompose(Pass, name="decompose"):
    """PENNI: split k×k convs into a shared-basis depthwise conv and a 1×1 coefficient conv (SVD)."""

    options = (
        Option("rank", int, None, "force basis size d per layer (capped at kh·kw; 5 when only prune/sparsity "
               "is forced); with rank, energy, prune and sparsity all unset, rank and sparsity are searched per "
               "layer under the accuracy budget", minimum=1),
        Option("energy", float, None, "keep the smallest d holding this fraction of kernel energy",
               minimum=0.0, maximum=1.0),
        Option("prune", float, None, "zero coefficients with |c| < prune·std(C), per layer", minimum=0.0),
        Option("sparsity", float, None, "zero this fraction of the smallest coefficients, per layer",
               minimum=0.0, maximum=1.0),
        Option("include", list, [], "only decompose convs whose name matches one of these glob patterns"),
        Option("exclude", list, [], "never decompose convs whose name matches one of these glob patterns"),
        Option("refit", bool, True, "refit kept coefficients and bias to the original outputs (calibration data)"),
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
        rank = self.opts["rank"]
        return lossless and (self.opts["energy"] == 1.0 or self.opts["energy"] is None and rank is not None
                             and rank >= 49)

    @property
    def searching(self) -> bool:
        return all(self.opts[k] is None for k in ("rank", "energy", "prune", "sparsity"))

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        graph = model.graph
        existing = _adopt_existing(model)
        in_pairs = {n.name for p in existing for n in (p["basis"], p["coefficient"])}
        skipped: list[dict[str, str]] = []
        sites = []
        shapes = value_shapes(model)
        for node in list(graph.node):
            if node.op_type != "Conv" or node.name in in_pairs:
                continue
            reason = self._ineligible(graph, node)
            if reason:
                skipped.append({"node": node.name, "reason": reason})
                continue
            sites.append(Site(node.name, node.input[0], dense_macs(node, conv_weight(graph, node).size, shapes)))
        result = compress_layerwise(model, sites, self._propose, ctx, force=not self.searching)
        model = result.model
        skipped += result.skipped
        layers = result.chosen
        full_rank = all(x["rank"] == min(x["kernel"][0] * x["kernel"][1], x["cout"] * x["cin"]) for x in layers)
        self._all_full_rank = full_rank
        changed = bool(layers) or any(p["completed"] for p in existing)
        stats = {
            "decomposed": layers,
            "already_decomposed": [{k: v for k, v in p.items() if k not in ("basis", "coefficient")}
                                   for p in existing],
            "skipped": skipped,
            "params_before": int(sum(x["params_before"] for x in layers)),
            "params_after": int(sum(x["params_after"] for x in layers)),
            **({"note": result.note} if result.note else {}),
        }
        return PassResult(model, changed, stats)

    def _ineligible(self, graph: onnx.GraphProto, node: onnx.NodeProto) -> str | None:
        role = get_node_annotation(node, "role")
        if role in (BASIS, COEFFICIENT):
            return f"already a {role} conv"
        if role is not None:
            return f"carries role '{role}' from another pass"
        if get_node_annotation(node, "pattern_library") is not None:
            return "already pattern-pruned"
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
            return min(self.opts["rank"] or FORCED_DEFAULT_RANK, limit)
        energy = np.cumsum(sigma.astype(np.float64) ** 2)
        if energy[-1] == 0:
            return 1
        d = int(np.searchsorted(energy / energy[-1], self.opts["energy"] - 1e-12) + 1)
        return max(1, min(d, limit))

    def _propose(self, model: onnx.ModelProto, site: Site, x_comp: np.ndarray | None,
                 x_ref: np.ndarray | None) -> list[Candidate]:
        """Every (rank, sparsity) candidate for one conv, refitted on the calibration data when given."""
        graph = model.graph
        node = next(n for n in graph.node if n.name == site.node)
        weight = conv_weight(graph, node)
        bias = conv_bias(graph, node)
        cout, cin, kh, kw = weight.shape
        k2 = kh * kw
        u, sigma, vt = np.linalg.svd(weight.reshape(cout * cin, k2).astype(np.float64), full_matrices=False)
        def layer_stats(x_comp: np.ndarray, x_ref: np.ndarray, rank: int | None = None) -> LayerStats:
            """On the full kernel (every sample), or on the basis maps of ``rank`` (from enough samples)."""
            geometry = ConvGeometry.of(node, (kh, kw), x_comp.shape[2:])
            n = len(x_comp) if rank is None else samples_for_statistics(
                len(x_comp), geometry.positions(x_comp.shape[2:]), cin * rank)
            features = None if rank is None else _basis_features(vt[:rank], cin)
            return conv_stats(x_comp[:n], x_ref[:n], weight, bias, geometry, features)

        refitting = self.opts["refit"] and x_comp is not None and x_ref is not None
        stats = layer_stats(x_comp, x_ref) if refitting else None
        layer = _LayerFit(node.name, weight, bias, u, sigma, vt, site.macs / (cout * cin * k2), {})
        candidates = []
        for d, sparsities in self._settings(sigma, k2, cout * cin):
            for sparsity in sparsities:
                candidates.append(self._candidate(layer, stats, d, sparsity))
                if refitting:
                    candidates[-1].refit = self._refitter(layer, layer_stats, d, sparsity)
        return sorted(candidates, key=lambda c: c.cost)

    def _refitter(self, layer: _LayerFit, layer_stats, d: int, sparsity: float | None):
        """The same (rank, sparsity) refitted on other inputs (``Candidate.refit``)."""
        def refit(x_comp: np.ndarray, x_ref: np.ndarray) -> Candidate:
            fresh = _LayerFit(layer.name, layer.weight, layer.bias, layer.u, layer.sigma, layer.vt, layer.pixels, {})
            basis_stats = layer_stats(x_comp, x_ref, rank=d)
            fresh.refits[d] = _dense_refit_on(basis_stats)
            return self._candidate(fresh, basis_stats, d, sparsity)
        return refit

    def _settings(self, sigma: np.ndarray, k2: int, rows: int) -> list[tuple[int, tuple[float | None, ...]]]:
        if self.searching:
            return [(d, SPARSITIES) for d in RANKS if d < min(k2, rows)]
        return [(self._rank(sigma, k2, rows), (None,))]

    def _candidate(self, layer: _LayerFit, stats: LayerStats | None, d: int, sparsity: float | None) -> Candidate:
        cout, cin, kh, kw = layer.weight.shape
        basis = layer.vt[:d]
        svd_coef = (layer.u[:, :d] * layer.sigma[:d]).reshape(cout, cin * d)
        bias = np.zeros(cout) if layer.bias is None else layer.bias.astype(np.float64)
        zstats = dense_coef = None
        if stats is not None:
            zstats, dense_coef, bias, saliency, order, dense_error = layer.dense_refit(stats, d)
        else:
            dense_coef, saliency = svd_coef, svd_coef**2
            order = np.argsort(saliency, axis=None, kind="stable") if sparsity is not None else None
        keep = self._keep(svd_coef, order, sparsity)
        masked = np.where(keep, dense_coef, 0.0)
        if zstats is not None:  # the refit's error, estimated (Optimal Brain Surgeon): see _LayerFit.dense_refit
            error = dense_error + float(saliency[~keep].sum()) / max(float(zstats.target_energy.sum()), 1e-30)
        else:
            error = _weight_error(layer, basis, masked)
        nnz = int(np.count_nonzero(masked))
        macs_dense = layer.pixels * cout * cin * kh * kw
        info = {
            "layer": layer.name, "cout": int(cout), "cin": int(cin), "kernel": [int(kh), int(kw)], "rank": int(d),
            "coefficient_sparsity": round(1.0 - nnz / masked.size, 4),
            "energy_kept": float(np.sum(layer.sigma[:d] ** 2) / max(np.sum(layer.sigma**2), 1e-30)),
            "relative_error": float(error), "refitted": zstats is not None,
            "coefficients": int(masked.size), "coefficients_nonzero": nnz,
            "params_before": int(layer.weight.size), "params_after": int(d * kh * kw + nnz),
            "macs_before": int(macs_dense), "macs_after": int(layer.pixels * (cin * d * kh * kw + nnz)),
            "dense_cost": float(macs_dense),
        }
        write_bias = bias if (zstats is not None or layer.bias is not None) else None
        refit = _Refit(zstats, keep, masked, bias)

        def apply(target: onnx.ModelProto) -> None:
            coef, fitted_bias = refit.result()
            if zstats is not None:
                info["relative_error"] = relative_error(zstats, coef, fitted_bias)
            _write_pair(target, layer.name, basis, coef, None if write_bias is None else fitted_bias,
                        layer.weight.dtype)

        def preview(target: onnx.ModelProto) -> None:
            _write_pair(target, layer.name, basis, masked, write_bias, layer.weight.dtype)

        return Candidate(float(info["macs_after"]), apply, info, preview)

    def _keep(self, svd_coef: np.ndarray, order: np.ndarray | None, sparsity: float | None) -> np.ndarray:
        """Which coefficients survive: a forced ``prune``/``sparsity`` works on the SVD coefficients as
        before; a searched sparsity drops the least salient ones (``order``: flat indices, least salient
        first)."""
        if sparsity is None:
            return ~self._prune(svd_coef)
        count = int(round(sparsity * svd_coef.size))
        keep = np.ones(svd_coef.size, dtype=bool)
        keep[order[:count]] = False
        return keep.reshape(svd_coef.shape)

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


@dataclass
class _Refit:
    """The ridge refit of one candidate, solved on first use: most candidates are never evaluated."""

    stats: LayerStats | None
    keep: np.ndarray
    masked: np.ndarray
    bias: np.ndarray
    _done: tuple[np.ndarray, np.ndarray] | None = None

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self._done is None:
            if self.stats is None or self.keep.all():
                self._done = (self.masked, self.bias)
            else:
                self._done = solve(self.stats, self.keep, start=(self.masked, self.bias))
        return self._done


@dataclass
class _LayerFit:
    name: str
    weight: np.ndarray
    bias: np.ndarray | None
    u: np.ndarray
    sigma: np.ndarray
    vt: np.ndarray
    pixels: float
    refits: dict[int, tuple]

    def dense_refit(self, stats: LayerStats, d: int) -> tuple:
        """For rank d, shared by every sparsity: the statistics of the basis maps, the dense ridge refit on
        them (coefficients, bias), each coefficient's saliency and their order (least salient first), and the
        dense refit's relative error. Optimal Brain Surgeon: removing coefficient c_f and refitting the others costs
        c_f² / [G⁻¹]_ff of squared output error, so that is the saliency, and the sum over the removed ones
        estimates the sparse refit's error before it is solved."""
        if d not in self.refits:
            self.refits[d] = _dense_refit_on(stats.transform_per_channel(self.vt[:d], self.weight.shape[1]))
        return self.refits[d]


def _dense_refit_on(zstats: LayerStats) -> tuple:
    """``_LayerFit.dense_refit`` given the statistics of the basis maps."""
    coef, bias, inverse_diag = solve_dense_with_inverse(zstats)
    saliency = coef**2 / inverse_diag[None, :-1]
    order = np.argsort(saliency, axis=None, kind="stable")
    return zstats, coef, bias, saliency, order, relative_error(zstats, coef, bias)


def _basis_features(basis: np.ndarray, channels: int):
    """im2col rows (P, C·k) → the basis maps' values (P, C·d), z_(c,j) = Σ_t basis[j, t] x_(c,t): the
    statistics of a refit are then gathered at the decomposed layer's own size (d/k of the features)."""
    d, k = basis.shape

    def features(rows: np.ndarray) -> np.ndarray:
        return (rows.reshape(rows.shape[0], channels, k) @ basis.T.astype(rows.dtype)).reshape(rows.shape[0], channels * d)
    return features


def _weight_error(layer: _LayerFit, basis: np.ndarray, coef: np.ndarray) -> float:
    cout, cin, kh, kw = layer.weight.shape
    matrix = layer.weight.reshape(cout * cin, kh * kw).astype(np.float64)
    approx = coef.reshape(cout * cin, -1) @ basis
    return float(np.linalg.norm(matrix - approx) / max(np.linalg.norm(matrix), 1e-30))


def _write_pair(model: onnx.ModelProto, layer: str, basis: np.ndarray, coef: np.ndarray,
                bias: np.ndarray | None, dtype: np.dtype) -> None:
    node = next(n for n in model.graph.node if n.name == layer)
    cin = conv_weight(model.graph, node).shape[1]
    d, k2 = basis.shape
    kh, kw = conv_weight(model.graph, node).shape[2:]
    basis_w = np.tile(basis.reshape(1, d, kh, kw), (cin, 1, 1, 1)).reshape(cin * d, 1, kh, kw)
    coef_w = coef.reshape(coef.shape[0], cin * d, 1, 1)
    _rewrite(model, node, basis_w.astype(dtype), coef_w.astype(dtype), cin,
             None if bias is None else bias.astype(dtype))


def _rewrite(model: onnx.ModelProto, node: onnx.NodeProto, basis_w, coef_w, cin: int,
             bias: np.ndarray | None = None) -> None:
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
    coef_inputs = [mid, cw_name]
    if bias is not None:
        bias_name = unique_name(names, f"{layer}.coefficient_bias")
        set_initializer(graph, bias_name, bias)
        coef_inputs.append(bias_name)
    elif len(node.input) > 2 and node.input[2]:
        coef_inputs.append(node.input[2])
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
