"""The layer-by-layer search shared by every lossy pass: candidates, their cost, their damage, the choice.

A lossy pass names its *sites* (one node each, in graph order) and, per site, proposes *candidates*: ways
to rewrite that layer, each with an ``apply`` that rewrites a model (refitting the layer's free weights to
the reference layer's outputs with ``compiler.reconstruct``), optionally a cheaper ``preview`` of the same
structure, and ``info`` (``relative_error``: the refitted layer's output error on the calibration samples).

Without an accuracy budget and without a forced setting nothing runs (one note says why). With a forced
setting every site gets its one candidate, refitted in order on the inputs of the model compressed so far.
Otherwise the search runs in five steps, each linear in the number of layers:

1. **Candidates and their cost.** Each site's candidates are fitted on the reference model's own inputs.
   A candidate is kept only if it makes the layer cheaper — on the target's cost model, costed on the one
   layer (``compiler.site_cost``), or in MACs without one — and more accurate than every cheaper one. Its
   *saving* s = Δlatency/latency + Δenergy/energy of the whole model (or ΔMACs/MACs).
2. **Damage, probed.** Two candidates per layer (the cheapest and the middle one) are applied alone and
   their output distance k (``AccuracyBudget.damage``: the relative change of the centred logits on the
   probe images) is measured; the others' is predicted from their reconstruction error by the power law
   k = a · err^b through the two probes (b = 2 with one probe). Layers whose candidates carry no error are
   probed candidate by candidate.
3. **Allocation.** For a multiplier λ each layer takes argmax_c (s_c − λ·k_c) (or stays as it is); sweeping
   λ from ∞ to 0 orders the allocations from no compression to the most. Bisection over that order, each
   step the composed model *measured* on the steering images (``compiler.budget``, condition (1)), finds the
   most compressed allocation that fits.
4. **In-order refit.** Composing layers fitted alone adds their errors. When candidates can be refitted
   (``Candidate.refit``), the first allocation that did not fit is composed again with every chosen layer
   refitted, in order, on the inputs it receives in the compressed model (``REFIT_STAGES`` captures; each
   layer then absorbs part of the error before it). If that fits, the bisection continues above it with
   such compositions.
5. **Give-back.** Otherwise, from the first allocation that did not fit, layers are given back one at a
   time — the one with the highest predicted damage per unit of saving first — while the model still saves
   more than the bisection's choice; the first that fits, measured, wins.
The model written is the one measured.
Layers left as they are list why (``kind``: ``cost`` — not cheaper on the target, ``budget`` — the budget
did not reach them, ``data`` — no budget).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from .budget import AccuracyBudget, Measurement
from .graph import value_shapes
from .modelio import copy_model
from .passbase import PassContext
from .reconstruct import capture
from .site_cost import SiteCoster

RECONSTRUCTION_SAMPLES = 64
LAMBDA_STEPS = 48
GIVE_BACK_STEPS = 6
REFIT_STAGES = 4
REFERENCE_CACHE_BYTES = 1 << 30  # reference inputs kept for the refits (and captured together)
NO_BUDGET = ("no labelled data, so no accuracy budget: nothing lossy ran (give --data with labels, or force "
             "a setting with --set)")


@dataclass
class Site:
    node: str
    input: str
    macs: float


def dense_macs(node: onnx.NodeProto, weight_size: int, shapes: dict[str, list]) -> float:
    """A site's dense MACs: output positions × weight size. A Conv's positions are N·spatial, a Gemm's or
    MatMul's every output dim but the last; unknown or symbolic dims count as 1."""
    out = shapes.get(node.output[0]) or []
    known = [d if isinstance(d, int) and d > 0 else 1 for d in out]
    if node.op_type == "Conv":
        positions = int(np.prod(known[:1] + known[2:])) if known else 1
    else:
        positions = int(np.prod(known[:-1])) if len(known) > 1 else 1
    return float(positions * weight_size)


