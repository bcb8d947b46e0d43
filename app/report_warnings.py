"""Compile warnings: what a user should know before trusting the output (``report["warnings"]``).

One function, ``compile_warnings(report)``, reads the finished report and returns one-line strings. Each
check is a small function of the report taking part in ``CHECKS``; add a check by appending to that tuple.
Besides cost and size, the checks list the layers a lossy pass left uncompressed (with each reason) and
say when the test-split accuracy drop used ≥ 80 % of ``--max-accuracy-drop``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Report = dict[str, Any]


def compile_warnings(report: Report) -> list[str]:
    """Every warning of a compile report, in a stable order."""
    out: list[str] = []
    for check in CHECKS:
        out += check(report)
    return out


def _reference(cost: dict[str, Any]) -> str | None:
    baselines = cost.get("baselines") or {}
    return next((name for name, entry in baselines.items() if entry.get("reference")), None)


def worse_than_input(report: Report) -> list[str]:
    """The output is slower or uses more energy than the input model on its target."""
    cost = report.get("cost")
    name = _reference(cost) if cost else None
    if name is None:
        return []
    entry = cost["baselines"][name]
    subject = "the input model" if entry.get("model") == "input" else f"the baseline model {entry.get('model')}"
    out = []
    speed, gain = cost["speedup_vs"].get(name), cost["energy_gain_vs"].get(name)
    cause = likely_cause(report)
    if speed is not None and speed < 1:
        out.append(f"the output is {1 / speed:.3g}x slower than {subject} on {report['target']} (baseline "
                   f"'{name}'); likely cause: {cause}")
    if gain is not None and gain < 1:
        out.append(f"the output uses {1 / gain:.3g}x the energy of {subject} on {report['target']} (baseline "
                   f"'{name}'); likely cause: {cause}")
    return out


def likely_cause(report: Report) -> str:
    m = report["model"]
    if m["macs"] > m["macs_before"]:
        return f"the rewritten graph has more MACs ({m['macs']:,} vs {m['macs_before']:,})"
    hint = _TARGET_HINTS.get(report["target"], lambda r: None)(report)
    if hint:
        return hint
    if m["effective_macs"] >= m["effective_macs_before"]:
        return (f"the passes removed no work the target can skip (effective MACs {m['effective_macs']:,} vs "
                f"{m['effective_macs_before']:,})")
    return ("the work removed is smaller than the target's overheads on the rewritten layers (extra stages, "
            "index decoding, data movement); compare the per-layer costs")


def _escalate_hint(report: Report) -> str | None:
    layers = [layer for layer in report["cost"].get("layers", []) if layer.get("kind") == "decomposed"]
    if not layers:
        return None
    basis = sum(layer["basis_cycles"] for layer in layers)
    coef = sum(layer["coefficient_cycles"] for layer in layers)
    if basis > coef:
        return (f"the basis stage bounds the decomposed layers ({basis:,.0f} basis vs {coef:,.0f} coefficient "
                "cycles): layers with few input channels or large kernels leave the basis unit's columns "
                "idle, where the dense array unrolls output channels")
    density = sum(layer["coefficient_density"] for layer in layers) / len(layers)
    if density > 0.5:
        return (f"decomposed layers keep {density:.0%} of their coefficients, so they run two stages for "
                "about the work of one: train sparse coefficients with `pimc export decompose` (PENNI)")
    return None


_TARGET_HINTS: dict[str, Callable[[Report], str | None]] = {"escalate": _escalate_hint}


SLOWER_THAN_INPUT = 0.9  # a ratio below this is slower than the run-to-run spread of one short interleaved run


def slower_on_onnxruntime(report: Report) -> list[str]:
    """The onnxruntime output is measured slower than the input model."""
    latency = report.get("latency") or {}
    if not latency.get("measured"):
        return []
    slow = [b for b in latency["batches"] if latency[f"speedup_b{b}"] < SLOWER_THAN_INPUT]
    if not slow:
        return []
    shown = ", ".join(f"batch {latency[f'batch_b{b}']}: {1 / latency[f'speedup_b{b}']:.2f}x slower" for b in slow)
    return [f"the output runs slower than the input on onnxruntime ({shown}; measured on this machine): "
            "int8 kernels lose on thin layers on CPUs without VNNI; try --set quantize.kernels=measured"
            if _quantized(report) else f"the output runs slower than the input on onnxruntime ({shown}; "
            "measured on this machine)"]


def _quantized(report: Report) -> bool:
    return any(p.get("name") == "quantize" and p.get("changed") for p in report.get("passes") or [])


def larger_than_input(report: Report) -> list[str]:
    """The output has more params or MACs than the input."""
    m = report["model"]
    out = []
    if m["params"] > m["params_before"]:
        out.append(f"the output has more params than the input ({m['params']:,} vs {m['params_before']:,}; "
                   "every weight initializer counts, fixed ones included)")
    if m["macs"] > m["macs_before"]:
        out.append(f"the output has more MACs than the input ({m['macs']:,} vs {m['macs_before']:,})")
    return out


def skipped_by_cost_model(report: Report) -> list[str]:
    """Layers the target's cost model did not cost as planned."""
    cost = report.get("cost") or {}
    skipped = cost.get("skipped") or []
    if not skipped:
        return []
    shown = "; ".join(f"{item.get('node') or item.get('layer')}: {item.get('reason')}" for item in skipped[:3])
    more = f"; ... {len(skipped) - 3} more in cost.skipped" if len(skipped) > 3 else ""
    return [f"{len(skipped)} layer(s) skipped by the {report['target']} cost model ({shown}{more})"]


