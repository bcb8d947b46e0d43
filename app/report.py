"""The compile report: a JSON document with stable names, and its rendering in the terminal."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Console
from rich.markup import escape

from ..compiler.pipeline import PassRecord
from ..compiler.stats import ModelStats
from ..compiler.tables import Table
from ..compiler.tables import console as make_console
from ..compiler.version import VERSION
from .progress import timing_line


def build_report(
    input_path: str,
    output_path: str | None,
    target: str,
    records: list[PassRecord],
    before: ModelStats,
    after: ModelStats,
    verify: dict[str, Any] | None,
    cost: dict[str, Any] | None,
    hardware: dict[str, Any] | None = None,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "pimc_version": VERSION,
        "input": input_path,
        "output": output_path,
        "target": target,
        "passes": [r.to_dict() for r in records],
        "model": {
            "params_before": before.params, "params": after.params,
            "nonzero_params_before": before.nonzero_params, "nonzero_params": after.nonzero_params,
            "macs_before": before.macs, "macs": after.macs,
            "effective_macs_before": before.effective_macs, "effective_macs": after.effective_macs,
            "nodes_before": before.node_count, "nodes": after.node_count,
        },
        "verify": verify,
        "cost": cost,
        "hardware": hardware,
        "warnings": list(warnings or []),
    }


def report_json(report: dict[str, Any]) -> str:
    return json.dumps(_finite(report), indent=2, sort_keys=False) + "\n"


def _finite(value: Any) -> Any:
    """JSON has no inf/nan: such ratios are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _si(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if value == 0:
        return f"0 {unit}".strip()
    prefixes = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p")]
    for scale, prefix in prefixes:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}".strip()
    return f"{value:.3g} {unit}".strip()


