"""The layer-by-layer driver shared by every lossy pass: reconstruction inputs, budget, cost filter.

A lossy pass names its *sites* (one node each, in graph order) and, per site, proposes *candidates*: ways
to rewrite that layer, each with a cost key (lower = cheaper) and an ``apply`` that rewrites a copy of the
model. For every site the driver
  1. captures the site's input on the calibration samples twice: from the reference model (the model the
     pass received) and from the model compressed so far, and hands both to the pass, which refits the
     layer's free weights with ``compiler.reconstruct`` (target: the reference output);
  2. drops candidates that the target's cost model (``PassContext.cost_fn``, wired in by the compile
     driver; passes never import backends) says are not cheaper in latency and energy than leaving the
     layer as it is, or, without a cost model, whose MACs are not lower;
  3. with an accuracy budget, keeps the cheapest candidate whose validation accuracy stays within the
     allowance released so far (``compiler.budget``); without one the layer stays as it is;
  4. records the choice, or the reason the layer was left alone (``kind``: ``cost`` — not cheaper on the
     target, ``budget`` — every candidate breaks it, ``data`` — no labelled validation data).
With ``force`` (the user fixed the pass's setting) each site gets its one proposed candidate, refitted but
neither filtered nor searched; the compile driver's final budget check still applies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import onnx

from .budget import cheapest_within
from .modelio import copy_model
from .passbase import PassContext
from .reconstruct import capture

RECONSTRUCTION_SAMPLES = 64


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


Proposer = Callable[[onnx.ModelProto, Site, np.ndarray | None, np.ndarray | None], list[Candidate]]


@dataclass
class LayerwiseResult:
    model: onnx.ModelProto
    chosen: list[dict[str, Any]]
    skipped: list[dict[str, str]]


def reconstruction_feeds(ctx: PassContext) -> list[dict[str, np.ndarray]] | None:
    """The calibration samples used to refit layers, or None without real calibration data."""
    if not ctx.has_real_data:
        return None
    feeds = ctx.calibration or []
    step = max(1, len(feeds) // RECONSTRUCTION_SAMPLES)
    return feeds[::step][:RECONSTRUCTION_SAMPLES]


def compress_layerwise(model: onnx.ModelProto, sites: list[Site], propose: Proposer, ctx: PassContext,
                       force: bool) -> LayerwiseResult:
    """Walk ``sites`` in order, choosing one candidate (or none) per layer; see the module docstring.

    Layers that no candidate fitted the allowance released so far get a second chance at the end, with
    whatever the whole pass's allowance has left."""
    walk = _Walk(model, propose, ctx, force)
    budget = ctx.budget
    total_macs = sum(s.macs for s in sites) or 1.0
    covered = 0.0
    retry: list[Site] = []
    for site in sites:
        covered += site.macs
        allowance = walk.spent_before + budget.allowance(covered / total_macs) if budget is not None else 0.0
        if walk.visit(site, allowance) == "over budget":
            retry.append(site)
    for site in retry:
        walk.visit(site, walk.spent_before + budget.allowance(1.0))
    return LayerwiseResult(walk.current, walk.chosen, walk.skipped)