@dataclass
class Candidate:
    """One way to rewrite a layer. ``apply`` rewrites a model copy (refitting as needed); ``preview``, if
    given, writes the same structure without the refit, for costing many candidates cheaply."""

    cost: float
    apply: Callable[[onnx.ModelProto], None]
    info: dict[str, Any] = field(default_factory=dict)
    preview: Callable[[onnx.ModelProto], None] | None = None
    refit: Callable[[np.ndarray, np.ndarray], Candidate] | None = None  # same setting, other (x_comp, x_ref)
    # without a preview: the model the target costs, from the whole model with ``apply`` done (e.g. narrowed)
    costed_as: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None


Proposer = Callable[[onnx.ModelProto, Site, np.ndarray | None, np.ndarray | None], list[Candidate]]


@dataclass
class LayerwiseResult:
    model: onnx.ModelProto
    chosen: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    note: str | None = None


def reconstruction_feeds(ctx: PassContext) -> list[dict[str, np.ndarray]] | None:
    """The calibration samples used to refit layers, or None without real calibration data."""
    if not ctx.has_real_data:
        return None
    feeds = ctx.calibration or []
    step = max(1, len(feeds) // RECONSTRUCTION_SAMPLES)
    return feeds[::step][:RECONSTRUCTION_SAMPLES]


def idle_reason(ctx: PassContext, force: bool) -> str | None:
    """Why a lossy pass does nothing (no budget and no forced setting), or None when it runs."""
    return None if force or ctx.budget is not None else (ctx.idle_note or NO_BUDGET)


def compress_layerwise(model: onnx.ModelProto, sites: list[Site], propose: Proposer, ctx: PassContext,
                       force: bool) -> LayerwiseResult:
    """Choose one candidate (or none) per site; see the module docstring."""
    reason = idle_reason(ctx, force)
    if reason:
        return LayerwiseResult(model, [], [], note=reason)
    if not sites:
        return LayerwiseResult(model, [], [])
    if force:
        return _forced(model, sites, propose, ctx)
    return _Search(model, propose, ctx).run(sites)


def _forced(model: onnx.ModelProto, sites: list[Site], propose: Proposer, ctx: PassContext) -> LayerwiseResult:
    """Each site's one candidate, refitted in order on the inputs of the model compressed so far."""
    reference, current = copy_model(model), model
    feeds = reconstruction_feeds(ctx)
    chosen = []
    for i, site in enumerate(sites):
        ctx.report_progress(f"layer {i + 1}/{len(sites)}")
        x_ref = x_comp = None
        if feeds is not None:
            x_ref = capture(reference, [site.input], feeds)[site.input]
            x_comp = capture(current, [site.input], feeds)[site.input]
        candidates = propose(current, site, x_comp, x_ref)
        if candidates:
            current = _applied(current, [candidates[-1]])
            chosen.append({"node": site.node, **candidates[-1].info, "forced": True})
    return LayerwiseResult(current, chosen, [])


@dataclass
class _Option:
    candidate: Candidate
    saving: float
    error: float | None
    damage: float = 0.0  # measured or predicted output distance (AccuracyBudget.damage)


@dataclass
class _Layer:
    site: Site
    options: list[_Option]  # most saving first, error falling

    def pick(self, lam: float) -> int | None:
        best, pick = 0.0, None
        for i, o in enumerate(self.options):
            value = o.saving - lam * o.damage
            if value > best + 1e-15:
                best, pick = value, i
        return pick


Allocation = tuple[int | None, ...]


class _Search:
    """One pass's search over its sites (see the module docstring, steps 1–4)."""

    def __init__(self, model: onnx.ModelProto, propose: Proposer, ctx: PassContext):
        self.reference = model
        self.propose = propose
        self.ctx = ctx
        self.budget: AccuracyBudget = ctx.budget
        self.feeds = reconstruction_feeds(ctx)
        self.coster = SiteCoster(model, ctx.cost_fn) if ctx.cost_fn else None
        self.total = ctx.cost_fn(model) if ctx.cost_fn else None
        self.measured: dict[tuple[Allocation, bool], Measurement] = {}
        self.kept: tuple[float, Allocation | None, onnx.ModelProto | None, Measurement | None] = (
            0.0, None, None, None)  # the most saving allocation that fit so far: saving, allocation, model
        self.x_ref: dict[str, np.ndarray] = {}  # reference inputs of the sites, captured once
        self.log: dict[str, Any] = {"pass": ctx.pass_name}

    def run(self, sites: list[Site]) -> LayerwiseResult:
        total_macs = sum(s.macs for s in sites) or 1.0
        layers, skipped = [], []
        done = 0
        for group in self._capture_groups(sites):
            inputs = self._reference_inputs([site.input for site in group]) if self.feeds is not None else {}
            for site in group:
                done += 1
                self.ctx.report_progress(f"layer {done}/{len(sites)}: candidates")
                layer, reason = self._layer(site, total_macs, inputs.get(site.input))
                if layer is None:
                    skipped.append({"node": site.node, "reason": reason, "kind": "cost"})
                else:
                    layers.append(layer)
        for i, layer in enumerate(layers):
            self.ctx.report_progress(f"layer {i + 1}/{len(layers)}: damage probe")
            self._probe(layer)
        allocation = self._choose(layers) if layers else ()
        return self._result(layers, allocation, skipped)

    # step 1
    def _capture_groups(self, sites: list[Site]) -> list[list[Site]]:
        """Consecutive sites whose reference inputs together fit in ``REFERENCE_CACHE_BYTES``, each group
        captured in one run of the model (a site of unknown input size is a group of its own)."""
        shapes = value_shapes(self.reference)
        samples = len(self.feeds or [])
        groups: list[list[Site]] = []
        size = 0
        for site in sites:
            dims = shapes.get(site.input) or []
            known = len(dims) > 1 and all(isinstance(d, int) and d > 0 for d in dims[1:])
            need = samples * 4 * int(np.prod(dims[1:])) if known else REFERENCE_CACHE_BYTES + 1
            if not groups or size + need > REFERENCE_CACHE_BYTES:
                groups.append([])
                size = 0
            groups[-1].append(site)
            size += need
        return groups

    def _layer(self, site: Site, total_macs: float, x: np.ndarray | None) -> tuple[_Layer | None, str]:
        candidates = self.propose(self.reference, site, x, x)
        if not candidates:
            return None, "no candidate applies to this layer"
        if self.coster is None:
            options = [_Option(c, (c.info.get("dense_cost", site.macs) - c.cost) / total_macs,
                               c.info.get("relative_error")) for c in candidates]
            reason = "compression would not reduce the layer's MACs"
        else:
            options = [self._costed(site, c) for c in candidates]
            reason = "compression would not make the layer faster and cheaper on the target"
        paying = sorted((o for o in options if o.saving > 0 and math.isfinite(o.saving)), key=lambda o: -o.saving)
        kept = _pareto(paying)
        return (_Layer(site, kept), "") if kept else (None, reason)

    def _costed(self, site: Site, c: Candidate) -> _Option:
        if c.preview is not None:
            base = self.coster.base(site.node)
            latency, energy = self.coster.rewritten(site.node, c.preview)
        else:  # rewrites more than its layer (e.g. requantizes the model): cost the whole model
            base = self.total
            applied = _applied(self.reference, [c])
            latency, energy = self.ctx.cost_fn(c.costed_as(applied) if c.costed_as else applied)
        c.info = {**c.info, "target_latency_delta_s": latency - base[0], "target_energy_delta_j": energy - base[1]}
        if not (latency < base[0] and energy <= base[1]):
            return _Option(c, 0.0, None)
        saving = (base[0] - latency) / self.total[0] + (base[1] - energy) / max(self.total[1], 1e-30)
        return _Option(c, saving, c.info.get("relative_error"))

    # step 2
    def _probe(self, layer: _Layer) -> None:
        options = layer.options
        if any(o.error is None for o in options) or len(options) <= 2:
            for o in options:
                o.damage = self.budget.damage(_applied(self.reference, [o.candidate]))
        else:
            probes = [options[0], options[len(options) // 2]]
            for o in probes:
                o.damage = self.budget.damage(_applied(self.reference, [o.candidate]))
            a, b = _power_law(*((max(o.error, 1e-12), max(o.damage, 1e-15)) for o in probes))
            for o in options:
                if all(o is not p for p in probes):
                    o.damage = a * max(o.error, 1e-12) ** b
        for o in options:
            o.damage = max(o.damage, 1e-12)

    # steps 3, 4 and 5
    def _choose(self, layers: list[_Layer]) -> Allocation:
        path = _lambda_path(layers)
        self.log["allocations"] = len(path)
        lo, hi = self._bisect(layers, path, 0, len(path) - 1, refit=False)  # path[0] compresses nothing: fits
        if hi == lo:
            return path[lo]
        refittable = self.feeds is not None and any(o.candidate.refit for layer in layers for o in layer.options)
        if refittable and self._fits(layers, path[hi], refit=True):
            lo, _ = self._bisect(layers, path, hi, len(path) - 1, refit=True)
            return path[lo]
        return self._give_back(layers, path[hi], _saving(layers, path[lo])) or path[lo]

    def _bisect(self, layers: list[_Layer], path: list[Allocation], lo: int, hi: int, refit: bool) -> tuple[int, int]:
        """(lo, hi): path[lo] the last allocation that fits, path[hi] the first that does not (lo == hi: the
        last one fits), given that path[lo] fits."""
        if self._fits(layers, path[hi], refit):
            return hi, hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._fits(layers, path[mid], refit):
                lo = mid
            else:
                hi = mid
        return lo, hi

    def _give_back(self, layers: list[_Layer], start: Allocation, floor: float) -> Allocation | None:
        current = list(start)
        for _ in range(GIVE_BACK_STEPS):
            worst = max((i for i, pick in enumerate(current) if pick is not None),
                        key=lambda i: layers[i].options[current[i]].damage / layers[i].options[current[i]].saving,
                        default=None)
            if worst is None:
                return None
            current[worst] = None
            if _saving(layers, tuple(current)) <= floor:
                return None
            if self._fits(layers, tuple(current), refit=False):
                return tuple(current)
        return None

    def _fits(self, layers: list[_Layer], allocation: Allocation, refit: bool) -> bool:
        key = (allocation, refit)
        self.ctx.report_progress(f"composed model {len(self.measured) + 1}: measuring")
        if key not in self.measured:
            model = self._composed(layers, allocation) if refit else _applied(
                self.reference, _candidates(layers, allocation))
            m = self.budget.measure(model)
            self.measured[key] = m
            saving = _saving(layers, allocation)
            if self.budget.fits(m) and saving > self.kept[0]:
                self.kept = (saving, allocation, model, m)
            self.log.setdefault("trace", []).append({
                "layers": sum(p is not None for p in allocation), "saving": round(saving, 5), "refit": refit,
                "drop_points": round(m.drop_points, 3), "margin_points": round(m.margin_points, 3),
                "flip_rate": round(m.flip_rate, 5), "kl": round(m.kl, 5), "fits": self.budget.fits(m)})
        return self.budget.fits(self.measured[key])

    def _composed(self, layers: list[_Layer], allocation: Allocation) -> onnx.ModelProto:
        """The allocation applied, each chosen layer refitted on the inputs it receives in the compressed
        model, so that it absorbs part of the error of the layers before it. In order, in at most
        ``REFIT_STAGES`` stages: the inputs of one stage's layers are captured in one run of the model with
        every earlier stage refitted and the later layers as first fitted (every layer its own stage would
        be the exact in-order refit, one capture per layer)."""
        chosen = [(layer.site, layer.options[p].candidate) for layer, p in zip(layers, allocation, strict=True)
                  if p is not None]
        current = [c for _, c in chosen]
        refittable = [i for i, (_, c) in enumerate(chosen) if c.refit is not None]
        if not refittable or self.feeds is None:
            return _applied(self.reference, current)
        for stage in np.array_split(np.array(refittable), min(REFIT_STAGES, len(refittable))):
            model = _applied(self.reference, current)
            for group in self._capture_groups([chosen[i][0] for i in stage]):  # memory-bounded captures
                names = [site.input for site in group]
                x_comp = capture(model, names, self.feeds, self.budget.batched)
                x_ref = self._reference_inputs(names)
                for i in stage:
                    site, candidate = chosen[i]
                    if site.input in x_comp:
                        current[i] = candidate.refit(x_comp[site.input], x_ref[site.input])
        return _applied(self.reference, current)

    def _reference_inputs(self, names: list[str]) -> dict[str, np.ndarray]:
        """The reference model's values of ``names``, from the cache where it holds them; what is captured
        again is kept only while the cache stays under ``REFERENCE_CACHE_BYTES``."""
        missing = [n for n in names if n not in self.x_ref]
        found = capture(self.reference, missing, self.feeds, self.budget.batched) if missing else {}
        if sum(x.nbytes for x in (*self.x_ref.values(), *found.values())) <= REFERENCE_CACHE_BYTES:
            self.x_ref.update(found)
        return {n: self.x_ref[n] if n in self.x_ref else found[n] for n in names}

    def _result(self, layers: list[_Layer], allocation: Allocation, skipped: list[dict[str, str]]) -> LayerwiseResult:
        if not any(p is not None for p in allocation):
            model, final = self.reference, None
        elif self.kept[1] == allocation:  # the most saving allocation that fit: its measured model
            model, final = self.kept[2], self.kept[3]
        else:  # pragma: no cover - the choice is always the most saving fit
            model, final = _applied(self.reference, _candidates(layers, allocation)), None
        chosen = []
        for layer, pick in zip(layers, allocation, strict=True):
            if pick is None:
                skipped.append({"node": layer.site.node, "kind": "budget",
                                "reason": "the accuracy budget did not reach this layer (damage per saving too high)"})
                continue
            o = layer.options[pick]
            chosen.append({"node": layer.site.node, **o.candidate.info, "damage": round(o.damage, 6),
                           "saving": round(o.saving, 6), "candidates": len(layer.options)})
        self.log.update(measured=len(self.measured), chosen=len(chosen),
                        final=final.to_dict() if final else None)
        self.budget.log.append(self.log)
        return LayerwiseResult(model, chosen, skipped)


def _power_law(p: tuple[float, float], q: tuple[float, float]) -> tuple[float, float]:
    """(a, b) of k = a·err^b through two (err, k) points, b clipped to [1, 4] (2 when the errors coincide)."""
    (e0, k0), (e1, k1) = p, q
    b = 2.0 if abs(np.log(e0 / e1)) < 1e-9 else float(np.clip(np.log(k0 / k1) / np.log(e0 / e1), 1.0, 4.0))
    return k0 / e0**b, b


def _candidates(layers: list[_Layer], allocation: Allocation) -> list[Candidate]:
    return [layer.options[pick].candidate for layer, pick in zip(layers, allocation, strict=True) if pick is not None]


def _saving(layers: list[_Layer], allocation: Allocation) -> float:
    return sum(layers[i].options[p].saving for i, p in enumerate(allocation) if p is not None)


def _lambda_path(layers: list[_Layer]) -> list[Allocation]:
    """Distinct allocations for λ from ∞ (nothing) to 0 (every layer at its most saving candidate)."""
    ratios = [o.saving / o.damage for layer in layers for o in layer.options]
    top, bottom = max(ratios) * 2.0, min(ratios) / 2.0
    path: list[Allocation] = [tuple(None for _ in layers)]
    for lam in np.geomspace(top, bottom, LAMBDA_STEPS):
        allocation = tuple(layer.pick(float(lam)) for layer in layers)
        if allocation != path[-1]:
            path.append(allocation)
    most = tuple(0 for _ in layers)
    if path[-1] != most:
        path.append(most)
    return path


def _applied(model: onnx.ModelProto, candidates: list[Candidate]) -> onnx.ModelProto:
    trial = copy_model(model)
    for candidate in candidates:
        candidate.apply(trial)
    return trial


def _pareto(options: list[_Option]) -> list[_Option]:
    """Of options ordered most saving first, those more accurate (lower error) than every one saving more."""
    kept: list[_Option] = []
    best = float("inf")
    for o in options:
        if o.error is None:
            kept.append(o)
        elif o.error < best:
            kept.append(o)
            best = o.error
    return kept
