"""pattern-prune: PatDNN pattern pruning plus connectivity pruning of k×k convolutions.

A Conv weight ``W[Cout, Cin/g, k, k]`` is a set of ``N = Cout·Cin/g`` kernels ``w_i ∈ R^{k²}``. A *pattern*
is a set ``P ⊂ {0, …, k²−1}`` of ``n`` kept flat positions (``n = nonzeros``); a layer's *library*
``L = {P_1, …, P_K}`` holds at most ``K = patterns`` of them.

Library (option ``library``):

* ``derived`` (PatDNN): each kernel votes for its top-``n`` magnitude positions (for odd k the centre is
  always among them, as in PatDNN, whose 3×3 patterns are centre + 3 of the 8 neighbours: C(8,3) = 56
  candidates); the ``K`` most frequent candidates form the library (ties: larger summed kept energy
  Σ_i ‖w_i ⊙ P‖², then lexicographic).
* ``greedy``: the same candidates, chosen greedily to maximise the total kept energy
  Σ_i max_{P∈L} ‖w_i ⊙ P‖² (facility location); better than frequency when candidates are many (5×5).
* ``canonical``: a fixed, data-independent set — the ``K`` most compact patterns containing the centre,
  ranked by Σ distance to the centre, then Σ pairwise distance (for 3×3, n = 4: the four "T" shapes
  and the four 2×2 squares).

Projection: every kernel keeps the library pattern with the most energy,
``P*(w) = argmax_{P∈L} ‖w ⊙ P‖²`` (first id on ties), ``w ← w ⊙ P*``. Together with connectivity pruning
this is the exact Euclidean projection onto {every kernel's support ⊆ some P ∈ L} ∩ {≤ N − ⌊c·N⌋
non-zero kernels}: after the pattern step the ⌊c·N⌋ kernels of smallest remaining L2 norm are zeroed
(``c = connectivity``, per layer). Kernels that are already all-zero count towards ⌊c·N⌋.

Default ``nonzeros`` (0 = automatic): 4 for 3×3 (PatDNN's 4-of-9) and ``round(4·k²/9)`` for other odd k,
i.e. the same 44 % kernel density (11 of 25 for LeNet-5's 5×5 convs).

Idempotence: on weights that already conform (every non-zero kernel has exactly ``n`` non-zeros on a
pattern, ≥ ⌊c·N⌋ zero kernels) the derived/greedy library is re-derived as exactly the used patterns
and nothing changes — this is how a model written by ``pimc export pattern`` is recognised. With
``nonzeros`` automatic, a layer that already carries ``pattern_nonzeros`` (or whose non-zero kernels all
have the same count n below the default) keeps that n.

Strength per layer (the ``pattern-prune`` pass; ``prune_model`` / the exporters are unchanged). With
``connectivity`` unset and ``nonzeros`` automatic the pass *searches* each layer under the accuracy budget
(``compiler.layerwise``): candidates n ∈ {default, default − 1} × c ∈ ``SEARCH_CONNECTIVITY``, ordered by
non-zero MACs; the cheapest within the budget wins; a layer where none fits or pays off on the target stays
dense (``skipped`` with reason and ``kind``); without labelled data nothing lossy happens (layers that
already conform are still recognised and annotated). Setting ``connectivity`` or ``nonzeros`` forces that
one candidate per layer. Either way, with calibration data (``refit=true``, group-1 convs with a constant
or no bias) the surviving weights and the bias are refitted by ridge least squares on the exact pattern /
connectivity support (``compiler.reconstruct.solve``): target = the original layer's output, inputs from
the already-compressed layers; the pattern ids and library stay those of the projection, so the map
matches the refit weights' support. A refitted bias is written in place, or as a new initializer when the
conv had none or shared it.

Annotations on each pruned Conv (see notes/common.md): ``pattern_library`` (list of sorted position
lists, index = pattern id), ``pattern_nonzeros``, ``connectivity`` (fraction of kernels removed in this
layer) and ``pattern_source``; map kind ``pattern``: int16 ``[Cout, Cin/g]`` of pattern ids, −1 = kernel
removed. Depthwise, 1×1, non-square and even-sized kernels, quantized or shared weights are skipped
with the reason in ``stats["skipped"]``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx

from ...compiler import annotations as ann
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
from ...compiler.reconstruct import ConvGeometry, LayerStats, conv_stats, relative_error, solve
from .config import LIBRARIES, PatternConfig, default_nonzeros

PRUNED = -1


@dataclass
class LayerPruning:
    """The outcome of pruning one kernel tensor."""

    weight: np.ndarray
    library: list[list[int]]
    ids: np.ndarray
    nonzeros: int
    stats: dict[str, Any] = field(default_factory=dict)


def centre_position(k: int) -> int | None:
    return (k // 2) * k + k // 2 if k % 2 == 1 else None


def masks_of(library: list[list[int]], k2: int) -> np.ndarray:
    masks = np.zeros((len(library), k2), dtype=bool)
    for i, pattern in enumerate(library):
        masks[i, pattern] = True
    return masks


def top_patterns(kernels: np.ndarray, n: int, centre: int | None) -> np.ndarray:
    """Each kernel's ``n`` largest-magnitude positions (centre forced in), sorted: [N, n]."""
    mag = np.abs(kernels.astype(np.float64))
    if centre is not None:
        mag[:, centre] = np.inf
    order = np.argsort(-mag, axis=1, kind="stable")[:, :n]
    return np.sort(order, axis=1)