class _Walk:
    """The state of one pass over the sites: the reference, the model compressed so far, the records."""

    def __init__(self, model: onnx.ModelProto, propose: Proposer, ctx: PassContext, force: bool):
        self.reference = copy_model(model)
        self.current = model
        self.propose = propose
        self.ctx = ctx
        self.force = force
        self.feeds = reconstruction_feeds(ctx)
        self.chosen: list[dict[str, Any]] = []
        self.skipped: list[dict[str, str]] = []
        self.spent_before = 0.0
        budget = ctx.budget
        if budget is not None and not force:
            if budget.reference_accuracy is None:
                budget.set_reference(self.reference)
            self.spent_before = max(0.0, budget.drop_points(budget.accuracy(model)))
        self.base_cost = ctx.cost_fn(model) if ctx.cost_fn and not force else None

    def visit(self, site: Site, allowance: float) -> str:
        """Try to compress one site; returns "chosen", "skipped" or "over budget"."""
        x_ref = x_comp = None
        if self.feeds is not None:
            x_ref = capture(self.reference, [site.input], self.feeds)[site.input]
            x_comp = capture(self.current, [site.input], self.feeds)[site.input]
        candidates = self.propose(self.current, site, x_comp, x_ref)
        if self.force and candidates:
            self.current = _applied(self.current, candidates[-1])
            self.chosen.append({"node": site.node, **candidates[-1].info, "forced": True})
            return "chosen"
        candidates, self.base_cost, reason = _paying(self.current, candidates, self.ctx, self.base_cost)
        budget = self.ctx.budget
        if not candidates:
            self._skip(site, reason, "cost")
            return "skipped"
        if budget is None:
            self._skip(site, "no labelled validation data for the accuracy budget", "data")
            return "skipped"
        pick = cheapest_within(candidates, partial(_applied, self.current), budget, allowance)
        if pick is None:
            self._skip(site, f"every candidate breaks the accuracy budget ({allowance:.2f} validation points "
                             "allowed here)", "budget")
            return "over budget"
        self.current = pick.model
        self.skipped = [s for s in self.skipped if s["node"] != site.node]
        if self.ctx.cost_fn:
            self.base_cost = self.ctx.cost_fn(self.current)
        self.chosen.append({"node": site.node, **candidates[pick.index].info,
                            "validation_drop_points": round(budget.drop_points(pick.accuracy), 3),
                            "candidates": len(candidates), "evaluated": pick.tried})
        return "chosen"

    def _skip(self, site: Site, reason: str, kind: str) -> None:
        self.skipped = [s for s in self.skipped if s["node"] != site.node]
        self.skipped.append({"node": site.node, "reason": reason, "kind": kind})


def _applied(model: onnx.ModelProto, candidate: Candidate) -> onnx.ModelProto:
    trial = copy_model(model)
    candidate.apply(trial)
    return trial


def _previewed(model: onnx.ModelProto, candidate: Candidate) -> onnx.ModelProto:
    trial = copy_model(model)
    (candidate.preview or candidate.apply)(trial)
    return trial


def _paying(model: onnx.ModelProto, candidates: list[Candidate], ctx: PassContext,
            base_cost: tuple[float, float] | None) -> tuple[list[Candidate], tuple[float, float] | None, str]:
    """Candidates that make the model cheaper, ordered cheapest first, and the reason when none does."""
    if not candidates:
        return [], base_cost, "no candidate applies to this layer"
    if ctx.cost_fn is None or base_cost is None:
        kept = sorted((c for c in candidates if c.cost < c.info.get("dense_cost", float("inf"))),
                      key=lambda c: c.cost)
        return _pareto(kept), base_cost, "compression would not reduce the layer's MACs"
    scored = []
    for c in candidates:
        latency, energy = ctx.cost_fn(_previewed(model, c))
        if latency < base_cost[0] and energy <= base_cost[1]:
            c.info = {**c.info, "target_latency_s": latency, "target_energy_j": energy}
            scored.append((latency, energy, c))
    scored.sort(key=lambda t: (t[0], t[1]))
    return _pareto([c for *_, c in scored]), base_cost, "compression would not make the layer faster and cheaper on the target"


def _pareto(candidates: list[Candidate]) -> list[Candidate]:
    """Of candidates ordered cheapest first, those more accurate (lower ``relative_error``) than every
    cheaper one: the list bisection needs, where error falls as cost rises."""
    kept: list[Candidate] = []
    best = float("inf")
    for c in candidates:
        err = c.info.get("relative_error")
        if err is None:
            kept.append(c)
        elif err < best:
            kept.append(c)
            best = err
    return kept
