"""Side-by-side comparison of ONNX models: size, sparsity, latency, accuracy and output agreement."""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from ..compiler.errors import PimcError
from ..compiler.modelio import read_model
from ..compiler.sessions import fixed_batch, free_batch, make_session, predict, runs_batched
from ..compiler.stats import parameter_counts
from .datasets import Dataset, evaluation_set, load_dataset
from .session import batch_input, model_input, quality, time_run

CSV_FIELDS = [
    "model", "params", "nonzero_params", "sparsity", "accuracy", "top1_agreement", "max_abs_diff",
]
def compare_models(
    paths: Sequence[str | os.PathLike],
    data_spec: str = "digits",
    batches: Sequence[int] = (1, 64),
    repeats: int = 20,
    limit: int | None = None,
    threads: int | None = None,
    eval_spec: str | None = None,
) -> list[dict]:
    """Compare models on one dataset; agreement and ratios are relative to the first model.

    Latency runs are interleaved (every repeat runs each model once, in a seeded shuffled order) in one
    process so drift and position affect all models alike; the median per model and batch size is reported. ``eval_spec`` (``--eval-data``)
    replaces the test split of ``data_spec`` by :func:`evaluation_set`'s data.
    """
    if not paths:
        raise PimcError("bench needs at least one model")
    protos = [read_model(p) for p in paths]
    shape = _common_input_shape(protos, paths)
    if eval_spec:
        data = evaluation_set(eval_spec, shape, limit)
    else:
        data = load_dataset(data_spec, shape, split="test", limit=limit)
    sessions = [make_session(p, threads, spinning=False) for p in protos]
    inputs = [data.x.astype(model_input(p)[2], copy=False) for p in protos]
    logits = [predict(s, x) for s, x in zip(sessions, inputs, strict=True)]
    timed = [timed_session(p, x, threads, s) for p, s, x in zip(protos, sessions, inputs, strict=True)]
    latencies = interleaved_latency(timed, inputs, batches, repeats)
    return [
        _row(Path(path).name, proto, data, logits[i], logits[0], latencies[i])
        for i, (path, proto) in enumerate(zip(paths, protos, strict=True))
    ]


def timed_session(proto: onnx.ModelProto, x: np.ndarray, threads: int | None, session=None):
    """The session to time ``proto`` on ``x`` with: a model exported with a fixed batch of 1 that computes the
    same per sample on a batch (``runs_batched``) is timed with a free batch, so every model's "batch 64" runs
    64 images at once. ``session``: an open session of ``proto`` to reuse when the batch stays fixed."""
    session = session or make_session(proto, threads, spinning=False)
    pair = x[:2] if len(x) >= 2 else np.concatenate([x[:1], 0.5 * x[:1]]).astype(x.dtype)  # two unequal samples
    if fixed_batch(session) != 1 or not runs_batched(proto, pair):
        return session
    return make_session(free_batch(proto), threads, spinning=False)


def _common_input_shape(protos: list[onnx.ModelProto], paths: Sequence[str | os.PathLike]) -> tuple[int, int, int]:
    """The (C, H, W) input shared by all models."""
    shapes = [model_input(p)[1] for p in protos]
    for path, shape in zip(paths, shapes, strict=True):
        if shape != shapes[0]:
            raise PimcError(f"{path}: input shape {shape} differs from {paths[0]}'s {shapes[0]}")
    return shapes[0]


def geometric_mean(values: Sequence[float]) -> float:
    """The geometric mean of positive times (so no batch size dominates a comparison over several)."""
    return math.exp(sum(math.log(v) for v in values) / len(values))


def interleaved_latency(
    sessions: list, inputs: list[np.ndarray], batches: Sequence[int], repeats: int
) -> list[dict[int, float]]:
    """Median milliseconds per model and batch size, alternating between models on every repeat."""
    samples: list[dict[int, list[float]]] = [{b: [] for b in batches} for _ in sessions]
    for batch in batches:
        chunks = [batch_input(s, x, batch) for s, x in zip(sessions, inputs, strict=True)]
        for session, chunk in zip(sessions, chunks, strict=True):
            time_run(session, chunk)
        for r in range(max(1, repeats)):
            for i in _order(len(sessions), r):
                samples[i][batch].append(time_run(sessions[i], chunks[i]))
    return [{b: float(np.median(v)) for b, v in per_model.items()} for per_model in samples]


