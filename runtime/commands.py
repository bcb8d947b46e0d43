"""``pimc run`` and ``pimc bench``: evaluate and compare ONNX models on onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ..compiler.errors import PimcError
from ..compiler.modelio import read_model
from .datasets import SPECS_HELP, load_dataset
from .session import evaluate, model_input

_FILE = click.Path(dir_okay=False, path_type=Path)


@click.command("run")
@click.argument("model", type=_FILE)
@click.option("--data", default="digits", show_default=True, help=f"Dataset: {SPECS_HELP}.")
@click.option("--batch", type=int, default=64, show_default=True, help="Batch size.")
@click.option("--limit", type=int, default=None, help="Use only the first N samples.")
@click.option("--repeats", type=int, default=20, show_default=True, help="Timed runs for the latency.")
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=1x3xHxW",
              help="Fix the symbolic dims of input NAME (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def run_command(
    model: Path, data: str, batch: int, limit: int | None, repeats: int, threads: int | None,
    input_shapes: tuple[str, ...], as_json: bool,
) -> None:
    """Run MODEL on onnxruntime over a dataset: accuracy and latency."""
    from ..compiler.input_shapes import fix_input_shapes

    _positive(batch=batch, repeats=repeats)
    proto = fix_input_shapes(read_model(model), input_shapes)
    _, shape, _ = model_input(proto)
    result = {"model": str(model), "data": data, **evaluate(
        proto, load_dataset(data, shape, limit=limit), batch=batch, repeats=repeats, threads=threads
    )}
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"{model.name} on {data}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("accuracy", _percent(result["accuracy"]))
    table.add_row("samples", str(result["samples"]))
    table.add_row(f"latency median (batch {result['batch']})", f"{result['latency_ms_median']:.3f} ms")
    table.add_row(f"latency p90 (batch {result['batch']})", f"{result['latency_ms_p90']:.3f} ms")
    Console().print(table)


@click.command("bench")
@click.argument("models", type=_FILE, nargs=-1, required=True)
@click.option("--data", default="digits", show_default=True, help=f"Dataset: {SPECS_HELP}.")
@click.option("--batches", default="1,64", show_default=True, help="Comma-separated batch sizes to time.")
@click.option("--repeats", type=int, default=20, show_default=True, help="Timed runs per model and batch.")
@click.option("--limit", type=int, default=None, help="Use only the first N samples.")
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads.")
@click.option("--csv", "csv_path", type=_FILE, default=None, help="Also write the results as CSV.")
@click.option("--plot", "plot_path", type=_FILE, default=None, help="Also write a PNG bar chart.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def bench_command(
    models: tuple[Path, ...], data: str, batches: str, repeats: int, limit: int | None, threads: int | None,
    csv_path: Path | None, plot_path: Path | None, as_json: bool,
) -> None:
    """Compare MODELS (the first is the reference): size, sparsity, latency, accuracy, agreement."""
    from .bench import compare_models, write_csv, write_plot

    _positive(repeats=repeats)
    sizes = _batch_sizes(batches)
    rows = compare_models(list(models), data, sizes, repeats, limit=limit, threads=threads)
    if csv_path:
        write_csv(rows, csv_path)
    if plot_path:
        write_plot(rows, plot_path)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        Console().print(_bench_table(rows, sizes, data))


def _bench_table(rows: list[dict], sizes: list[int], data: str) -> Table:
    """Rich table of bench rows with ratios against the first model."""
    ref = rows[0]
    table = Table(title=f"bench on {data} (ratios vs {ref['model']})")
    headers = ["model", "params", "non-zero", "accuracy", "top-1 agree", "max |diff|"]
    headers += [f"ms @b{b}" for b in sizes]
    for header in headers:
        table.add_column(header, justify="left" if header == "model" else "right")
    for row in rows:
        cells = [
            row["model"],
            str(row["params"]),
            f"{row['nonzero_params']} ({_ratio(row['nonzero_params'], ref['nonzero_params'])})",
            _percent(row["accuracy"]),
            _percent(row["top1_agreement"]),
            "-" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.2e}",
        ]
        for b in sizes:
            key = f"latency_ms_b{b}"
            cells.append(f"{row[key]:.3f} ({_ratio(row[key], ref[key])})")
        table.add_row(*cells)
    return table


def _batch_sizes(text: str) -> list[int]:
    """Parse ``1,64`` into positive batch sizes."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise PimcError(f"--batches must be comma-separated integers, got '{text}'") from exc
    if not sizes or min(sizes) < 1:
        raise PimcError(f"--batches must list positive integers, got '{text}'")
    return list(dict.fromkeys(sizes))


def _positive(**values: int) -> None:
    """Reject non-positive integer options."""
    for name, value in values.items():
        if value < 1:
            raise PimcError(f"--{name} must be positive, got {value}")


def _ratio(value: float, reference: float) -> str:
    """``value / reference`` formatted as ``0.50x``."""
    return f"{value / reference:.2f}x" if reference else "-"


def _percent(value: float | None) -> str:
    """A fraction as a percentage, or ``-``."""
    return "-" if value is None else f"{value:.2%}"
