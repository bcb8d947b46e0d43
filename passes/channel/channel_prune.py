"""channel-prune: remove whole output channels (filters) of Conv / Gemm layers, with every channel they are tied
to, and narrow every layer that reads them.

Channel groups. ``shrink``'s analysis (``passes/shrink/analysis.py``) joins the tensors whose channels are the
same channels into *spaces*: a residual Add ties its two inputs and its output, Concat-free elementwise ops
and pooling pass channels through, a Flatten feeding an FC layer links the FC's columns. A space's
*producers* are the layers that write it (for a residual stream: the stem and the last conv of every block).
Channel c of a space goes only with all its producers' filter c (DepGraph's rule: tied channels go together
or not at all). A space is left alone, with its reason, when the analysis froze it (a graph input or output,
an op it cannot see through), when a depthwise or MatMul layer writes it (the coupling is not modelled), or
when a producer's weight is quantized.

Saliency. Without data, for space S with producers P and width C, channel c scores

    s_c = Σ_{p ∈ P}  ‖W_p[c]‖² / mean_c' ‖W_p[c']‖²          (each producer normalised by its mean filter energy)

With calibration data, the share of the readers' reference outputs each channel carries (``readers.py``).
The lowest scores go first.

Removing means: every producer's filter c and bias c become zero, so channel c is the constant 0 everywhere
in the space (BatchNorms are folded before; ReLU keeps 0), and ``shrink`` then drops it from the producers
and the readers exactly: before any refit the pass is exactly "the original model with those filters
zeroed", narrowed. With calibration data (``refit``) every reader's remaining weights and bias are then
refitted to its reference output by least squares (``readers.py``, ThiNet's refit).

Strength. The kept count of a group is a multiple of ``block`` (onnxruntime's CPU convolutions work in
blocks of 8 channels with AVX2, 16 with AVX-512; a narrower layer still pays for a block), never below one
block. A forced ``ratio`` removes ⌊ratio·C⌋ channels of every group (rounded so). Otherwise, under the
accuracy budget (``compiler.layerwise``: one site per group, candidates = the kept counts of RATIOS), the
search chooses each group's count; a candidate's damage is the measured change of the model's outputs, its
saving (``objective``):

    latency (the onnxruntime target's default): the share of the measured layer time it removes, from
            one-node islands of the group's layers at each width timed on this machine (``latency.py``);
            the narrowed model is then timed whole against the pass's input, and kept only if faster at
            every batch;
    macs (elsewhere): on a simulator target, the target's cost of the whole model narrowed by it
            (``compiler.layerwise``: latency and energy; zeroed filters alone would cost the same), else
            the share of the sites' MACs it removes from the producers and the readers.

Without labelled data and without ``ratio`` nothing changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from ...compiler.graph import attr, get_initializer, set_initializer, value_shapes
from ...compiler.layerwise import (
    Candidate,
    Site,
    compress_layerwise,
    dense_macs,
    idle_reason,
    reconstruction_feeds,
)
from ...compiler.modelio import copy_model
from ...compiler.passbase import Option, Pass, PassContext, PassResult, batch_sizes
from ...compiler.reconstruct import capture
from ...compiler.stats import model_stats
from ..prune.prune import layer_stats, prunable_layer, write_bias
from ..shrink.analysis import Analysis, ChannelLayer, analyse
from ..shrink.shrink import Shrink
from .readers import ReaderFit

RATIOS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75)  # searched fractions of a group's channels removed
LARGE_RUN_MACS = 16e9  # the largest batch x MACs timed per run (about half a second on two cores)


@dataclass
class ChannelGroup:
    """Channels that go together: the layers writing them and the layers reading them."""

    producers: list[ChannelLayer]
    readers: list[ChannelLayer]
    width: int
    macs: float  # the producers' and the readers' dense MACs

    @property
    def names(self) -> list[str]:
        return [p.node.name for p in self.producers]

    def site(self) -> Site:
        return Site(self.producers[0].node.name, self.producers[0].node.output[0], self.macs)


class ChannelPrune(Pass, name="channel-prune"):
    """Remove whole filters with the channels tied to them (residual Adds), refit the readers, narrow (shrink)."""

    options = (
        Option("ratio", float, None, "force this fraction of every channel group's channels removed (unset: "
               "searched per group under the accuracy budget)", minimum=0.0, maximum=0.95),
        Option("block", int, 8, "keep a multiple of this many channels per group (onnxruntime's CPU block: 8 "
               "with AVX2, 16 with AVX-512)", minimum=1),
        Option("rounding", str, "up", "how a kept count becomes a block multiple: up (never more than ratio removed) "
               "or nearest (repeated small ratios still remove channels)", choices=("up", "nearest")),
        Option("refit", bool, True, "refit the readers of removed channels on the calibration data (least squares)"),
        Option("objective", str, "auto", "what a candidate saves: latency (measured on onnxruntime), macs (a "
               "simulator target's cost, else MACs), or auto (latency on the onnxruntime target, else macs)",
               choices=("auto", "latency", "macs")),
        Option("batches", list, ["1", "64"], "objective latency: batch sizes timed (geometric mean; a batch over "
               f"{LARGE_RUN_MACS / 1e9:g} GMACs a run is left out)"),
        Option("margin", float, 0.1, "objective latency: keep the narrowed model only if measured at least this "
               "much faster at every batch (a smaller gain is not worth its accuracy cost, nor above timing noise "
               "on small models)", minimum=0.0, maximum=0.5),
        Option("threads", int, None, "objective latency: onnxruntime threads (unset: its default)", minimum=1),
    )

    def __init__(self, **opts: Any):
        super().__init__(**opts)
        self.opts["batches"] = batch_sizes(self.opts["batches"], "channel-prune.batches")

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        forced = bool(self.opts["ratio"])
        reason = idle_reason(ctx, forced)
        if reason:
            return PassResult(model, False, {"groups": [], "note": reason})
        groups, skipped = channel_groups(model)
        if not groups:
            return PassResult(model, False, {"groups": [], "skipped": skipped})
        self._reference, self._ctx = model, ctx
        self._groups = {g.site().node: g for g in groups}
        self._fits: dict[str, list[ReaderFit]] = {}
        self._feeds = reconstruction_feeds(ctx) if self.opts["refit"] else None
        self._latency, original = None, None
        if not forced and self._measures(ctx):
            original = copy_model(model)
            groups = self._measured_groups(model, groups, skipped)
            if not groups:
                return PassResult(model, False, {"groups": [], "skipped": skipped})
        result = compress_layerwise(model, [g.site() for g in groups], self._propose, ctx, force=forced)
        skipped += result.skipped
        note = {"note": result.note} if result.note else {}
        if not result.chosen:
            return PassResult(result.model, False, {"groups": [], "skipped": skipped, **note})
        narrowed = Shrink().run(result.model, ctx)
        stats: dict[str, Any] = {"groups": result.chosen, "skipped": skipped,
                                 "channels_removed": narrowed.stats.get("channels_removed", 0), **note}
        if original is not None:
            return self._checked(original, narrowed.model, ctx, stats)
        return PassResult(narrowed.model, True, stats)

    def _kept_counts(self, width: int) -> list[int]:
        """A group's candidate kept counts: of the forced ``ratio``, else of every searched ratio."""
        ratios = (self.opts["ratio"],) if self.opts["ratio"] else RATIOS
        return kept_counts(width, self.opts["block"], ratios, self.opts["rounding"] == "nearest")

    def _narrowed(self, model: onnx.ModelProto) -> onnx.ModelProto:
        return Shrink().run(model, self._ctx).model

    def _measures(self, ctx: PassContext) -> bool:
        objective = self.opts["objective"]
        return objective == "latency" or (objective == "auto" and ctx.target == "onnxruntime")

    def _batches(self, model: onnx.ModelProto) -> list[int]:
        batches = self.opts["batches"]
        macs = max(model_stats(model).macs, 1.0)
        return [b for b in batches if b == min(batches) or b * macs <= LARGE_RUN_MACS]

    def _measured_groups(self, model: onnx.ModelProto, groups: list[ChannelGroup],
                         skipped: list[dict[str, Any]]) -> list[ChannelGroup]:
        """Times every group's islands (``self._latency``: T_g(k) in milliseconds per group and candidate count)
        and returns the groups measured; the others go to ``skipped``."""
        from .latency import island_signature, time_islands  # onnxruntime only when measuring

        shapes = value_shapes(model)
        plans: dict[str, dict[int, list]] = {}
        measured = []
        for group in groups:
            counts = [group.width, *self._kept_counts(group.width)]
            plan = {k: [island_signature(layer, shapes, group.width, k, producer)
                        for layers, producer in ((group.producers, True), (group.readers, False)) for layer in layers]
                    for k in counts}
            if any(None in sigs for sigs in plan.values()):
                skipped.append({"layers": group.names, "reason": "a layer's time cannot be measured alone (a grouped "
                                "conv, a MatMul or an unknown input shape)"})
            else:
                plans[group.names[0]] = plan
                measured.append(group)
        signatures = {sig for plan in plans.values() for sigs in plan.values() for sig in sigs}
        self._timed_batches = self._batches(model)
        times = time_islands(signatures, list(model.opset_import), self._timed_batches, self.opts["threads"])
        self._latency = {key: {k: sum(times[sig] for sig in sigs) for k, sigs in plan.items()}
                         for key, plan in plans.items()}
        self._total_macs = sum(g.macs for g in measured) or 1.0
        self._total_ms = sum(self._latency[g.names[0]][g.width] for g in measured)
        return measured

    def _checked(self, original: onnx.ModelProto, narrowed: onnx.ModelProto, ctx: PassContext,
                 stats: dict[str, Any]) -> PassResult:
        """The narrowed model if measured faster than ``original`` at every batch by ``margin``, else ``original``."""
        from .latency import compare_whole

        x = next(iter(ctx.calibration_feeds(original, 1)[0].values()))
        timing = compare_whole(original, narrowed, x, self._timed_batches, self.opts["threads"])
        stats["whole_model_latency"] = timing
        speedups = [v for k, v in timing.items() if k.startswith("speedup_")]
        if min(speedups) >= 1.0 + self.opts["margin"]:
            return PassResult(narrowed, True, stats)
        stats["note"] = (f"the narrowed model was measured {min(speedups):.2f}x the input's speed (needs "
                         f"{1 + self.opts['margin']:.2f}x at every batch): kept the input")
        return PassResult(original, False, {**stats, "groups": []})

    def _propose(self, model: onnx.ModelProto, site: Site, _x_comp, _x_ref) -> list[Candidate]:
        group = self._groups[site.node]
        fits = self._reader_fits(group)
        order = _order(group, fits)
        return sorted((self._candidate(group, fits, order[: group.width - kept], kept)
                       for kept in self._kept_counts(group.width)),
                      key=lambda c: c.cost)

    def _reader_fits(self, group: ChannelGroup) -> list[ReaderFit]:
        """The group's readers with their reference statistics (captured once per group), when refitting."""
        key = group.names[0]
        if key not in self._fits:
            layers = [prunable_layer(self._reference, r.node.name) for r in group.readers]
            refit = [self._feeds is not None and layer.refittable for layer in layers]
            names = [layer.node.input[0] for layer, fit in zip(layers, refit, strict=True) if fit]
            inputs = capture(self._reference, names, self._feeds) if names else {}
            self._fits[key] = [ReaderFit(layer, group.width, layer_stats(layer, inputs[layer.node.input[0]],
                                                                         inputs[layer.node.input[0]]) if fit else None)
                               for layer, fit in zip(layers, refit, strict=True)]
        return self._fits[key]

    def _candidate(self, group: ChannelGroup, fits: list[ReaderFit], removed: list[int], kept: int) -> Candidate:
        refits = [fit.refit(removed) if fit.stats is not None else None for fit in fits]
        errors = [(r[2], float(f.stats.target_energy.sum())) for f, r in zip(fits, refits, strict=True) if r]
        error = sum(e * w for e, w in errors) / max(sum(w for _, w in errors), 1e-30) if errors else None

        def apply(m: onnx.ModelProto) -> None:
            for layer in group.producers:
                _zero_filters(m.graph, layer, removed)
            for fit, refit in zip(fits, refits, strict=True):
                if refit is not None:
                    _write_reader(m, fit, refit[0], refit[1])

        info = {"layers": group.names, "width": group.width, "kept": kept, "removed": removed,
                **({"relative_error": error} if error is not None else {})}
        if self._latency is None:  # a simulator target costs the narrowed model (zeroed filters are not free)
            return Candidate(cost=group.macs * kept / group.width, apply=apply, info={**info, "dense_cost": group.macs},
                             costed_as=self._narrowed)
        # measured milliseconds, scaled so that the sites' total is their MACs (what the search divides by)
        times = self._latency[group.names[0]]
        scale = self._total_macs / self._total_ms
        info.update(dense_cost=times[group.width] * scale, latency_ms=round(times[kept], 5),
                    dense_latency_ms=round(times[group.width], 5))
        return Candidate(cost=times[kept] * scale, apply=apply, info=info)