def compare_latency(before: onnx.ModelProto, after: onnx.ModelProto, x: np.ndarray,
                    batches: Sequence[int] = (1, 64), repeats: int | None = None, threads: int | None = None,
                    time_budget_s: float | None = None) -> dict:
    """Median milliseconds of ``before`` and ``after`` on ``x`` (tiled to each batch size), timed interleaved
    in one process, and how many times faster ``after`` runs (> 1: faster). A model with a fixed batch size
    runs that size; ``batch_B`` records it.

    With ``time_budget_s`` the repeats auto-range like ``timeit``: one warm-up run of each model per batch
    sizes them so that every batch's repeats take about an equal share of the budget (at least
    :data:`MIN_REPEATS`, at most ``repeats`` or :data:`MAX_REPEATS`); a batch whose warm-up alone exceeds its
    share is not timed."""
    sessions = [timed_session(m, x, threads) for m in (before, after)]
    plan = _repeat_plan(sessions, x, batches, repeats, time_budget_s)
    timed = [b for b in batches if plan[b] > 0]
    per_batch = [interleaved_latency(sessions, [x, x], [b], plan[b]) for b in timed]
    out: dict = {"measured": True, "repeats": {f"b{b}": plan[b] for b in timed},
                 "threads": threads or "onnxruntime default", "batches": timed,
                 "method": "interleaved medians" + (f", repeats auto-ranged to a {time_budget_s:g} s budget"
                                                    if time_budget_s else "")}
    for b, (t_before, t_after) in zip(timed, per_batch, strict=True):
        out[f"input_ms_b{b}"] = round(t_before[b], 5)
        out[f"output_ms_b{b}"] = round(t_after[b], 5)
        out[f"speedup_b{b}"] = round(t_before[b] / t_after[b], 4)
        out[f"batch_b{b}"] = fixed_batch(sessions[1]) or b
    skipped = [b for b in batches if plan[b] == 0]
    if skipped:
        out["not_timed"] = {f"b{b}": "one run exceeds the time budget" for b in skipped}
    return out


MIN_REPEATS, MAX_REPEATS = 3, 15


def _repeat_plan(sessions: list, x: np.ndarray, batches: Sequence[int], repeats: int | None,
                 budget_s: float | None) -> dict[int, int]:
    """Repeats per batch size: ``repeats`` (default MAX_REPEATS) without a budget, else auto-ranged."""
    if budget_s is None:
        return {b: repeats or MAX_REPEATS for b in batches}
    share = budget_s / max(1, len(batches))
    plan = {}
    for b in batches:
        one = sum(time_run(s, batch_input(s, x, b)) for s in sessions) / 1e3  # seconds; warms both models up
        fit = int(share // one) if one > 0 else MAX_REPEATS
        plan[b] = 0 if fit < MIN_REPEATS and b != batches[0] else min(repeats or MAX_REPEATS, max(MIN_REPEATS, fit))
    return plan


def _order(count: int, repeat: int) -> list[int]:
    """Model order of one repeat: a seeded permutation (repeat 0 in the given order), so no model always
    runs first, last or right after the same other one (on a loaded machine a fixed order biases medians)."""
    if repeat == 0:
        return list(range(count))
    return [int(i) for i in np.random.default_rng(repeat).permutation(count)]


def _row(
    name: str, proto: onnx.ModelProto, data: Dataset, logits: np.ndarray, reference: np.ndarray,
    latency: dict[int, float],
) -> dict:
    """One result row."""
    params, nonzero = parameter_counts(proto)
    row = {
        "model": name,
        "params": params,
        "nonzero_params": nonzero,
        "sparsity": 1.0 - nonzero / params if params else 0.0,
        "accuracy": quality(logits, data),
        "metric": data.metric.name,
        **_agreement(logits, reference),
    }
    row.update({f"latency_ms_b{b}": v for b, v in latency.items()})
    return row


def _agreement(logits: np.ndarray, reference: np.ndarray) -> dict:
    """Top-1 agreement and max absolute logit difference against the reference model."""
    a = logits.reshape(len(logits), -1)
    b = reference.reshape(len(reference), -1)
    if a.shape != b.shape:
        return {"top1_agreement": None, "max_abs_diff": None}
    return {
        "top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1))),
        "max_abs_diff": float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0,
    }


def _fields(rows: list[dict]) -> list[str]:
    """CSV columns: the fixed ones plus every latency column present."""
    latency = sorted({k for r in rows for k in r if k.startswith("latency_ms_b")}, key=lambda k: int(k[12:]))
    return CSV_FIELDS + latency


def write_csv(rows: list[dict], path: str | os.PathLike) -> Path:
    """Write the rows as CSV, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_fields(rows), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    return write_atomic(path, buffer.getvalue().encode())


def write_plot(rows: list[dict], path: str | os.PathLike) -> Path:
    """A PNG with one latency bar chart per batch size and one of total vs non-zero parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["model"] for r in rows]
    latency_keys = _fields(rows)[len(CSV_FIELDS) :]
    panels = len(latency_keys) + 1
    fig, axes = plt.subplots(1, panels, figsize=(panels * max(3.5, 1.1 * len(rows) + 1.5), 4), squeeze=False)
    for ax, key in zip(axes[0], latency_keys, strict=False):
        _bars(ax, names, {key.replace("latency_ms_b", "batch "): [r[key] for r in rows]})
        ax.set_ylabel("onnxruntime latency (ms, median)")
    params = {"params": [r["params"] for r in rows], "non-zero": [r["nonzero_params"] for r in rows]}
    _bars(axes[0][-1], names, params)
    axes[0][-1].set_ylabel("parameters")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return write_atomic(path, buffer.getvalue())


def _bars(ax: object, names: list[str], series: dict[str, list[float]]) -> None:
    """Grouped bar chart of several series over the model names."""
    width = 0.8 / max(1, len(series))
    positions = np.arange(len(names))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(positions + i * width - 0.4 + width / 2, values, width, label=label)
    ax.set_xticks(positions)
    ax.set_xticklabels(names, rotation=20, ha="right")
    ax.legend()


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to ``path`` through a temporary file in the same folder and a rename."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise PimcError(f"{target}: output folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise PimcError(f"{target}: cannot write ({exc.strerror or exc})") from exc
    return target
