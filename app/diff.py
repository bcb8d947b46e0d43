"""``pimc diff A.json B.json``: two compile reports side by side, totals and per layer, with ratios B/A.

Totals: parameters, MACs, nodes, latency, energy, throughput, TOPS/W, accuracy (if the reports carry an
``accuracy`` section), and every baseline's latency / energy / speed-up / energy gain. Layers are matched by
name; a layer present in only one report is listed as such. Ratios are B/A (``-`` when A is 0 or either
side is missing).
"""

from __future__ import annotations

import json
import math
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
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def diff_command(report_a: Path, report_b: Path, as_json: bool) -> None:
    """Compare two compile reports (pimc compile --report): totals and per-layer cost, ratios B/A."""
    a, b = load_report(report_a), load_report(report_b)
    diff = diff_reports(a, b, str(report_a), str(report_b))
    if as_json:
        click.echo(json.dumps(diff, indent=2))
    else:
        render_diff(diff, diff_console())
