"""``pimc diff A.json B.json``: two compile reports side by side, totals and per layer, with ratios B/A.

Totals: parameters, MACs, nodes, latency, energy, throughput, TOPS/W, accuracy (if the reports carry an
``accuracy`` section), and every baseline's latency / energy / speed-up / energy gain. Layers are matched by
name; a layer present in only one report is listed as such. Ratios are B/A (``-`` when A is 0 or either
side is missing).

As a CI gate (A: the reference, e.g. the main branch's report; B: the candidate), each threshold given is
checked and ``diff`` exits 1 naming every figure that crossed it (``Gate``):

* ``--max-slowdown P``: latency B/A ≤ 1 + P/100 (the simulated latency, or for the onnxruntime target the
  measured output latency of each timed batch size);
* ``--max-energy-increase P``: energy B/A ≤ 1 + P/100;
* ``--max-size-increase P``: parameters B/A ≤ 1 + P/100;
* ``--max-accuracy-drop D``: 100·(accuracy A − accuracy B) ≤ D points (the output models' test accuracy);
* ``--per-layer``: latency (cycles) and energy of every layer in both reports against the same limits.

A figure a threshold needs that is missing from either report fails the gate too (it cannot be checked).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..compiler.errors import PimcError

REPORT_KEYS = ("pimc_version", "target", "passes", "model")
MODEL_TOTALS = (
    ("params", "params"), ("non-zero params", "nonzero_params"), ("MACs", "macs"),
    ("effective MACs", "effective_macs"), ("nodes", "nodes"),
)
COST_TOTALS = (
    ("latency (s)", "latency_s"), ("latency (cycles)", "latency_cycles"), ("energy (J)", "energy_j"),
    ("throughput (GOPS)", "throughput_gops"), ("TOPS/W", "tops_per_w"),
)
ACCURACY_TOTALS = (
    ("accuracy before", "input"), ("accuracy after", "output"), ("accuracy drop (points)", "drop_points"),
    ("accuracy samples", "samples"),
)
LAYER_METRICS = ("cycles", "energy_j")
Number = int | float


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a ``pimc compile --report`` JSON file; any problem is a one-line PimcError."""
    p = Path(path)
    if not p.is_file():
        raise PimcError(f"{p}: no such file" if not p.exists() else f"{p}: not a file")
    try:
        report = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise PimcError(f"{p}: not a JSON file (not UTF-8 text)") from exc
    except json.JSONDecodeError as exc:
        raise PimcError(f"{p}: not a JSON file ({exc.msg} at line {exc.lineno})") from exc
    missing = [k for k in REPORT_KEYS if not isinstance(report, dict) or k not in report]
    if missing:
        raise PimcError(f"{p}: not a pimc compile report (no {', '.join(repr(k) for k in missing)})")
    if not isinstance(report["model"], dict) or not isinstance(report.get("cost") or {}, dict):
        raise PimcError(f"{p}: not a pimc compile report ('model' and 'cost' must be objects)")
    return report


def ratio(a: Any, b: Any) -> float | None:
    """B/A, or ``None`` when either is missing or not a number, or A is zero."""
    if not _is_number(a) or not _is_number(b) or a == 0:
        return None
    value = b / a
    return value if math.isfinite(value) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _row(metric: str, a: Any, b: Any) -> dict[str, Any]:
    return {"metric": metric, "a": a, "b": b, "ratio": ratio(a, b)}


