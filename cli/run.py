"""``pimc run`` and ``pimc bench``: evaluate and compare ONNX models on onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import click
import onnx

from ..compiler.errors import PimcError
from ..compiler.modelio import read_model
from ..compiler.sessions import real_inputs
from ..compiler.tables import Table, console, metric_table
from ..runtime.datasets import SPECS_HELP, Dataset, Shape3, evaluation_set, load_dataset
from ..runtime.session import evaluate, model_input

_FILE = click.Path(dir_okay=False, path_type=Path)
_POSITIVE = click.IntRange(min=1)


_EVAL_HELP = ("Evaluate on this labelled data instead, as `pimc compile --eval-data` does: the test split "
              "of digits, mnist or cifar10:DIR, or the whole npz:PATH file.")


@click.command("run")
@click.argument("model", type=_FILE)
@click.option("--data", default=None, help=f"Dataset (its test split): {SPECS_HELP}.  [default: digits]")
@click.option("--eval-data", default=None, help=_EVAL_HELP)
@click.option("--batch", type=_POSITIVE, default=64, show_default=True, help="Batch size.")
@click.option("--limit", type=_POSITIVE, default=None, help="Use only the first N samples.")
@click.option("--repeats", type=_POSITIVE, default=20, show_default=True, help="Timed runs for the latency.")
@click.option("--threads", type=_POSITIVE, default=None, help="onnxruntime intra-op threads.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=1x3xHxW",
              help="Fix the symbolic dims of input NAME (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def run_command(
    model: Path, data: str | None, eval_data: str | None, batch: int, limit: int | None, repeats: int,
    threads: int | None, input_shapes: tuple[str, ...], as_json: bool,
) -> None:
    """Run MODEL on onnxruntime over a dataset: accuracy and latency."""
    from ..compiler.input_shapes import fix_input_shapes

    proto = fix_input_shapes(read_model(model), input_shapes)
    _, shape, _ = dataset_input(proto, model)
    dataset, data = evaluation_data(data, eval_data, shape, limit)
    result = {"model": str(model), "data": data, **evaluate(
        proto, dataset, batch=batch, repeats=repeats, threads=threads
    )}
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    table = metric_table(f"{model.name} on {data}")
    psnr = result.get("metric") == "psnr"
    table.add_row("PSNR (Y)" if psnr else "accuracy", _quality(result["accuracy"], psnr))
    table.add_row("samples", str(result["samples"]))
    table.add_row(f"latency median (batch {result['batch']})", f"{result['latency_ms_median']:.3f} ms")
    table.add_row(f"latency p90 (batch {result['batch']})", f"{result['latency_ms_p90']:.3f} ms")
    console().print(table)


def evaluation_data(data: str | None, eval_data: str | None, shape: Shape3, limit: int | None) -> tuple[Dataset, str]:
    """The dataset ``--data`` (its test split) or ``--eval-data`` names, and the label to show for it."""
    if data and eval_data:
        raise PimcError("give --data or --eval-data, not both")
    if eval_data:
        return evaluation_set(eval_data, shape, limit), eval_data
    spec = data or "digits"
    return load_dataset(spec, shape, limit=limit), spec


@click.command("bench")
@click.argument("models", type=_FILE, nargs=-1, required=True)
@click.option("--data", default=None, help=f"Dataset (its test split): {SPECS_HELP}.  [default: digits]")
@click.option("--eval-data", default=None, help=_EVAL_HELP)
@click.option("--batches", default="1,64", show_default=True, help="Comma-separated batch sizes to time.")
@click.option("--repeats", type=_POSITIVE, default=20, show_default=True, help="Timed runs per model and batch.")
@click.option("--limit", type=_POSITIVE, default=None, help="Use only the first N samples.")
@click.option("--threads", type=_POSITIVE, default=None, help="onnxruntime intra-op threads.")
@click.option("--csv", "csv_path", type=_FILE, default=None, help="Also write the results as CSV.")
@click.option("--plot", "plot_path", type=_FILE, default=None, help="Also write a PNG bar chart.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def bench_command(
    models: tuple[Path, ...], data: str | None, eval_data: str | None, batches: str, repeats: int, limit: int | None, threads: int | None,
    csv_path: Path | None, plot_path: Path | None, as_json: bool,
) -> None:
    """Compare MODELS (the first is the reference): size, sparsity, latency, accuracy, agreement."""
    from ..runtime.bench import compare_models, write_csv, write_plot

    for path in models:
        dataset_input(read_model(path), path)
    sizes = _batch_sizes(batches)
    if data and eval_data:
        raise PimcError("give --data or --eval-data, not both")
    rows = compare_models(list(models), data or "digits", sizes, repeats, limit=limit, threads=threads,
                          eval_spec=eval_data)
    data = eval_data or data or "digits"
    if csv_path:
        write_csv(rows, csv_path)
    if plot_path:
        write_plot(rows, plot_path)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        console().print(_bench_table(rows, sizes, data))


def _bench_table(rows: list[dict], sizes: list[int], data: str) -> Table:
    """Rich table of bench rows with ratios against the first model, every ratio "> 1 = better": the
    non-zero column says how many times fewer non-zero params, each latency column how many times faster."""
    ref = rows[0]
    psnr = ref.get("metric") == "psnr"
    table = Table(title=f"bench on {data} (ratios vs {ref['model']}, > 1 = better)")
    headers = ["model", "params", "non-zero (× fewer)", "PSNR (Y)" if psnr else "accuracy", "top-1 agree",
               "max |diff|"]
    headers += [f"ms @b{b} (× faster)" for b in sizes]
    for header in headers:
        table.add_column(header, justify="left" if header == "model" else "right")
    for row in rows:
        cells = [
            row["model"],
            str(row["params"]),
            f"{row['nonzero_params']} ({_gain(ref['nonzero_params'], row['nonzero_params'], 'fewer')})",
            _quality(row["accuracy"], psnr),
            "-" if psnr else _percent(row["top1_agreement"]),
            "-" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.2e}",
        ]
        for b in sizes:
            key = f"latency_ms_b{b}"
            cells.append(f"{row[key]:.3f} ({_gain(ref[key], row[key], 'faster')})")
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


def dataset_input(proto: onnx.ModelProto, path: Path) -> tuple[str, tuple[int, int, int], type]:
    """The single image input the dataset feeds; a model with more inputs is refused by name."""
    inputs = [vi.name for vi in real_inputs(proto)]
    if len(inputs) > 1:
        names = ", ".join(f"'{n}'" for n in inputs)
        raise PimcError(f"{path}: the model has {len(inputs)} inputs ({names}); the datasets feed single-input "
                        "image models only")
    return model_input(proto)


def _gain(reference: float, value: float, word: str) -> str:
    """``reference / value`` formatted as ``2.00× faster`` (> 1 = better than the reference)."""
    return f"{reference / value:.2f}× {word}" if value else "-"


def _quality(value: float | None, psnr: bool) -> str:
    """Top-1 as a percentage, PSNR in dB, or ``-``."""
    return "-" if value is None else f"{value:.2f} dB" if psnr else f"{value:.2%}"


def _percent(value: float | None) -> str:
    """A fraction as a percentage, or ``-``."""
    return "-" if value is None else f"{value:.2%}"