def _candidates(kernels: np.ndarray, n: int, centre: int | None) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Distinct top-n candidates and how many kernels vote for each, from the 'full' kernels.

    Kernels with fewer than ``n`` non-zeros have an ambiguous top-n set and do not vote (unless no kernel
    is full); all-zero kernels never vote.
    """
    nnz = np.count_nonzero(kernels, axis=1)
    voters = kernels[nnz >= n]
    if len(voters) == 0:
        voters = kernels[nnz > 0]
    if len(voters) == 0:
        return [], np.zeros(0, dtype=np.int64)
    tops = top_patterns(voters, n, centre)
    uniq, counts = np.unique(tops, axis=0, return_counts=True)
    return [tuple(int(v) for v in row) for row in uniq], counts


def derive_library(kernels: np.ndarray, n: int, size: int, method: str) -> list[list[int]]:
    """A layer's pattern library from its kernels [N, k²] (or the canonical set)."""
    k2 = kernels.shape[1]
    k = math.isqrt(k2)
    if method == "canonical":
        return canonical_library(k, n, size)
    centre = centre_position(k)
    cands, counts = _candidates(kernels, n, centre)
    if not cands:
        return canonical_library(k, n, size)
    energy = (kernels.astype(np.float64) ** 2) @ masks_of([list(c) for c in cands], k2).T.astype(np.float64)
    if method == "greedy":
        return _greedy(cands, energy, size)
    totals = energy.sum(axis=0)
    order = sorted(range(len(cands)), key=lambda j: (-counts[j], -totals[j], cands[j]))
    return [list(cands[j]) for j in order[:size]]


def _greedy(cands: list[tuple[int, ...]], energy: np.ndarray, size: int) -> list[list[int]]:
    """Facility location: repeatedly add the candidate that raises Σ_i max kept energy the most."""
    best = np.zeros(energy.shape[0])
    chosen: list[int] = []
    for _ in range(min(size, len(cands))):
        gains = np.maximum(energy, best[:, None]).sum(axis=0) - best.sum()
        gains[chosen] = -np.inf
        j = int(np.argmax(gains))
        if gains[j] <= 0 and chosen:
            break
        chosen.append(j)
        best = np.maximum(best, energy[:, j])
    return [list(cands[j]) for j in chosen]