def total_rows(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """The totals both reports have, in a fixed order (a metric missing on one side shows as ``None``)."""
    rows = [_row(label, a["model"].get(key), b["model"].get(key)) for label, key in MODEL_TOTALS]
    cost_a, cost_b = a.get("cost") or {}, b.get("cost") or {}
    rows += [_row(label, cost_a.get(key), cost_b.get(key)) for label, key in COST_TOTALS]
    rows += [{**_row("throughput (inferences/s)", _per_second(cost_a), _per_second(cost_b))}]
    acc_a, acc_b = a.get("accuracy") or {}, b.get("accuracy") or {}
    if acc_a or acc_b:
        rows += [_row(label, acc_a.get(key), acc_b.get(key)) for label, key in ACCURACY_TOTALS]
    rows += _baseline_rows(cost_a, cost_b)
    return [r for r in rows if r["a"] is not None or r["b"] is not None]


def _per_second(cost: dict[str, Any]) -> float | None:
    latency = cost.get("latency_s")
    return 1.0 / latency if _is_number(latency) and latency > 0 else None


def _baseline_rows(cost_a: dict[str, Any], cost_b: dict[str, Any]) -> list[dict[str, Any]]:
    """Latency, energy, speed-up and energy gain of every baseline either report has."""
    base_a, base_b = cost_a.get("baselines") or {}, cost_b.get("baselines") or {}
    rows = []
    for name in _union(base_a, base_b):
        one, two = base_a.get(name) or {}, base_b.get(name) or {}
        rows.append(_row(f"{name}: latency (s)", one.get("latency_s"), two.get("latency_s")))
        rows.append(_row(f"{name}: energy (J)", one.get("energy_j"), two.get("energy_j")))
        rows.append(_row(f"speed-up vs {name}", (cost_a.get("speedup_vs") or {}).get(name),
                         (cost_b.get("speedup_vs") or {}).get(name)))
        rows.append(_row(f"energy gain vs {name}", (cost_a.get("energy_gain_vs") or {}).get(name),
                         (cost_b.get("energy_gain_vs") or {}).get(name)))
    return rows


def _union(first: dict | list, second: dict | list) -> list[str]:
    """Keys of ``first`` in order, then those only in ``second``."""
    return list(dict.fromkeys([*first, *second]))


def _layers_by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The report's cost layers keyed by name (a repeated name gets ``#2``, ``#3``, ...)."""
    layers: dict[str, dict[str, Any]] = {}
    for index, layer in enumerate((report.get("cost") or {}).get("layers") or []):
        if not isinstance(layer, dict):
            continue
        base = str(layer.get("name", f"layer {index}"))
        name, count = base, 1
        while name in layers:
            count += 1
            name = f"{base}#{count}"
        layers[name] = layer
    return layers


def layer_rows(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per layer name in either report: metrics of A and B, ratios, and where it exists."""
    layers_a, layers_b = _layers_by_name(a), _layers_by_name(b)
    rows = []
    for name in _union(layers_a, layers_b):
        one, two = layers_a.get(name), layers_b.get(name)
        row: dict[str, Any] = {"name": name, "in": "both" if one and two else ("a" if one else "b")}
        for metric in LAYER_METRICS:
            va, vb = (one or {}).get(metric), (two or {}).get(metric)
            row[metric] = {"a": va, "b": vb, "ratio": ratio(va, vb)}
        rows.append(row)
    return rows


def notes(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Caveats: different targets, inputs or accuracy data; each report's warnings."""
    lines = []
    if a.get("target") != b.get("target"):
        lines.append(f"targets differ: A is {a.get('target')}, B is {b.get('target')}")
    if a.get("input") != b.get("input"):
        lines.append(f"inputs differ: A is {a.get('input')}, B is {b.get('input')}")
    data_a, data_b = (a.get("accuracy") or {}).get("data"), (b.get("accuracy") or {}).get("data")
    if data_a != data_b and (data_a or data_b):
        lines.append(f"accuracy measured on different data: A {data_a or '-'}, B {data_b or '-'}")
    for side, report in (("A", a), ("B", b)):
        lines += [f"{side} warning: {w}" for w in report.get("warnings") or []]
    return lines


def diff_reports(a: dict[str, Any], b: dict[str, Any], path_a: str = "A", path_b: str = "B") -> dict[str, Any]:
    """The whole comparison as JSON-ready data."""
    return {
        "a": {"report": path_a, "target": a.get("target"), "input": a.get("input"),
              "passes": [p.get("name") for p in a.get("passes") or [] if isinstance(p, dict)]},
        "b": {"report": path_b, "target": b.get("target"), "input": b.get("input"),
              "passes": [p.get("name") for p in b.get("passes") or [] if isinstance(p, dict)]},
        "totals": total_rows(a, b),
        "layers": layer_rows(a, b),
        "notes": notes(a, b),
    }


@dataclass(frozen=True)
class Gate:
    """Thresholds of ``pimc diff`` as a CI gate (percent, percent, percent, points); None: not checked."""

    max_slowdown: float | None = None
    max_energy_increase: float | None = None
    max_size_increase: float | None = None
    max_accuracy_drop: float | None = None
    per_layer: bool = False

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.max_slowdown, self.max_energy_increase, self.max_size_increase,
                                           self.max_accuracy_drop))

    def to_dict(self) -> dict[str, Any]:
        return {"max_slowdown_pct": self.max_slowdown, "max_energy_increase_pct": self.max_energy_increase,
                "max_size_increase_pct": self.max_size_increase, "max_accuracy_drop_points": self.max_accuracy_drop,
                "per_layer": self.per_layer}


