"""Sweep outputs: ``results.csv`` / ``results.parquet`` (one row per trial), ``pareto.csv`` and
``pareto.png`` (per target: accuracy vs energy and vs latency, or latency vs energy without accuracy).

``results.*`` also say, per row, whether it is on the feasible Pareto front of the spec's objectives among
the ``ok`` rows of the same model and target (``pareto``). An ``over_budget`` row (its accuracy drop exceeds
the spec's ``max_accuracy_drop``) is never on a front; the plot shows it as a hollow marker. Fronts are found
with numpy (a sort for two objectives), so a sweep of 10⁵ points is written in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .spec import SweepSpec, direction
from .trial import STATUS_OK, STATUS_OVER_BUDGET

LEAD = ["trial", "key", "model", "target"]
METRICS = ["accuracy", "accuracy_input", "drop_points", "params", "nonzero_params", "macs", "effective_macs",
           "latency_s", "energy_j", "throughput_gops", "tops_per_w"]
TAIL = ["pareto", "status", "error", "compiled_hw", "seconds"]
RATIOS = ("speedup_vs.", "energy_gain_vs.")


def columns(rows: list[dict[str, Any]], spec: SweepSpec) -> list[str]:
    keys: set[str] = set()
    for row in rows:
        keys.update(row)
    return LEAD + spec.axis_names + METRICS + sorted(k for k in keys if k.startswith(RATIOS)) + TAIL


def nondominated(points: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the rows of ``points`` (n × k, minimised) no other row dominates: ≤ in every
    column and < in one (equal rows do not dominate each other)."""
    n, k = points.shape
    if n == 0:
        return np.arange(0)
    if k == 2:
        return _nondominated_2d(points[:, 0], points[:, 1])
    ids = np.lexsort(points.T[::-1])  # a row can only be dominated by one before it in this order
    rest, front = points[ids], []
    while len(ids):  # the first remaining row is on the front: drop it and every row it dominates
        best = rest[0]
        front.append(ids[0])
        keep = ~((rest >= best).all(axis=1) & (rest > best).any(axis=1))
        keep[0] = False
        rest, ids = rest[keep], ids[keep]
    return np.sort(np.array(front, dtype=int))