def channel_groups(model: onnx.ModelProto) -> tuple[list[ChannelGroup], list[dict[str, Any]]]:
    """The prunable channel groups of ``model`` and the groups left alone, with their reason."""
    analysis = analyse(model)
    shapes = value_shapes(model)
    groups, skipped = [], []
    for sid, width in sorted(analysis.width.items()):
        producers = [layer for layer in analysis.layers if analysis.space.get(layer.dst) == sid]
        reason = _unprunable(model.graph, analysis, sid, producers)
        if reason:
            if producers:
                skipped.append({"layers": [p.node.name for p in producers], "reason": reason})
            continue
        readers = [layer for layer in analysis.layers if analysis.space.get(layer.src) == sid]
        macs = sum(dense_macs(layer.node, layer.weight.size, shapes) for layer in producers + readers)
        groups.append(ChannelGroup(producers, readers, width, macs))
    return groups, skipped


def kept_counts(width: int, block: int, ratios: tuple[float, ...], nearest: bool = False) -> list[int]:
    """Distinct kept channel counts below ``width`` for the removed ``ratios``: multiples of ``block`` (rounded up,
    or to the nearest), at least one block, most kept first."""
    blocks = (lambda v: math.floor(v + 0.5)) if nearest else math.ceil
    counts = {min(width, max(block, blocks((1.0 - r) * width / block) * block)) for r in ratios}
    return sorted((c for c in counts if c < width), reverse=True)


