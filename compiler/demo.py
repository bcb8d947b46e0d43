"""``pimc demo``: the README's main job on the bundled digits model.

Compiles the bundled model for every registered target (with digits calibration data and ``--verify``),
prints each report, and measures the onnxruntime accuracy on the digits test split of the original
model and of every compiled output.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from .compile import CompileOptions, compile_model
from .report import render_report
from .tables import Table
from .tables import console as make_console
from .target import all_targets


def run_demo(out_dir: Path, model_path: Path, console: Console) -> list[dict]:
    from ..runtime.datasets import load_dataset
    from ..runtime.session import evaluate, model_input

    out_dir.mkdir(parents=True, exist_ok=True)
    _, shape, _ = model_input(str(model_path))
    test = load_dataset("digits", shape, split="test")
    rows = [{"model": "original", "target": "-", "path": str(model_path),
             **evaluate(str(model_path), test, batch=64, repeats=10)}]
    for name in all_targets():
        output = out_dir / f"{model_path.stem}.{name}.onnx"
        console.rule(f"target {name}")
        _, report = compile_model(CompileOptions(
            input=str(model_path), target=name, output=str(output),
            report=str(out_dir / f"{model_path.stem}.{name}.json"), verify=True, data="digits",
        ))
        render_report(report, console)
        rows.append({"model": output.name, "target": name, "path": str(output),
                     **evaluate(str(output), test, batch=64, repeats=10)})
    return rows


def render_accuracy(rows: list[dict], console: Console) -> None:
    table = Table(title="onnxruntime accuracy on the digits test split")
    for col in ("model", "target", "accuracy", "samples", "latency ms (batch 64)"):
        table.add_column(col, justify="left" if col in ("model", "target") else "right")
    for r in rows:
        table.add_row(r["model"], r["target"], f"{100 * r['accuracy']:.2f} %", str(r["samples"]),
                      f"{r['latency_ms_median']:.3f}")
    console.print(table)


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
