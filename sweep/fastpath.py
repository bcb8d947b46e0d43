"""Cost-only fast path: when only hardware axes vary, compile once per model and pipeline, then re-run only
the target's lower + cost (and the baselines' costs) for each hardware point.

The compile (passes, accuracy) runs once at the target's default hardware; a pass that weighs candidates
with the target's cost model (``decompose`` searching ranks, ``comparator-conv``'s cost rule) makes its
choices at that hardware, so rows carry ``compiled_hw = "default"`` (``pimc sweep --exact`` compiles every
point at its own hardware instead). A target with ``cost_many`` (escalate) costs a whole chunk of points in
one vectorised call; any other target costs point by point. Either way a chunk comes back as columns
(``{column: [value per point]}``). Within one worker process the compiled group's models stay loaded and their
workloads extracted (``cached_workloads``) from one chunk to the next.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import onnx

from ..compiler.errors import PimcError
from .trial import (
    STATUS_FAILED,
    base_row,
    compile_options,
    cost_columns,
    cost_metrics,
    report_metrics,
)

Columns = dict[str, list[Any]]


@dataclass
class CompiledGroup:
    """One compile shared by every hardware point of a (model, target, pass options) group."""

    target: str
    model: bytes | None  # the compiled model, serialized (None when the compile failed)
    normalized_input: bytes | None  # the input model after the baselines' exact normalisations
    input_macs: int
    metrics: dict[str, Any]
    error: str = ""
    seconds: float = 0.0
    key: str = ""  # identifies this compile in the workers' caches


def compile_group(point: dict[str, Any], data: str | None, eval_data: str | None, max_drop: float | None,
                  seed: int, model_path: str, input_shapes: tuple[str, ...] = (),
                  passes: str | None = None) -> CompiledGroup:
    from ..app.compile import compile_model
    from ..compiler.baselines import normalize
    from ..compiler.input_shapes import fix_input_shapes
    from ..compiler.loader import load_model

    start = time.perf_counter()
    pass_axes = {k: v for k, v in point["axes"].items() if not k.startswith("hw.")}
    try:
        opts = compile_options(model_path, point["target"], pass_axes, data, eval_data, max_drop, seed, None,
                               input_shapes, passes)
        model, report = compile_model(opts)
        normalized = normalize(fix_input_shapes(load_model(model_path), input_shapes), seed)
        return CompiledGroup(point["target"], model.SerializeToString(), normalized.SerializeToString(),
                             int(report["model"]["macs_before"]), report_metrics(report, max_drop),
                             seconds=time.perf_counter() - start, key=uuid.uuid4().hex)
    except PimcError as exc:
        error = str(exc).splitlines()[0] if str(exc) else "error"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return CompiledGroup(point["target"], None, None, 0, {}, error, time.perf_counter() - start)


_WORKLOADS: dict[int, tuple[onnx.ModelProto, Any]] = {}


@contextlib.contextmanager
def cached_workloads() -> Iterator[None]:
    """Within the block, every backend's ``extract_workload(model)`` is computed once per model object (kept
    across blocks while ``_PREPARED`` holds the models)."""
    from ..compiler import workload

    original = workload.extract_workload

    def cached(model: onnx.ModelProto, _known=None):
        hit = _WORKLOADS.get(id(model))
        if hit is None or hit[0] is not model or _known is not None:
            hit = (model, original(model, _known))
            _WORKLOADS[id(model)] = hit
        return hit[1]

    patched = [m for name, m in list(sys.modules.items())
               if name.startswith("pimc.backends") and getattr(m, "extract_workload", None) is original]
    for module in patched:
        module.extract_workload = cached
    try:
        yield
    finally:
        for module in patched:
            module.extract_workload = original


@dataclass
class Prepared:
    """A compiled group loaded in this process: its target, compiled model and normalised input model."""

    target: Any
    model: onnx.ModelProto
    normalized: onnx.ModelProto


_PREPARED: dict[str, Prepared] = {}


def prepared(group: CompiledGroup) -> Prepared:
    """The group's models, loaded once per process (one group at a time; the workload cache goes with it)."""
    from ..compiler.target import get_target

    hit = _PREPARED.get(group.key) if group.key else None
    if hit is None:
        _PREPARED.clear()
        _WORKLOADS.clear()
        hit = Prepared(get_target(group.target), onnx.load_from_string(group.model),
                       onnx.load_from_string(group.normalized_input))
        if group.key:
            _PREPARED[group.key] = hit
    return hit


def cost_points(group: CompiledGroup, points: list[dict[str, Any]]) -> Columns:
    """One row per hardware point (as columns): the group's compile metrics and this hardware's cost."""
    if group.model is None:
        return to_columns([{**base_row(p), "status": STATUS_FAILED, "error": group.error, "compiled_hw": "default",
                            "seconds": 0.0} for p in points])
    ready = prepared(group)
    with cached_workloads():
        if hasattr(ready.target, "cost_many"):
            return _cost_many(ready, group, points)
        return to_columns([_cost_one(ready, group, point) for point in points])


def _cost_one(ready: Prepared, group: CompiledGroup, point: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    row = {**base_row(point), **group.metrics, "compiled_hw": "default"}
    try:
        row.update(cost_metrics(point_cost(ready.target, ready.model, ready.normalized, group.input_macs, point)))
    except PimcError as exc:
        row.update(status=STATUS_FAILED, error=str(exc).splitlines()[0])
    row["seconds"] = round(time.perf_counter() - start, 6)
    return row


def _cost_many(ready: Prepared, group: CompiledGroup, points: list[dict[str, Any]]) -> Columns:
    """Every point of the chunk in one ``cost_many`` call; a failing call fails the chunk's rows."""
    start = time.perf_counter()
    n = len(points)
    names = list(dict.fromkeys(k for p in points for k in p["axes"] if k.startswith("hw.")))
    values = {name.split(".", 2)[2]: [p["axes"][name] for p in points] for name in names}
    columns = to_columns([base_row(p) for p in points])
    columns.update({k: [v] * n for k, v in group.metrics.items()})
    try:
        columns.update(cost_columns(ready.target.cost_many(ready.model, ready.normalized, values), group.input_macs))
    except PimcError as exc:
        columns.update(status=[STATUS_FAILED] * n, error=[str(exc).splitlines()[0]] * n)
    columns["compiled_hw"] = ["default"] * n
    columns["seconds"] = [round((time.perf_counter() - start) / n, 6)] * n
    return columns


def to_columns(rows: list[dict[str, Any]]) -> Columns:
    names = list(dict.fromkeys(k for r in rows for k in r))
    return {name: [r.get(name) for r in rows] for name in names}


def to_rows(columns: Columns) -> list[dict[str, Any]]:
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def point_cost(target, model: onnx.ModelProto, normalized: onnx.ModelProto, input_macs: int,
               point: dict[str, Any]) -> dict[str, Any] | None:
    """The compile's ``cost`` section for one hardware point (same as ``compile_model`` computes)."""
    from ..compiler.baselines import merge_baselines, summarize

    hw_values = {k.split(".", 2)[2]: v for k, v in point["axes"].items() if k.startswith("hw.")}
    hw = target.config_cls.from_dict(hw_values, "sweep point") if target.config_cls else None
    baselines = {plan.name: summarize(plan.cost(normalized, hw), "input", plan.what, plan.reference)
                 for plan in target.baseline_plans()}
    cost = merge_baselines(target.cost(target.lower(model, hw), hw), baselines, input_macs)
    return cost.to_dict() if cost is not None else None
