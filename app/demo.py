"""``pimc demo``: the README's main job on the bundled digits model, post-training and training-aware.

Post-training: compiles the bundled model for every registered target with its default pipeline, digits
calibration data, ``--verify`` and the default 1-point accuracy budget, and prints each report.
Training-aware: compiles, for every target, the bundled model's twin that one of pimc's exporters
compressed (``models.TWINS``, made by ``python -m pimc.models.make_bundled --twins``) against the dense
bundled model: on a simulator the target's baseline runs the dense model (``--baseline-model``); on
onnxruntime the dense model and the output are timed interleaved.

Then one table: accuracy of the dense model and of the output on the same held-out digits test split,
and the speed-up and energy gain against the dense model on the same target.
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


def run_demo(out_dir: Path, model_path: Path, console: Console, twins: bool = True) -> list[dict]:
    """One post-training row per target, then (``twins``) one training-aware row per target."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [_compile_row(model_path, name, out_dir, console) for name in all_targets()]
    if twins:
        dense = {row["target"]: row["input"] for row in rows}
        rows += [_twin_row(model_path, name, out_dir, console, dense[name]) for name in all_targets()]
    return rows


def _compile_row(model_path: Path, target: str, out_dir: Path, console: Console,
                 baseline_models: tuple[str, ...] = ()) -> dict:
    output = out_dir / f"{model_path.stem}.{target}.onnx"
    console.rule(f"{model_path.name} · target {target}")
    _, report = compile_model(CompileOptions(
        input=str(model_path), target=target, output=str(output), report=str(out_dir / f"{output.stem}.json"),
        verify=True, data="digits", baseline_models=baseline_models,
    ))
    render_report(report, console)
    return summary_row(report)


def _twin_row(dense_path: Path, target: str, out_dir: Path, console: Console, dense_accuracy: float) -> dict:
    """The twin compiled for ``target``, its gains against the dense model and the dense model's accuracy."""
    from ..models import TWINS, twin_path

    file, method, baseline = TWINS[target]
    overrides = (f"{baseline}={dense_path}",) if baseline else ()
    row = _compile_row(twin_path(file), target, out_dir, console, overrides)
    row.update(kind=f"training-aware ({method})", input=dense_accuracy,
               drop=100 * (dense_accuracy - row["accuracy"]))
    if baseline is None:
        row.update(_timed_against(dense_path, Path(row["output"])))
    else:
        row["baseline"] = f"{baseline}: the dense model"
    return row


def _timed_against(dense_path: Path, output: Path) -> dict:
    """onnxruntime: the output timed interleaved with the dense model (batch 1, on digits inputs)."""
    import onnx

    from ..runtime.bench import compare_latency
    from ..runtime.datasets import load_dataset
    from .compile import LATENCY_TIME_BUDGET_S

    images = load_dataset("digits", (1, 8, 8), "test").x[:64]
    timing = compare_latency(onnx.load(str(dense_path)), onnx.load(str(output)), images, batches=(1,),
                             time_budget_s=LATENCY_TIME_BUDGET_S)
    return {"baseline": "the dense model, timed (batch 1)", "speedup": timing.get("speedup_b1"), "energy_gain": None}


def summary_row(report: dict) -> dict:
    """Accuracy before/after and the gains against the target's own input-model baseline."""
    accuracy = report["accuracy"]
    cost = report.get("cost") or {}
    reference = next((k for k, v in (cost.get("baselines") or {}).items() if v.get("reference")), None)
    latency = report.get("latency") or {}
    return {
        "target": report["target"], "kind": "post-training", "output": report["output"],
        "input": accuracy.get("input"), "accuracy": accuracy.get("output"), "drop": accuracy.get("drop_points"),
        "samples": accuracy.get("samples"),
        "baseline": f"{reference}: the input model" if reference else (
            "the input model, timed" if latency.get("measured") else None),
        "speedup": cost["speedup_vs"][reference] if reference else latency.get("speedup_b1"),
        "energy_gain": cost["energy_gain_vs"][reference] if reference else None,
        "warnings": len(report.get("warnings", [])),
    }


def render_accuracy(rows: list[dict], console: Console) -> None:
    table = Table(title="bundled model: accuracy on the held-out digits test split (dense → output), gains "
                        "against the baseline on the same target")
    for col in ("target", "compression", "accuracy in → out", "drop (points)", "samples", "baseline", "speed-up",
                "energy gain", "warnings"):
        table.add_column(col, justify="left" if col in ("target", "compression", "baseline") else "right")
    for r in rows:
        table.add_row(r["target"], r["kind"], f"{100 * r['input']:.2f} % → {100 * r['accuracy']:.2f} %",
                      f"{r['drop']:.2f}", str(r["samples"]), r["baseline"] or "-", _times(r["speedup"]),
                      _times(r["energy_gain"]), str(r["warnings"]))
    console.print(table)


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


@click.command("demo")
@click.option("--out", "out_dir", default="pimc-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the compiled models and JSON reports.")
@click.option("--model", "model_path", type=click.Path(),
              help="Model to use instead of the bundled one (post-training rows only).")
def demo_command(out_dir: str, model_path: str | None) -> None:
    """Compile the bundled digits model and its compressed twins for every target and measure their accuracy."""
    from ..models import bundled_model_path

    console = make_console()
    path = Path(model_path) if model_path else bundled_model_path()
    rows = run_demo(Path(out_dir), path, console, twins=model_path is None)
    render_accuracy(rows, console)