def check_gate(a: dict[str, Any], b: dict[str, Any], gate: Gate) -> dict[str, Any]:
    """The verdict: ``passed`` and every figure that crossed its threshold (or could not be checked)."""
    failures: list[dict[str, Any]] = []
    for label, pairs, limit in (("latency", _latencies(a, b), gate.max_slowdown),
                                ("energy (J)", [(_cost(a, "energy_j"), _cost(b, "energy_j"))], gate.max_energy_increase),
                                ("params", [(a["model"].get("params"), b["model"].get("params"))], gate.max_size_increase)):
        if limit is not None:
            for which, (va, vb) in zip(_labels(label, pairs), pairs, strict=True):
                failures += _ratio_failure(which, va, vb, limit)
    if gate.max_accuracy_drop is not None:
        va, vb = (a.get("accuracy") or {}).get("output"), (b.get("accuracy") or {}).get("output")
        if not (_is_number(va) and _is_number(vb)):
            failures.append({"metric": "accuracy", "a": va, "b": vb, "why": "not in both reports"})
        else:
            unit = (b.get("accuracy") or {}).get("unit", "points")  # PSNR reports are in dB, top-1 in points
            lost = (va - vb) * (1.0 if unit == "dB" else 100.0)
            if lost > gate.max_accuracy_drop + 1e-9:
                failures.append({"metric": "accuracy", "a": va, "b": vb, "change": round(lost, 4),
                                 "limit": gate.max_accuracy_drop,
                                 "why": f"{lost:.2f} {unit} lost > {gate.max_accuracy_drop:g}"})
    if gate.per_layer:
        failures += _layer_failures(layer_rows(a, b), gate)
    return {"passed": not failures, "thresholds": gate.to_dict(), "failures": failures}


def _cost(report: dict[str, Any], key: str) -> Any:
    return (report.get("cost") or {}).get(key)


def _latencies(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(A, B) latency pairs: the simulated latency, else the measured output latency of every batch size."""
    if _cost(a, "latency_s") is not None or _cost(b, "latency_s") is not None:
        return [(_cost(a, "latency_s"), _cost(b, "latency_s"))]
    la, lb = a.get("latency") or {}, b.get("latency") or {}
    keys = sorted(k for k in set(la) | set(lb) if k.startswith("output_ms_b"))
    return [(la.get(k), lb.get(k)) for k in keys] or [(None, None)]


def _labels(label: str, pairs: list) -> list[str]:
    return [label] if len(pairs) == 1 else [f"{label} {i}" for i in range(len(pairs))]


def _ratio_failure(metric: str, va: Any, vb: Any, limit_pct: float, layer: str | None = None) -> list[dict[str, Any]]:
    where = {"layer": layer} if layer else {}
    value = ratio(va, vb)
    if value is None:
        if _is_number(va) and _is_number(vb) and va == 0 and vb == 0:
            return []
        return [{"metric": metric, **where, "a": va, "b": vb, "why": "not in both reports"}]
    if value > 1.0 + limit_pct / 100.0 + 1e-12:
        return [{"metric": metric, **where, "a": va, "b": vb, "change": round(100.0 * (value - 1.0), 4),
                 "limit": limit_pct, "why": f"{100.0 * (value - 1.0):+.2f} % > +{limit_pct:g} %"}]
    return []


def _layer_failures(rows: list[dict[str, Any]], gate: Gate) -> list[dict[str, Any]]:
    failures = []
    for row in rows:
        if row["in"] != "both":
            continue
        for metric, limit in (("cycles", gate.max_slowdown), ("energy_j", gate.max_energy_increase)):
            if limit is not None:
                failures += _ratio_failure(metric, row[metric]["a"], row[metric]["b"], limit, row["name"])
    return failures


def parse_percent(value: str, option: str) -> float:
    """``5%`` or ``5`` (percent); non-negative."""
    text = str(value).strip().removesuffix("%").strip()
    try:
        number = float(text)
    except ValueError:
        raise PimcError(f"{option}: expected a percentage such as 5% or 0, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise PimcError(f"{option}: expected a non-negative percentage, got {value!r}")
    return number


def render_gate(verdict: dict[str, Any], console: Console) -> None:
    if verdict["passed"]:
        console.print("gate: passed", highlight=False)
        return
    for f in verdict["failures"]:
        where = f" (layer {f['layer']})" if f.get("layer") else ""
        console.print(f"gate: {f['metric']}{where}: A {fmt(f['a'])}, B {fmt(f['b'])}: {f['why']}", highlight=False)
    console.print(f"gate: FAILED ({len(verdict['failures'])} figure(s))", highlight=False)


def fmt(value: Any) -> str:
    """A number with all its significant digits (ints in full, floats with 6 significant digits)."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value)}"
    return f"{value:.6g}"


def fmt_ratio(value: float | None) -> str:
    """B/A with four significant digits kept (``1.000×`` says "equal to four digits")."""
    return "-" if value is None else f"{value:#.4g}×"


def _side(row: dict[str, Any], key: str, side: str) -> str:
    if row["in"] not in ("both", side):
        return f"only in {row['in'].upper()}"
    return fmt(row[key][side])


def render_diff(diff: dict[str, Any], console: Console) -> None:
    """Rich tables: header lines, totals, layers, notes."""
    for side in ("a", "b"):
        info = diff[side]
        console.print(f"[bold]{side.upper()}[/]: {info['report']} · {info['target']} · {info['input']} · "
                      f"passes {', '.join(info['passes']) or '-'}")
    totals = Table(title="totals (ratio = B/A)")
    for column in ("metric", "A", "B", "B/A"):
        totals.add_column(column, justify="left" if column == "metric" else "right", no_wrap=True)
    for row in diff["totals"]:
        totals.add_row(row["metric"], fmt(row["a"]), fmt(row["b"]), fmt_ratio(row["ratio"]))
    console.print(totals)
    if diff["layers"]:
        console.print(_layer_table(diff["layers"]))
    for line in diff["notes"]:
        console.print(f"note: {line}", highlight=False)


def _layer_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="layers (matched by name; ratio = B/A)")
    table.add_column("layer", no_wrap=True)
    for metric in LAYER_METRICS:
        for label in ("A", "B", "B/A"):
            table.add_column(f"{metric} {label}", justify="right", no_wrap=True)
    for row in rows:
        cells = [row["name"]]
        for metric in LAYER_METRICS:
            cells += [_side(row, metric, "a"), _side(row, metric, "b"), fmt_ratio(row[metric]["ratio"])]
        table.add_row(*cells)
    return table


