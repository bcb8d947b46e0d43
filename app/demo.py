"""``pimc demo``: the README's main job on the bundled digits model.

Compiles the bundled model for every registered target with its default pipeline, digits calibration
data, ``--verify`` and the default 1-point accuracy budget, prints each report, then one table: accuracy
of the input and the output on the held-out digits test split (onnxruntime), and the speed-up and energy
gain against the input model on the same target.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from ..compiler.tables import Table
from ..compiler.tables import console as make_console
from ..compiler.target import all_targets
from .compile import CompileOptions, compile_model
from .report import render_report


def run_demo(out_dir: Path, model_path: Path, console: Console) -> list[dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in all_targets():
        output = out_dir / f"{model_path.stem}.{name}.onnx"
        console.rule(f"target {name}")
        _, report = compile_model(CompileOptions(
            input=str(model_path), target=name, output=str(output),
            report=str(out_dir / f"{model_path.stem}.{name}.json"), verify=True, data="digits",
        ))
        render_report(report, console)
        rows.append(summary_row(report))
    return rows


def summary_row(report: dict) -> dict:
    """Accuracy before/after and the gains against the target's own input-model baseline."""
    accuracy = report["accuracy"]
    cost = report.get("cost") or {}
    reference = next((k for k, v in (cost.get("baselines") or {}).items() if v.get("reference")), None)
    return {
        "target": report["target"], "output": report["output"],
        "input": accuracy.get("input"), "accuracy": accuracy.get("output"), "drop": accuracy.get("drop_points"),
        "samples": accuracy.get("samples"), "baseline": reference,
        "speedup": cost["speedup_vs"][reference] if reference else None,
        "energy_gain": cost["energy_gain_vs"][reference] if reference else None,
        "warnings": len(report.get("warnings", [])),
    }


def render_accuracy(rows: list[dict], console: Console) -> None:
    table = Table(title="bundled model: accuracy on the held-out digits test split, gains against the input "
                        "model on each target")
    for col in ("target", "accuracy in → out", "drop (points)", "samples", "baseline", "speed-up", "energy gain",
                "warnings"):
        table.add_column(col, justify="left" if col in ("target", "baseline") else "right")
    for r in rows:
        table.add_row(r["target"], f"{100 * r['input']:.2f} % → {100 * r['accuracy']:.2f} %", f"{r['drop']:.2f}",
                      str(r["samples"]), r["baseline"] or "-", _times(r["speedup"]), _times(r["energy_gain"]),
                      str(r["warnings"]))
    console.print(table)


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


@click.command("demo")
@click.option("--out", "out_dir", default="pimc-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the compiled models and JSON reports.")
@click.option("--model", "model_path", type=click.Path(), help="Model to use instead of the bundled one.")
def demo_command(out_dir: str, model_path: str | None) -> None:
    """Compile the bundled digits model for every target and measure its accuracy."""
    from ..models import bundled_model_path

    console = make_console()
    rows = run_demo(Path(out_dir), Path(model_path) if model_path else bundled_model_path(), console)
    render_accuracy(rows, console)
