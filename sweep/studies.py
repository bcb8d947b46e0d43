"""Built-in studies over one model and target.

``layerwise``: per-layer sensitivity. For every conv of the model, one layer at a time
(``decompose.include=<layer>``), the compile is run at each rank (``decompose.rank``); the table and
``DIR/layerwise.png`` show accuracy and energy against rank per layer. The accuracy budget is lifted
(``max_accuracy_drop = 100``) so every point is measured.
``break-even``: per-layer break-even pruning ratios; needs a ``prune`` pass, which this build lacks
(the study says so and stops).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..compiler.errors import PimcError
from .runner import SweepOptions, SweepResult, run_sweep
from .spec import parse_spec

DEFAULT_RANKS = (1, 2, 3, 4, 5, 6, 7, 8, 9)


def run_study(study: str, model: str, target: str | None, data: str | None, values: str | None,
              opts: SweepOptions) -> SweepResult:
    if not target or not data:
        raise PimcError(f"--study {study} needs --target and --data")
    if study == "break-even":
        return _break_even()
    return layerwise(model, target, data, _ranks(values), opts)


def _break_even() -> SweepResult:
    from ..compiler.passbase import all_passes

    if "prune" not in all_passes():
        raise PimcError("--study break-even needs the 'prune' pass, which is not in this build (skipped)")
    raise PimcError("--study break-even: not implemented yet for the 'prune' pass")


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
        ok = r.get("status") == "ok"
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
        ok = sorted((r for r in rows if r["decompose.include"] == layer and r.get("status") == "ok"),
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