def canonical_library(k: int, n: int, size: int) -> list[list[int]]:
    """The ``size`` most compact centre-containing patterns of ``n`` positions in a k×k kernel.

    Candidates come from the smallest disc around the centre (whole rings of equal distance) that holds
    at least ``n + 1`` positions and enough combinations; they are ranked by Σ distance to the centre,
    then by Σ pairwise distance (compactness), then lexicographically.
    """
    centre = centre_position(k)
    coords = [(p // k, p % k) for p in range(k * k)]
    mid = (k - 1) / 2
    dist = [math.hypot(r - mid, c - mid) for r, c in coords]
    fixed = [centre] if centre is not None else []
    need = n - len(fixed)
    pool = sorted((p for p in range(k * k) if p != centre), key=lambda p: (dist[p], p))
    near = _disc(pool, dist, need, size)

    def key(extra: tuple[int, ...]) -> tuple[float, float, tuple[int, ...]]:
        pts = sorted(fixed + list(extra))
        spread = sum(math.dist(coords[a], coords[b]) for a, b in itertools.combinations(pts, 2))
        return (round(sum(dist[p] for p in pts), 9), round(spread, 9), tuple(pts))

    ranked = sorted(itertools.combinations(near, need), key=key)
    return [sorted(fixed + list(extra)) for extra in ranked[:size]]


def _disc(pool: list[int], dist: list[float], need: int, size: int) -> list[int]:
    """The shortest prefix of ``pool`` ending at a ring boundary with ≥ need + 1 items and ≥ size choices."""
    for end in range(1, len(pool) + 1):
        at_boundary = end == len(pool) or dist[pool[end]] > dist[pool[end - 1]] + 1e-9
        if at_boundary and end >= min(need + 1, len(pool)) and math.comb(end, need) >= size:
            return pool[:end]
    return pool


def project(kernels: np.ndarray, library: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Project each kernel onto its best library pattern: (projected [N, k²], pattern id [N])."""
    masks = masks_of(library, kernels.shape[1])
    energy = (kernels.astype(np.float64) ** 2) @ masks.T.astype(np.float64)
    ids = np.argmax(energy, axis=1)
    return kernels * masks[ids].astype(kernels.dtype), ids


def pruned_count(total: int, connectivity: float) -> int:
    return int(math.floor(connectivity * total + 1e-9))


def connectivity_prune(kernels: np.ndarray, ids: np.ndarray, connectivity: float) -> tuple[np.ndarray, np.ndarray]:
    """Zero the ⌊c·N⌋ kernels of smallest L2 norm (zero kernels first); all-zero kernels get id −1."""
    norms = np.sqrt((kernels.astype(np.float64) ** 2).sum(axis=1))
    drop = np.argsort(norms, kind="stable")[: pruned_count(len(kernels), connectivity)]
    out = kernels.copy()
    out[drop] = 0
    ids = ids.astype(np.int16)
    ids[~out.any(axis=1)] = PRUNED
    return out, ids


def prune_kernels(weight: np.ndarray, config: PatternConfig, library: list[list[int]] | None = None) -> LayerPruning:
    """Pattern + connectivity pruning of one weight [Cout, Cin/g, k, k]; the library is derived unless given.

    A derived (or greedy) library is re-derived from the pruned kernels until it is a fixed point, so it
    holds exactly the patterns in use and a second application changes nothing.
    """
    cout, cin, k, _ = weight.shape
    n = config.nonzeros_for(k)
    kernels = weight.reshape(cout * cin, k * k)
    rederive = library is None and config.library != "canonical"
    if library is None:
        library = derive_library(kernels, n, config.patterns, config.library)
    pruned, ids = _project_and_cut(kernels, library, config.connectivity)
    for _ in range(8 if rederive else 0):
        final = derive_library(pruned, n, config.patterns, config.library)
        again, ids = _project_and_cut(pruned, final, config.connectivity)
        stable = final == library and np.array_equal(again, pruned)
        library, pruned = final, again
        if stable:
            break
    return LayerPruning(pruned.reshape(weight.shape), library, ids.reshape(cout, cin), n, _stats(kernels, pruned, ids))


def _project_and_cut(kernels: np.ndarray, library: list[list[int]], connectivity: float) -> tuple[np.ndarray, np.ndarray]:
    projected, ids = project(kernels, library)
    return connectivity_prune(projected, ids, connectivity)


def _stats(kernels: np.ndarray, pruned: np.ndarray, ids: np.ndarray) -> dict[str, Any]:
    energy_before = float((kernels.astype(np.float64) ** 2).sum())
    return {
        "kernels": int(len(kernels)),
        "kernels_removed": int((ids == PRUNED).sum()),
        "nonzero_before": int(np.count_nonzero(kernels)),
        "nonzero_after": int(np.count_nonzero(pruned)),
        "energy_kept": float((pruned.astype(np.float64) ** 2).sum() / energy_before) if energy_before else 1.0,
        "patterns_used": len(set(ids[ids != PRUNED].tolist())),
    }


def skip_reason(weight_shape: tuple[int, ...], groups: int) -> str | None:
    """Why a Conv of this weight shape and group count is not pattern-pruned (None = prunable)."""
    if len(weight_shape) != 4:
        return f"not a 2-D convolution (weight rank {len(weight_shape)})"
    cout, cin_g, kh, kw = weight_shape
    if kh != kw:
        return f"non-square kernel {kh}x{kw}"
    if kh == 1:
        return "1x1 convolution has no spatial pattern"
    if kh % 2 == 0:
        return f"even kernel size {kh}x{kw} has no centre"
    if groups > 1 and cin_g == 1:
        return "depthwise convolution (one kernel per channel; pattern pruning targets dense k×k convs)"
    return None


def selected(name: str, config: PatternConfig) -> bool:
    return selection_miss(name, list(config.include), list(config.exclude)) is None


def annotate(model: onnx.ModelProto, node: onnx.NodeProto, result: LayerPruning, config: PatternConfig) -> None:
    """Write the annotation contract for one pruned Conv."""
    ann.set_node_annotation(node, "pattern_library", result.library)
    ann.set_node_annotation(node, "pattern_nonzeros", result.nonzeros)
    removed = result.stats["kernels_removed"] / max(result.stats["kernels"], 1)
    ann.set_node_annotation(node, "connectivity", round(removed, 6))
    ann.set_node_annotation(node, "pattern_source", config.library)
    ann.set_node_map(model, node, "pattern", result.ids.astype(np.int16))


def eligible_convs(
    model: onnx.ModelProto, config: PatternConfig, only: set[str] | None = None
) -> tuple[list[tuple[onnx.NodeProto, np.ndarray]], list[dict[str, str]]]:
    """The Conv nodes pattern pruning applies to, with their weights, and the others with the reason."""
    graph = model.graph
    inits = initializer_map(graph)
    readers = consumers(graph)
    found, skipped = [], []
    for node in graph.node:
        if node.op_type != "Conv" or (only is not None and node.name not in only):
            continue
        if not selected(node.name, config):
            skipped.append({"node": node.name, "reason": "excluded by include/exclude"})
            continue
        reason = _node_skip_reason(node, inits, readers)
        if reason:
            skipped.append({"node": node.name, "reason": reason})
            continue
        found.append((node, onnx.numpy_helper.to_array(inits[node.input[1]])))
    return found, skipped


def prune_model(
    model: onnx.ModelProto, config: PatternConfig, only: set[str] | None = None
) -> tuple[bool, dict[str, Any]]:
    """Prune every eligible Conv in place; returns (weights or annotations changed, stats)."""
    found, skipped = eligible_convs(model, config, only)
    layers: dict[str, Any] = {}
    changed = False
    for node, weight in found:
        result = prune_kernels(weight, _layer_config(node, weight, config))
        layer_changed, layers[node.name] = write_layer(model, node, weight, result, config)
        changed |= layer_changed
    return changed, {"layers": layers, "skipped": skipped, **_totals(layers)}


def write_layer(model: onnx.ModelProto, node: onnx.NodeProto, weight: np.ndarray, result: LayerPruning,
                config: PatternConfig) -> tuple[bool, dict[str, Any]]:
    """Write one layer's pruned weights and annotations; returns (anything changed, its stats)."""
    weights_changed = not np.array_equal(result.weight, weight)
    if weights_changed:
        set_initializer(model.graph, node.input[1], result.weight.astype(weight.dtype))
    before = (ann.get_node_annotation(node, "pattern_library"), _map_or_none(model, node))
    annotate(model, node, result, config)
    after = (ann.get_node_annotation(node, "pattern_library"), _map_or_none(model, node))
    changed = weights_changed or not _same_annotations(before, after)
    return changed, {**result.stats, "weights_changed": weights_changed, "library": result.library}


def _may_conform(weight: np.ndarray, config: PatternConfig) -> bool:
    """No kernel holds more non-zeros than a pattern has (a cheap test before pruning to compare)."""
    k = weight.shape[2]
    counts = np.count_nonzero(weight.reshape(-1, k * weight.shape[3]), axis=1)
    return not counts.size or int(counts.max()) <= config.nonzeros_for(k)


def _layer_config(node: onnx.NodeProto, weight: np.ndarray, config: PatternConfig) -> PatternConfig:
    """With ``nonzeros`` automatic, an already pattern-pruned layer keeps its kernel size: the annotated
    ``pattern_nonzeros``, else the common non-zero count of its kernels if all non-zero kernels share one
    below the default."""
    if config.nonzeros:
        return config
    known = ann.get_node_annotation(node, "pattern_nonzeros")
    if isinstance(known, int) and known > 0:
        return replace(config, nonzeros=known)
    k = weight.shape[2]
    counts = np.count_nonzero(weight.reshape(-1, k * k), axis=1)
    counts = set(counts[counts > 0].tolist())
    if len(counts) == 1 and (n := counts.pop()) < default_nonzeros(k):
        return replace(config, nonzeros=n)
    return config


def _map_or_none(model: onnx.ModelProto, node: onnx.NodeProto) -> np.ndarray | None:
    return ann.get_node_map(model, node, "pattern")


def _same_annotations(before: tuple, after: tuple) -> bool:
    lib_a, map_a = before
    lib_b, map_b = after
    return lib_a == lib_b and map_a is not None and map_b is not None and np.array_equal(map_a, map_b)


def _node_skip_reason(node: onnx.NodeProto, inits: dict, readers: dict) -> str | None:
    if len(node.input) < 2 or node.input[1] not in inits:
        return "weight is not a plain initializer (quantized or computed); run pattern-prune before quantize"
    tensor = inits[node.input[1]]
    if tensor.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
        return f"weight type {onnx.TensorProto.DataType.Name(tensor.data_type)} is not floating point"
    if len(readers.get(node.input[1], [])) > 1:
        return "weight initializer is shared with another node"
    return skip_reason(tuple(tensor.dims), int(attr(node, "group", 1)))


def _totals(layers: dict[str, Any]) -> dict[str, Any]:
    before = sum(v["nonzero_before"] for v in layers.values())
    after = sum(v["nonzero_after"] for v in layers.values())
    return {
        "pruned_layers": len(layers),
        "nonzero_before": before,
        "nonzero_after": after,
        "compression": round(before / after, 3) if after else None,
    }


SEARCH_CONNECTIVITY = (0.0, 0.25, 0.5, 0.7)


class PatternPrune(Pass, name="pattern-prune", exact=False):
    """PatDNN pattern pruning (k-of-k² kernel patterns from a small library) + connectivity pruning."""

    options = (
        Option("patterns", int, PatternConfig.patterns, "pattern library size per layer (PatDNN: 8)", minimum=1),
        Option("nonzeros", int, PatternConfig.nonzeros, "weights kept per kernel; 0 = 4 for 3x3, round(4k²/9) "
               "otherwise (and, when connectivity is unset too, that count or one less, searched)", minimum=0),
        Option("connectivity", float, None, "fraction of kernels removed per layer (lowest L2 first); unset = "
               f"searched per layer over {', '.join(map(str, SEARCH_CONNECTIVITY))} under the accuracy budget "
               "(nothing lossy without labelled data)", minimum=0.0, maximum=1.0),
        Option("library", str, PatternConfig.library, "derived (PatDNN frequency), greedy (max kept energy) or canonical",
               choices=LIBRARIES),
        Option("include", list, [], "only Conv nodes whose name matches one of these globs"),
        Option("exclude", list, [], "skip Conv nodes whose name matches one of these globs"),
        Option("refit", bool, True, "refit the surviving weights and bias to the original outputs (calibration data)"),
    )

    @property
    def searching(self) -> bool:
        return self.opts["connectivity"] is None and not self.opts["nonzeros"]

    def config(self) -> PatternConfig:
        o = self.opts
        return PatternConfig(
            patterns=o["patterns"], nonzeros=o["nonzeros"], connectivity=o["connectivity"] or 0.0,
            library=o["library"], include=tuple(o["include"]), exclude=tuple(o["exclude"]),
        )

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        config = self.config()
        found, skipped = eligible_convs(model, config)
        layers: dict[str, Any] = {}
        changed = False
        sites = []
        shapes = value_shapes(model)
        self._refits: dict[tuple[str, str], _Refit] = {}
        for node, weight in found:
            layer_config = _layer_config(node, weight, config)
            result = prune_kernels(weight, layer_config) if _may_conform(weight, layer_config) else None
            if result is not None and np.array_equal(result.weight, weight):  # conforms: annotate only (exact)
                layer_changed, layers[node.name] = write_layer(model, node, weight, result, config)
                changed |= layer_changed
                continue
            sites.append(Site(node.name, node.input[0], dense_macs(node, weight.size, shapes)))
        outcome = compress_layerwise(model, sites, self._propose, ctx, force=not self.searching)
        for entry in outcome.chosen:
            layers[entry["node"]] = {**entry, **self._refits[(entry["node"], entry["setting"])].summary()}
        changed |= bool(outcome.chosen)
        stats = {"layers": layers, "skipped": skipped + outcome.skipped, **_totals(layers),
                 **({"note": outcome.note} if outcome.note else {})}
        return PassResult(outcome.model, changed, stats)

    def _settings(self, layer_config: PatternConfig, k: int) -> list[PatternConfig]:
        if not self.searching:
            return [layer_config]
        n = layer_config.nonzeros_for(k)
        counts = [c for c in (n, n - 1) if c >= 1]
        return [replace(layer_config, nonzeros=c, connectivity=conn) for c in counts for conn in SEARCH_CONNECTIVITY]

    def _propose(self, model: onnx.ModelProto, site: Site, x_comp: np.ndarray | None,
                 x_ref: np.ndarray | None) -> list[Candidate]:
        """Every (nonzeros, connectivity) candidate of one conv, refitted on the calibration data when given."""
        graph = model.graph
        node = next(n for n in graph.node if n.name == site.node)
        weight = onnx.numpy_helper.to_array(initializer_map(graph)[node.input[1]])
        bias = _bias(graph, node)
        constant_bias = bias is not None or len(node.input) < 3 or not node.input[2]
        stats = None
        if (self.opts["refit"] and x_comp is not None and x_ref is not None and constant_bias
                and int(attr(node, "group", 1)) == 1):
            geo = ConvGeometry.of(node, tuple(weight.shape[2:]), x_comp.shape[2:])
            stats = conv_stats(x_comp, x_ref, weight, bias, geo)
        config = self.config()
        candidates = [self._candidate(node.name, weight, bias, stats, c, site.macs, config)
                      for c in self._settings(_layer_config(node, weight, config), weight.shape[2])]
        return sorted(candidates, key=lambda c: c.cost)

    def _candidate(self, name: str, weight: np.ndarray, bias: np.ndarray | None, stats: LayerStats | None,
                   setting: PatternConfig, macs_dense: float, config: PatternConfig) -> Candidate:
        result = prune_kernels(weight, setting)
        support = pattern_support(result).reshape(weight.shape[0], -1)
        flat_bias = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
        masked = result.weight.reshape(weight.shape[0], -1).astype(np.float64)
        if stats is not None:
            error = relative_error(stats, masked, flat_bias)
        else:
            error = 1.0 - result.stats["energy_kept"]
        label = f"nonzeros={result.nonzeros},connectivity={setting.connectivity:g}"
        refit = _Refit(stats, support, result)
        self._refits[(name, label)] = refit
        pixels = macs_dense / max(weight.size, 1)
        info = {"setting": label, "nonzeros": result.nonzeros, "connectivity": setting.connectivity,
                "relative_error": float(error), "refitted": stats is not None,
                "macs_before": int(macs_dense), "macs_after": int(pixels * int(support.sum())),
                "dense_cost": float(macs_dense)}

        def apply(target: onnx.ModelProto) -> None:
            node = next(n for n in target.graph.node if n.name == name)
            fitted, fitted_bias = refit.result()
            write_layer(target, node, weight, replace(result, weight=fitted.astype(weight.dtype)), config)
            if fitted_bias is not None:
                _write_bias(target, node, fitted_bias.astype(weight.dtype))

        def preview(target: onnx.ModelProto) -> None:
            node = next(n for n in target.graph.node if n.name == name)
            write_layer(target, node, weight, result, config)

        return Candidate(float(info["macs_after"]), apply, info, preview)


def pattern_support(result: LayerPruning) -> np.ndarray:
    """Where a pruned layer may hold non-zeros: each kernel's library pattern, nothing for removed kernels."""
    cout, cin, k, _ = result.weight.shape
    masks = masks_of(result.library, k * k) if result.library else np.zeros((1, k * k), dtype=bool)
    ids = result.ids.reshape(-1)
    support = masks[np.maximum(ids, 0)] & (ids >= 0)[:, None]
    return support.reshape(cout, cin, k, k)


@dataclass
class _Refit:
    """The ridge refit of one candidate on its pattern support, solved on first use: most candidates are
    never evaluated. Without statistics the pruned weights stand and the bias is left as it is (None)."""

    stats: LayerStats | None
    support: np.ndarray  # (Cout, F) bool
    pruning: LayerPruning
    error: float | None = None
    _done: tuple[np.ndarray, np.ndarray | None] | None = None

    def result(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self._done is None:
            shape = self.pruning.weight.shape
            if self.stats is None:
                self._done = (self.pruning.weight, None)
            else:
                weights, bias = solve(self.stats, self.support)
                self.error = relative_error(self.stats, weights, bias)
                self._done = (weights.reshape(shape), bias)
        return self._done

    def summary(self) -> dict[str, Any]:
        fitted, _ = self.result()
        out = {**self.pruning.stats, "nonzero_after": int(np.count_nonzero(fitted)),
               "library": self.pruning.library, "weights_changed": True}
        if self.error is not None:
            out["refit_relative_error"] = float(self.error)
        return out


def _bias(graph: onnx.GraphProto, node: onnx.NodeProto) -> np.ndarray | None:
    if len(node.input) > 2 and node.input[2]:
        return get_initializer(graph, node.input[2])
    return None


def _write_bias(model: onnx.ModelProto, node: onnx.NodeProto, bias: np.ndarray) -> None:
    """Store a refitted bias: in place when the node owns its bias, else as a new initializer."""
    graph = model.graph
    has = len(node.input) > 2 and bool(node.input[2])
    if has and len(consumers(graph).get(node.input[2], [])) == 1 and node.input[2] in initializer_map(graph):
        set_initializer(graph, node.input[2], bias)
        return
    name = unique_name(all_names(graph), f"{node.name}.refit_bias")
    set_initializer(graph, name, bias)
    if has:
        node.input[2] = name
    else:
        while len(node.input) < 2:
            node.input.append("")
        node.input.append(name)