def _nondominated_2d(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sorted by (x, y): a row is dominated when a row of smaller x has y ≤ its y, or the first row of its own
    x has a smaller y."""
    order = np.lexsort((y, x))
    xs, ys = x[order], y[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, len(xs)]))
    best_before = np.r_[np.inf, np.minimum.accumulate(ys)][first]  # min y over every smaller x
    dominated = (best_before <= ys) | (ys[first] < ys)
    return np.sort(order[~dominated])


def _matrix(frame: pd.DataFrame, objectives: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the ok rows with every objective finite, their signed objective values to minimise)."""
    signs = np.array([-1.0 if direction(o) == "max" else 1.0 for o in objectives])
    values = np.column_stack([_numbers(frame, o) for o in objectives]) if len(frame) else np.zeros((0, 0))
    usable = np.array(frame["status"] == STATUS_OK, dtype=bool)
    if values.size:
        usable &= np.isfinite(values).all(axis=1)
    index = np.flatnonzero(usable)
    return index, values[index] * signs if len(index) else np.zeros((0, len(objectives)))


def _numbers(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def front_of(frame: pd.DataFrame, objectives: list[str]) -> list[int]:
    """Positions in ``frame`` of its feasible Pareto front on ``objectives``."""
    index, values = _matrix(frame, objectives)
    return index[nondominated(values)].tolist()


def pareto_front(rows: list[dict[str, Any]], objectives: list[str]) -> list[int]:
    """Indices of the ok rows not dominated on ``objectives`` (rows missing a value are left out)."""
    return front_of(table(rows, ["status", *objectives]), objectives)


def table(rows: list[dict[str, Any]], cols: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=cols) if rows else pd.DataFrame(columns=cols)


def groups(frame: pd.DataFrame) -> dict[tuple[str, str], np.ndarray]:
    """Positions of the rows of every (model, target), in order of appearance."""
    if not len(frame):
        return {}
    return {key: np.asarray(pos) for key, pos in frame.groupby(["model", "target"], sort=False).indices.items()}


def pareto_mask(frame: pd.DataFrame, objectives: list[str]) -> np.ndarray:
    mask = np.zeros(len(frame), dtype=bool)
    for members in groups(frame).values():
        mask[members[front_of(frame.iloc[members], objectives)]] = True
    return mask


def front_pairs(frame: pd.DataFrame) -> list[tuple[str, str]]:
    if np.isfinite(_numbers(frame, "accuracy")).any():
        return [("energy_j", "accuracy"), ("latency_s", "accuracy")]
    return [("energy_j", "latency_s")]


def pareto_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Every row on a 2-D front of one (model, target), once per front, with the front's name."""
    parts = []
    for members in groups(frame).values():
        subset = frame.iloc[members]
        for x, y in front_pairs(frame):
            front = subset.iloc[front_of(subset, [x, y])]
            front = front.iloc[np.argsort(_numbers(front, x), kind="stable")]
            parts.append(front.assign(front=f"{y} vs {x}"))
    cols = ["front", *frame.columns]
    return pd.concat(parts)[cols] if parts else pd.DataFrame(columns=cols)


def write_table(frame: pd.DataFrame, csv_path: Path, parquet_path: Path | None) -> None:
    """The frame as CSV (and parquet), both written by pyarrow from one table; a mixed-type column (axis
    values of several types) as text."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    frame = frame.copy()
    for c in frame.columns:
        if frame[c].dtype == object:
            frame[c] = frame[c].map(lambda v: None if v is None or v != v else str(v))
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    tmp = csv_path.with_suffix(".csv.tmp")
    pacsv.write_csv(arrow, tmp)
    tmp.replace(csv_path)
    if parquet_path is not None:
        pq.write_table(arrow, parquet_path)


def plot_pareto(frame: pd.DataFrame, path: Path) -> None:
    """Per front pair and (model, target): the ok rows (dots), the over-budget rows (hollow) and the feasible
    front (steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = front_pairs(frame)
    fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs), 4.5), squeeze=False)
    for ax, (x, y) in zip(axes[0], pairs, strict=True):
        for n, ((model, target), members) in enumerate(groups(frame).items()):
            _plot_group(ax, frame.iloc[members], x, y, f"C{n % 10}", f"{target} ({Path(model).stem})")
        if (np.nan_to_num(_numbers(frame, x)) > 0).any():
            ax.set_xscale("log")
        ax.set(xlabel=x, ylabel=y, title=f"Pareto front: {y} vs {x}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_group(ax, subset: pd.DataFrame, x: str, y: str, color: str, label: str) -> None:
    xs, ys = _numbers(subset, x), _numbers(subset, y)
    shown = np.isfinite(xs) & np.isfinite(ys)
    status = subset["status"].to_numpy()
    ok, over = shown & (status == STATUS_OK), shown & (status == STATUS_OVER_BUDGET)
    ax.scatter(xs[ok], ys[ok], s=14, alpha=0.35, color=color, rasterized=True)
    if over.any():
        ax.scatter(xs[over], ys[over], s=22, facecolors="none", edgecolors=color, linewidths=0.9,
                   label=f"{label}: over the accuracy budget", rasterized=True)
    front = np.asarray(front_of(subset, [x, y]), dtype=int)
    front = front[np.argsort(xs[front], kind="stable")]
    ax.step(xs[front], ys[front], where="post", color=color, label=label)
    ax.scatter(xs[front], ys[front], s=28, color=color)


def write_results(rows: list[dict[str, Any]], spec: SweepSpec, out: Path) -> dict[str, str]:
    cols = columns(rows, spec)
    frame = table(rows, cols)
    frame["pareto"] = pareto_mask(frame, spec.objectives)
    for row, flag in zip(rows, frame["pareto"].tolist(), strict=True):
        row["pareto"] = flag
    files = {"csv": out / "results.csv", "parquet": out / "results.parquet", "pareto_csv": out / "pareto.csv",
             "pareto_png": out / "pareto.png"}
    write_table(frame, files["csv"], files["parquet"])
    write_table(pareto_table(frame), files["pareto_csv"], None)
    plot_pareto(frame, files["pareto_png"])
    return {k: str(v) for k, v in files.items()}