def _err(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def render_report(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or make_console()
    console.print(f"[bold]pimc {report['pimc_version']}[/] · target [bold]{report['target']}[/] · {report['input']}"
                  f" → {report['output'] or '(not written)'}")
    table = Table(title="passes", show_lines=False)
    for col in ("pass", "changed", "nodes", "params (nz)", "MACs (eff.)", "max rel err", "s"):
        if col == "pass":
            table.add_column(col, justify="left", no_wrap=True, min_width=len(max((p["name"] for p in report["passes"]),
                                                                                 key=len, default="pass")))
        else:
            table.add_column(col, justify="right")
    for p in report["passes"]:
        nodes = f"{sum(p['nodes_before'].values())}→{sum(p['nodes_after'].values())}"
        params = f"{_si(p['params_after'])} ({_si(p['nonzero_params_after'])})"
        macs = f"{_si(p['macs_after'])} ({_si(p['effective_macs_after'])})"
        table.add_row(p["name"], "yes" if p["changed"] else "no", nodes, params, macs,
                      _err(p["max_rel_err"]), f"{p['seconds']:.3f}")
    console.print(table)
    m = report["model"]
    console.print(
        f"model: params {_si(m['params_before'])} → {_si(m['params'])} (non-zero {_si(m['nonzero_params'])}), "
        f"MACs {_si(m['macs_before'])} → {_si(m['macs'])} (effective {_si(m['effective_macs'])})"
    )
    if report["verify"]:
        v = report["verify"]
        console.print(f"verify: max abs err {_err(v['max_abs_err'])}, max rel err {_err(v['max_rel_err'])} "
                      f"over {v['inputs']} input batch(es)")
    for note in report.get("assumptions") or []:
        console.print(f"[yellow]assumption[/]: {note}")
    render_accuracy(report.get("accuracy"), console)
    render_latency(report.get("latency"), console)
    if report.get("timings"):
        console.print(timing_line(report["timings"]))
    if report["cost"]:
        render_cost(report["cost"], console)
    render_warnings(report.get("warnings") or [], console)


def render_warnings(warnings: list[str], console: Console) -> None:
    for text in warnings:
        console.print("[bold yellow]warning:[/] " + escape(text), highlight=False)


def _measured(section: dict[str, Any] | None, what: str, console: Console) -> bool:
    """Whether ``section`` holds a measurement; if it says why not, that is printed."""
    if section and not section.get("measured"):
        console.print(section.get("note", f"{what} not measured"))
    return bool(section and section.get("measured"))


def render_accuracy(accuracy: dict[str, Any] | None, console: Console) -> None:
    if not _measured(accuracy, "accuracy", console):
        return
    unit = accuracy.get("unit", "points")
    if accuracy.get("metric") == "psnr":
        what, before, after = "PSNR (Y)", f"{accuracy['input']:.2f} dB", f"{accuracy['output']:.2f} dB"
        if "ssim_output" in accuracy:
            after += f" (SSIM {accuracy['ssim_input']:.4f} → {accuracy['ssim_output']:.4f})"
    else:
        what, before, after = "accuracy", f"{100 * accuracy['input']:.2f} %", f"{100 * accuracy['output']:.2f} %"
    console.print(
        f"{what}: {before} → {after} (drop {accuracy['drop_points']:.2f} {unit} of a "
        f"{accuracy['max_drop_points']:g}-{unit.rstrip('s')} budget) on "
        f"{accuracy['samples']} held-out samples \\[{escape(str(accuracy['data']))}]"
    )
    steering = accuracy.get("steering")
    if steering:
        console.print(
            f"data: {accuracy.get('calibration_samples', 0)} calibrated, {steering['steering_samples']} steered "
            f"({escape(steering['steering_source'])}), {accuracy['samples']} tested; the three never overlap"
            + _steering_error(accuracy), highlight=False)


def _steering_error(accuracy: dict[str, Any]) -> str:
    finals = [entry["final"] for entry in accuracy.get("search") or [] if entry.get("final")]
    if not finals:
        return ""
    last = finals[-1]
    unit = accuracy.get("unit", "points")
    return (f"; steering drop {last['drop_points']:.2f} ± {last['se_points']:.2f} {unit} (standard error), "
            f"noise margin {last['margin_points']:.2f}")


def render_latency(latency: dict[str, Any] | None, console: Console) -> None:
    """The onnxruntime target's measured input → output latency."""
    if not _measured(latency, "latency", console):
        return
    parts = [f"batch {latency[f'batch_b{b}']}: {latency[f'input_ms_b{b}']:.3g} → {latency[f'output_ms_b{b}']:.3g} ms "
             f"({latency[f'speedup_b{b}']:.2f}× faster)" for b in latency["batches"]]
    repeats = ", ".join(f"{v} at {k}" for k, v in latency["repeats"].items())
    console.print(f"onnxruntime latency ({latency['method']}; repeats {repeats}; this machine): "
                  + "; ".join(parts))


def render_cost(cost: dict[str, Any], console: Console) -> None:
    layers = Table(title="cost per layer")
    keys = ["name", "cycles", "energy_j"]
    extra = [k for k in (cost["layers"][0] if cost["layers"] else {}) if k in ("utilization", "kind", "stall_cycles")]
    for col in keys + extra:
        layers.add_column(col, justify="left" if col in ("name", "kind") else "right")
    for layer in cost["layers"][:60]:
        row = [str(layer.get("name")), _si(layer.get("cycles")), _si(layer.get("energy_j"), "J")]
        for k in extra:
            v = layer.get(k)
            row.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        layers.add_row(*row)
    if len(cost["layers"]) > 60:
        layers.caption = f"... {len(cost['layers']) - 60} more layers in the JSON report"
    console.print(layers)
    console.print(
        f"cost: latency {_si(cost['latency_cycles'])} cycles = {_si(cost['latency_s'], 's')}, "
        f"energy {_si(cost['energy_j'], 'J')}, {cost['throughput_gops']:.4g} GOPS, {cost['tops_per_w']:.4g} TOPS/W"
    )
    breakdown = ", ".join(f"{k} {_si(v, 'J')}" for k, v in cost["energy_breakdown_j"].items())
    console.print(f"energy breakdown: {breakdown}")
    if "executed_gops" in cost:
        console.print(f"executed: {cost['executed_gops']:.4g} GOPS, {cost['executed_tops_per_w']:.4g} TOPS/W "
                      f"({cost.get('executed_note', '')}); GOPS and TOPS/W above count the input model's dense MACs",
                      highlight=False, markup=False)
    render_activation_skipping(cost.get("activation_skipping"), console)
    render_baselines(cost, console)


def render_activation_skipping(section: dict[str, Any] | None, console: Console) -> None:
    """One line: the measured zero activations' effect (cycles / energy without → with skipping)."""
    if not section:
        return
    head = f"activation skipping: {section['measured_layers']}/{section['layers']} layer inputs measured"
    if "cycles_with" not in section:
        console.print(f"{head}; {section.get('note', 'nothing skipped')}", highlight=False, markup=False)
        return
    state = "on" if section["enabled"] else "off (figures above are without)"
    console.print(
        f"{head}, skipping {state}: cycles {section['cycles_without']:.4g} → {section['cycles_with']:.4g} "
        f"({section['speedup']:.3g}×), energy {_si(section['energy_without_j'], 'J')} → "
        f"{_si(section['energy_with_j'], 'J')} ({section['energy_gain']:.3g}×)", highlight=False, markup=False)


def render_baselines(cost: dict[str, Any], console: Console) -> None:
    for name, entry in cost.get("baselines", {}).items():
        speed = cost["speedup_vs"].get(name)
        gain = cost["energy_gain_vs"].get(name)
        what = f" — {entry['what']}" if entry.get("what") else ""
        console.print(f"vs {name}: speed-up {_ratio_text(speed)}, energy gain {_ratio_text(gain)}{what}",
                      highlight=False, markup=False)


def _ratio_text(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3g}×"
