"""Built-in studies over one model and target.

``layerwise``: per-layer sensitivity. For every conv of the model, one layer at a time
(``decompose.include=<layer>``), the compile is run at each rank (``decompose.rank``); the table and
``DIR/layerwise.png`` show accuracy and energy against rank per layer. The accuracy budget is lifted
(``max_accuracy_drop = 100``) so every point is measured.
``break-even``: per-layer break-even pruning ratios (ADMM-NN's definition: the lowest pruning ratio at
which the layer's sparse path is no slower than its dense path), from the target's own cost model
(``Target.break_even``, as ``pimc inspect --break-even``); ``DIR/break_even.csv`` and ``DIR/break_even.png``.
Needs no data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..compiler.errors import PimcError
from .runner import SweepOptions, SweepResult, run_sweep
from .spec import parse_spec
from .trial import MEASURED

DEFAULT_RANKS = (1, 2, 3, 4, 5, 6, 7, 8, 9)


def run_study(study: str, model: str, target: str | None, data: str | None, values: str | None,
              opts: SweepOptions) -> SweepResult:
    if study == "break-even":
        if not target:
            raise PimcError("--study break-even needs --target")
        return break_even(model, target, opts.out)
    if not target or not data:
        raise PimcError(f"--study {study} needs --target and --data")
    return layerwise(model, target, data, _ranks(values), opts)


def break_even(model: str, target: str, out: Path) -> SweepResult:
    """Per-layer break-even pruning ratios on ``target``, as a table, a CSV and a bar plot."""
    import csv
    import time

    from ..app.inspect_model import break_even_info
    from ..compiler.loader import load_model
    from ..compiler.tables import Table, console

    start = time.perf_counter()
    info = break_even_info(load_model(model), target, None)
    rows = [{**r, "status": "ok"} for r in info["layers"]]
    if not rows:
        raise PimcError(f"--study break-even: {info['note']}")
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "break_even.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = Table(title=f"break-even pruning ratios on {target}")
    for col in rows[0]:
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(v) for v in r.values()))
    console().print(table)
    console().print(info["note"], markup=False)
    png = plot_break_even(rows, target, out / "break_even.png")
    return SweepResult(rows, len(rows), 0, time.perf_counter() - start,
                       {"break_even_csv": str(csv_path), "break_even_png": str(png)})


def plot_break_even(rows: list[dict[str, Any]], target: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(rows) + 2), 4))
    ratios = [r["break_even_ratio"] if r["break_even_ratio"] is not None else float("nan") for r in rows]
    ax.bar(range(len(rows)), ratios, color="C0")
    ax.set_xticks(range(len(rows)), [str(r["layer"]) for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set(ylabel="break-even pruning ratio (x)", title=f"per-layer break-even pruning ratio on {target}")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _ranks(values: str | None) -> list[int]:
    if not values:
        return list(DEFAULT_RANKS)
    try:
        return [int(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise PimcError(f"--values {values!r}: expected comma-separated ranks") from None


def conv_layers(model: str) -> list[str]:
    """Names of the convs with a spatial kernel (what decompose may rewrite), in graph order."""
    from ..compiler.loader import load_model
    from ..compiler.workload import extract_workload

    return [r.name for r in extract_workload(load_model(model)).layers
            if r.op == "Conv" and r.kernel[0] * r.kernel[1] > 1 and r.groups == 1]


def layerwise(model: str, target: str, data: str, ranks: list[int], opts: SweepOptions) -> SweepResult:
    from ..compiler.target import get_target

    if "decompose" not in [n for n, _ in get_target(target).default_pipeline()]:
        raise PimcError(f"--study layerwise: target '{target}' has no 'decompose' pass in its pipeline")
    layers = conv_layers(model)
    if not layers:
        raise PimcError(f"{model}: no conv with a spatial kernel to study")
    spec = parse_spec({"model": model, "targets": [target], "data": data, "max_accuracy_drop": 100.0,
                       "objectives": ["energy_j", "accuracy"],
                       "axes": {"decompose.include": layers, "decompose.rank": ranks}})
    result = run_sweep(spec, opts)
    _print_table(result.rows)
    result.files["layerwise_png"] = str(plot_layerwise(result.rows, opts.out / "layerwise.png"))
    return result


def _print_table(rows: list[dict[str, Any]]) -> None:
    from ..compiler.tables import Table, console

    table = Table(title="per-layer sensitivity (one layer decomposed at a time)")
    for col in ("layer", "rank", "accuracy %", "drop (points)", "energy (J)", "latency (s)", "status"):
        table.add_column(col)
    for r in rows:
        ok = r.get("status") in MEASURED
        table.add_row(str(r["decompose.include"]), str(r["decompose.rank"]),
                      f"{100 * r['accuracy']:.2f}" if ok and r.get("accuracy") is not None else "-",
                      f"{r['drop_points']:.2f}" if ok and r.get("drop_points") is not None else "-",
                      f"{r['energy_j']:.4g}" if ok else "-", f"{r['latency_s']:.4g}" if ok else "-",
                      r["status"] if ok else f"{r['status']}: {r.get('error', '')}")
    console().print(table)


def plot_layerwise(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    layers = list(dict.fromkeys(r["decompose.include"] for r in rows))
    for n, layer in enumerate(layers):
        ok = sorted((r for r in rows if r["decompose.include"] == layer and r.get("status") in MEASURED),
                    key=lambda r: r["decompose.rank"])
        ranks = [r["decompose.rank"] for r in ok]
        left.plot(ranks, [100 * (r.get("accuracy") or 0) for r in ok], "o-", color=f"C{n % 10}", label=layer)
        right.plot(ranks, [r["energy_j"] for r in ok], "o-", color=f"C{n % 10}", label=layer)
    left.set(xlabel="rank", ylabel="accuracy (%)", title="accuracy vs rank, one layer at a time")
    right.set(xlabel="rank", ylabel="energy (J)", title="energy vs rank, one layer at a time")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