def _order(group: ChannelGroup, fits: list[ReaderFit]) -> list[int]:
    """The group's channels, least salient first (readers' output shares with data, else filter energies)."""
    measured = [fit for fit in fits if fit.stats is not None]
    if measured:
        score = sum(fit.contribution() for fit in measured)
    else:
        score = np.zeros(group.width)
        for layer in group.producers:
            energy = np.square(layer.weight.reshape(layer.weight.shape[0], -1)).sum(axis=1)
            score += energy / max(float(energy.mean()), 1e-30)
    return [int(c) for c in np.argsort(score, kind="stable")]


def _write_reader(model: onnx.ModelProto, fit: ReaderFit, rows: np.ndarray, bias: np.ndarray | None) -> None:
    """Write a reader's refitted rows, keeping zero the rows another group zeroed in ``model``."""
    current = prunable_layer(model, fit.layer.node.name)
    live = np.any(current.rows != 0, axis=1)
    if current.bias is not None:
        live |= np.broadcast_to(current.bias.reshape(-1), live.shape) != 0
    graph = model.graph
    node = current.node
    set_initializer(graph, node.input[1], current.stored(np.where(live[:, None], rows, 0.0)).astype(current.weight.dtype))
    if bias is not None:
        write_bias(graph, node, current, np.where(live, bias, 0.0).astype(current.weight.dtype))