def diff_console() -> Console:
    """The terminal's console, or a wide one when the output is not a terminal (no cell is cut)."""
    console = Console()
    return console if console.is_terminal else Console(width=400)


@click.command("diff")
@click.argument("report_a", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("report_b", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the comparison (and the gate's verdict) as JSON.")
@click.option("--max-slowdown", help="Gate: fail when B's latency exceeds A's by more than this (e.g. 5%).")
@click.option("--max-energy-increase", help="Gate: fail when B's energy exceeds A's by more than this (e.g. 5%).")
@click.option("--max-size-increase", help="Gate: fail when B has more parameters than A by more than this (e.g. 0).")
@click.option("--max-accuracy-drop", type=float, help="Gate: fail when B's test accuracy is this many points below A's.")
@click.option("--per-layer", is_flag=True, help="Gate: also check each layer's cycles and energy.")
@click.pass_context
def diff_command(ctx: click.Context, report_a: Path, report_b: Path, as_json: bool, max_slowdown: str | None,
                 max_energy_increase: str | None, max_size_increase: str | None, max_accuracy_drop: float | None,
                 per_layer: bool) -> None:
    """Compare two compile reports (pimc compile --report): totals and per-layer cost, ratios B/A. With a
    threshold, a CI gate: exit 1 when B is worse than A beyond it (A: the reference, B: the candidate)."""
    if max_accuracy_drop is not None and (not math.isfinite(max_accuracy_drop) or max_accuracy_drop < 0):
        raise PimcError(f"--max-accuracy-drop: expected non-negative points, got {max_accuracy_drop}")
    gate = Gate(*(None if v is None else parse_percent(v, name) for v, name in (
        (max_slowdown, "--max-slowdown"), (max_energy_increase, "--max-energy-increase"),
        (max_size_increase, "--max-size-increase"))), max_accuracy_drop, per_layer)
    a, b = load_report(report_a), load_report(report_b)
    diff = diff_reports(a, b, str(report_a), str(report_b))
    verdict = check_gate(a, b, gate) if gate.active else None
    if verdict is not None:
        diff["gate"] = verdict
    if as_json:
        click.echo(json.dumps(diff, indent=2))
    else:
        console = diff_console()
        render_diff(diff, console)
        if verdict is not None:
            render_gate(verdict, console)
    if verdict is not None and not verdict["passed"]:
        ctx.exit(1)
