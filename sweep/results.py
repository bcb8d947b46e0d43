"""Sweep outputs: ``results.csv`` / ``results.parquet`` (one row per trial), ``pareto.csv`` and
``pareto.png`` (per target: accuracy vs energy and vs latency, or latency vs energy without accuracy).

``results.*`` also say, per row, whether it is on the Pareto front of the spec's objectives among the
``ok`` rows of the same model and target (``pareto``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .spec import SweepSpec, direction
from .trial import STATUS_OK

LEAD = ["trial", "key", "model", "target"]
METRICS = ["accuracy", "accuracy_input", "drop_points", "params", "nonzero_params", "macs", "effective_macs",
           "latency_s", "energy_j", "throughput_gops", "tops_per_w"]
TAIL = ["pareto", "status", "error", "compiled_hw", "seconds"]


def columns(rows: list[dict[str, Any]], spec: SweepSpec) -> list[str]:
    ratios = sorted({k for r in rows for k in r if k.startswith(("speedup_vs.", "energy_gain_vs."))})
    return LEAD + spec.axis_names + METRICS + ratios + TAIL


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def pareto_front(rows: list[dict[str, Any]], objectives: list[str]) -> list[int]:
    """Indices of the ok rows not dominated on ``objectives`` (rows missing a value are left out)."""
    signs = [-1.0 if direction(o) == "max" else 1.0 for o in objectives]
    points = []
    for i, row in enumerate(rows):
        values = [_number(row.get(o)) for o in objectives]
        if row.get("status") == STATUS_OK and all(v is not None for v in values):
            points.append((i, [s * v for s, v in zip(signs, values, strict=True)]))
    front = []
    for i, p in points:
        dominated = any(all(a <= b for a, b in zip(q, p, strict=True)) and q != p for _, q in points)
        if not dominated:
            front.append(i)
    return front


def groups(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[int]]:
    out: dict[tuple[str, str], list[int]] = {}
    for i, row in enumerate(rows):
        out.setdefault((row["model"], row["target"]), []).append(i)
    return out


def mark_pareto(rows: list[dict[str, Any]], objectives: list[str]) -> None:
    for members in groups(rows).values():
        front = {members[j] for j in pareto_front([rows[i] for i in members], objectives)}
        for i in members:
            rows[i]["pareto"] = i in front


def front_pairs(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    has_accuracy = any(_number(r.get("accuracy")) is not None for r in rows)
    if has_accuracy:
        return [("energy_j", "accuracy"), ("latency_s", "accuracy")]
    return [("energy_j", "latency_s")]


def pareto_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row on a 2-D front of one (model, target), once per front, with the front's name."""
    out = []
    for members in groups(rows).values():
        subset = [rows[i] for i in members]
        for x, y in front_pairs(rows):
            for j in sorted(pareto_front(subset, [x, y]), key=lambda j: _number(subset[j][x])):
                out.append({"front": f"{y} vs {x}", **subset[j]})
    return out


def write_table(rows: list[dict[str, Any]], cols: list[str], csv_path: Path, parquet_path: Path | None) -> None:
    import pandas as pd

    frame = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
    tmp = csv_path.with_suffix(".csv.tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(csv_path)
    if parquet_path is not None:
        for c in frame.columns:  # mixed-type object columns (axis values) as text, for parquet
            if frame[c].dtype == object:
                frame[c] = frame[c].map(lambda v: None if v is None else str(v))
        frame.to_parquet(parquet_path, index=False)


def plot_pareto(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = front_pairs(rows)
    fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs), 4.5), squeeze=False)
    for ax, (x, y) in zip(axes[0], pairs, strict=True):
        for n, ((model, target), members) in enumerate(groups(rows).items()):
            subset = [rows[i] for i in members]
            color = f"C{n % 10}"
            ok = [r for r in subset if r.get("status") == STATUS_OK and _number(r.get(x)) is not None
                  and _number(r.get(y)) is not None]
            ax.scatter([r[x] for r in ok], [r[y] for r in ok], s=14, alpha=0.35, color=color)
            front = sorted((subset[j] for j in pareto_front(subset, [x, y])), key=lambda r: r[x])
            label = f"{target} ({Path(model).stem})"
            ax.step([r[x] for r in front], [r[y] for r in front], where="post", color=color, label=label)
            ax.scatter([r[x] for r in front], [r[y] for r in front], s=28, color=color)
        if any((_number(r.get(x)) or 0) > 0 for r in rows):
            ax.set_xscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"Pareto front: {y} vs {x}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(rows: list[dict[str, Any]], spec: SweepSpec, out: Path) -> dict[str, str]:
    mark_pareto(rows, spec.objectives)
    cols = columns(rows, spec)
    files = {"csv": out / "results.csv", "parquet": out / "results.parquet", "pareto_csv": out / "pareto.csv",
             "pareto_png": out / "pareto.png"}
    write_table(rows, cols, files["csv"], files["parquet"])
    write_table(pareto_rows(rows), ["front", *cols], files["pareto_csv"], None)
    plot_pareto(rows, files["pareto_png"])
    return {k: str(v) for k, v in files.items()}
