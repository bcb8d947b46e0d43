"""Cost-only fast path: when only hardware axes vary, compile once per model and pipeline, then re-run only
the target's lower + cost (and the baselines' costs) for each hardware point.

The compile (passes, accuracy) runs once at the target's default hardware; a pass that weighs candidates
with the target's cost model (``decompose`` searching ranks, ``comparator-conv``'s cost rule) makes its
choices at that hardware, so rows carry ``compiled_hw = "default"`` (``pimc sweep --exact`` compiles every
point at its own hardware instead). Workloads are extracted once per model: inside ``cached_workloads``
the backends' ``extract_workload`` returns the record list already made for the same model object.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import onnx

from ..compiler.errors import PimcError
from .trial import STATUS_FAILED, base_row, compile_options, cost_metrics, report_metrics


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


def compile_group(point: dict[str, Any], data: str | None, eval_data: str | None, max_drop: float | None,
                  seed: int, model_path: str) -> CompiledGroup:
    from ..compiler.baselines import normalize
    from ..compiler.compile import compile_model
    from ..compiler.loader import load_model

    start = time.perf_counter()
    pass_axes = {k: v for k, v in point["axes"].items() if not k.startswith("hw.")}
    try:
        opts = compile_options(model_path, point["target"], pass_axes, data, eval_data, max_drop, seed, None)
        model, report = compile_model(opts)
        normalized = normalize(load_model(model_path), seed)
        return CompiledGroup(point["target"], model.SerializeToString(), normalized.SerializeToString(),
                             int(report["model"]["macs_before"]), report_metrics(report),
                             seconds=time.perf_counter() - start)
    except PimcError as exc:
        error = str(exc).splitlines()[0] if str(exc) else "error"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return CompiledGroup(point["target"], None, None, 0, {}, error, time.perf_counter() - start)


@contextlib.contextmanager
def cached_workloads() -> Iterator[None]:
    """Within the block, every backend's ``extract_workload(model)`` is computed once per model object."""
    from ..compiler import workload

    original = workload.extract_workload
    cache: dict[int, tuple[onnx.ModelProto, Any]] = {}

    def cached(model: onnx.ModelProto, _known=None):
        hit = cache.get(id(model))
        if hit is None or hit[0] is not model or _known is not None:
            hit = (model, original(model, _known))
            cache[id(model)] = hit
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


def cost_points(group: CompiledGroup, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per hardware point: the group's compile metrics and this hardware's cost."""
    if group.model is None:
        return [{**base_row(p), "status": STATUS_FAILED, "error": group.error, "compiled_hw": "default",
                 "seconds": 0.0} for p in points]
    from ..compiler.target import get_target

    target = get_target(group.target)
    model = onnx.load_from_string(group.model)
    normalized = onnx.load_from_string(group.normalized_input)
    rows = []
    with cached_workloads():
        for point in points:
            start = time.perf_counter()
            row = {**base_row(point), **group.metrics, "compiled_hw": "default"}
            try:
                row.update(cost_metrics(point_cost(target, model, normalized, group.input_macs, point)))
            except PimcError as exc:
                row.update(status=STATUS_FAILED, error=str(exc).splitlines()[0])
            row["seconds"] = round(time.perf_counter() - start, 6)
            rows.append(row)
    return rows


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