def _unprunable(graph: onnx.GraphProto, a: Analysis, sid: str, producers: list[ChannelLayer]) -> str | None:
    if sid in a.frozen:
        return a.frozen[sid]
    if not producers:
        return "no layer writes these channels"
    if any(p.kind not in ("conv", "gemm") for p in producers):
        return "written by a depthwise or MatMul layer (coupling not modelled)"
    if any(p.weight_dq is not None or p.bias_dq is not None for p in producers):
        return "a producer's weights are quantized"
    stored = {t.name for t in graph.initializer}
    if any(p.node.input[1] not in stored or (len(p.node.input) > 2 and p.node.input[2] and p.node.input[2]
                                                 not in stored) for p in producers):
        return "a producer's weight or bias is not an initializer"
    return None


def _zero_filters(graph: onnx.GraphProto, layer: ChannelLayer, channels: list[int]) -> None:
    """Filter c and bias c of the layer's stored tensors become zero."""
    node = layer.node
    name = node.input[1]
    weight = get_initializer(graph, name).copy()
    if layer.kind == "gemm" and not attr(node, "transB", 0):
        weight[:, channels] = 0.0  # stored [in, out]
    else:
        weight[channels] = 0.0
    set_initializer(graph, name, weight)
    if len(node.input) > 2 and node.input[2]:
        bias = get_initializer(graph, node.input[2]).copy()
        bias[..., channels] = 0.0  # a Gemm's C may be [out] or [1, out]
        set_initializer(graph, node.input[2], bias)