def beaten_by_a_baseline(report: Report) -> list[str]:
    """Another declared baseline (not the input-model reference, not a same-shape view) is faster or
    cheaper than the output: the comparison the seed papers make, reported rather than hidden."""
    cost = report.get("cost") or {}
    out = []
    for name, entry in (cost.get("baselines") or {}).items():
        if entry.get("reference") or name.endswith("_same_shape"):
            continue
        speed, gain = cost["speedup_vs"].get(name), cost["energy_gain_vs"].get(name)
        better = [f"{1 / speed:.3g}x faster" if speed is not None and speed < 1 else "",
                  f"{gain:.3g}x the energy" if gain is not None and gain < 1 else ""]
        better = [b for b in better if b]
        if better:
            what = entry.get("what") or name
            out.append(f"baseline '{name}' beats the output: {' and '.join(better)} ({what})")
    return out


def backend_warnings(report: Report) -> list[str]:
    """Warnings a backend put into its cost section."""
    cost = report.get("cost") or {}
    return [str(w) for w in cost.get("warnings") or []]


LOSSY_PASSES = ("decompose", "pattern-prune", "comparator-conv", "quantize", "bitmap", "prune")
NEARLY_SPENT = 0.8


def _uncompressed(record: dict[str, Any]) -> list[dict[str, Any]]:
    stats = record.get("stats") or {}
    skipped = list(stats.get("skipped") or [])
    if record.get("name") == "quantize":  # only the per-layer bit choice leaves a layer at the default bits
        skipped = list((stats.get("bit_choice") or {}).get("skipped") or [])
    return [item for item in skipped if isinstance(item, dict) and item.get("kind")]


def layers_left_uncompressed(report: Report) -> list[str]:
    """Layers a lossy pass could have compressed but left as they were (skipped entries with a ``kind``:
    budget, cost, data — see ``compiler.layerwise``), with the reason."""
    out = []
    for record in report.get("passes") or []:
        if record.get("name") not in LOSSY_PASSES:
            continue
        stats = record.get("stats") or {}
        note = stats.get("note") or (stats.get("bit_choice") or {}).get("note")
        if note:
            out.append(f"{record['name']} changed nothing: {note}")
            continue
        skipped = _uncompressed(record)
        if not skipped:
            continue
        shown = "; ".join(f"{item.get('node') or item.get('layer')}: {item.get('reason')}" for item in skipped[:3])
        more = f"; ... {len(skipped) - 3} more in the pass's stats.skipped" if len(skipped) > 3 else ""
        out.append(f"layers left uncompressed by {record['name']} ({len(skipped)}): {shown}{more}")
    return out


def budget_nearly_spent(report: Report) -> list[str]:
    """The test-split accuracy drop used at least ``NEARLY_SPENT`` of --max-accuracy-drop."""
    acc = report.get("accuracy") or {}
    if not acc.get("measured") or not acc.get("max_drop_points"):
        return []
    used = acc["drop_points"] / acc["max_drop_points"]
    if used < NEARLY_SPENT:
        return []
    return [f"accuracy budget nearly spent: {acc['drop_points']:.2f} of {acc['max_drop_points']:g} {acc.get('unit', 'points')} "
            f"({used:.0%}) lost on the test split; a different seed or data may exceed it"]


CHECKS: tuple[Callable[[Report], list[str]], ...] = (
    worse_than_input, slower_on_onnxruntime, beaten_by_a_baseline, larger_than_input, skipped_by_cost_model, backend_warnings,
    layers_left_uncompressed, budget_nearly_spent,
)
