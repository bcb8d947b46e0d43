"""Baselines that run the model the user brought, for every target in one place.

A target declares its baselines with ``Target.baseline_plans()``: a name, a one-line description and a
cost function. Each is costed, through the target's own cost model and on the same hardware description,
on the **input model** (the model as loaded) after only the exact normalisations listed in
``NORMALIZATIONS``, or on the model named by ``--baseline-model NAME=FILE`` (normalised the same way).
The result is merged into ``cost.baselines`` so ``speedup_vs`` / ``energy_gain_vs`` compare the output
against them. Baselines a backend computes on the compiled model's own shapes (e.g. escalate's
``dense_same_shape``) keep their names and say so (``model = "output"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from .errors import PimcError
from .loader import infer_shapes, load_model, name_nodes
from .passbase import PassContext, get_pass
from .target import CostReport, HardwareConfig, Target
from .workload import reusing_workloads

#: The exact passes run on a baseline model before it is costed (verified exact on onnxruntime).
NORMALIZATIONS = ("fold-constants", "eliminate-identity", "fold-batchnorm")
#: With calibration data, the baseline's own activation zeros are measured too (annotation only), so a
#: baseline machine that skips zero activations is costed on the zeros of the model it runs.
MEASUREMENT = "activation-sparsity"


def parse_baseline_models(items: tuple[str, ...] | list[str], target: Target) -> dict[str, str]:
    """``NAME=FILE`` items → {name: path}; an unknown name for the target is a one-line error."""
    names = [plan.name for plan in target.baseline_plans()]
    result: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise PimcError(f"--baseline-model {item!r}: expected NAME=FILE")
        if name not in names:
            known = ", ".join(names) if names else "none"
            raise PimcError(f"--baseline-model: target '{target.name}' has no baseline '{name}' (baselines: {known})")
        if not Path(path).exists():
            raise PimcError(f"--baseline-model {name}: {path}: no such file")
        result[name] = path
    return result


def normalize(model: onnx.ModelProto, seed: int = 0,
              calibration: list[dict[str, Any]] | None = None) -> onnx.ModelProto:
    """A copy of ``model`` after the exact normalisations (the input model is not modified); with
    ``calibration`` feeds, also its activation zeros (``MEASUREMENT``)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    ctx = PassContext(seed=seed)
    for name in NORMALIZATIONS:
        result = get_pass(name)().run(copy, ctx)
        copy = result.model
        if result.changed:
            name_nodes(copy)
            copy = infer_shapes(copy, f"baseline normalisation '{name}'")
    if calibration:
        ctx = PassContext(seed=seed, calibration=_feeds_for(copy, calibration), data_spec="calibration data")
        try:
            copy = get_pass(MEASUREMENT)().run(copy, ctx).model
        except PimcError:  # a --baseline-model the calibration images do not fit: costed without measured zeros
            pass
    return copy


def _measured(model: onnx.ModelProto) -> bool:
    from .annotations import get_node_annotation

    return any(get_node_annotation(node, "input_zero_fraction") is not None for node in model.graph.node)


def _feeds_for(model: onnx.ModelProto, calibration: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calibration feeds under ``model``'s own input name (a --baseline-model may name it differently)."""
    from .sessions import real_inputs

    names = [value.name for value in real_inputs(model)]
    if len(names) == 1 and all(len(feed) == 1 and names[0] not in feed for feed in calibration):
        return [{names[0]: next(iter(feed.values()))} for feed in calibration]
    return calibration


def cost_baselines(
    target: Target, input_model: onnx.ModelProto, hw: HardwareConfig | None, overrides: dict[str, str],
    seed: int = 0, calibration: list[dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every declared baseline of ``target``, costed on the normalised input model or its override (with
    its activation zeros measured on ``calibration`` when given)."""
    plans = target.baseline_plans()
    if not plans:
        return {}
    models: dict[str, onnx.ModelProto] = {}
    out: dict[str, dict[str, Any]] = {}
    for plan in plans:
        source = overrides.get(plan.name, "input")
        if source not in models:
            models[source] = normalize(input_model if source == "input" else load_model(source), seed, calibration)
    with reusing_workloads():  # the baselines of one model read one workload
        for plan in plans:
            source = overrides.get(plan.name, "input")
            out[plan.name] = summarize(plan.cost(models[source], hw), source, plan.what, plan.reference)
            if calibration and _measured(models[source]):
                out[plan.name]["normalized_by"].append(MEASUREMENT)
    return out


def cost_with_baselines(
    target: Target, model: onnx.ModelProto, input_model: onnx.ModelProto, hw: HardwareConfig | None,
    overrides: dict[str, str] | None = None, input_macs: int | None = None, seed: int = 0,
) -> CostReport | None:
    """The target's cost of ``model`` with every baseline of ``input_model`` merged into ``baselines`` and
    throughput counted on the input model's dense MACs (``CostReport.count_input_ops``)."""
    baselines = cost_baselines(target, input_model, hw, overrides or {}, seed)
    return merge_baselines(target.cost(target.lower(model, hw), hw), baselines, input_macs)


def merge_baselines(
    cost: CostReport | None, baselines: dict[str, dict[str, Any]], input_macs: int | None
) -> CostReport | None:
    """The input-model baselines next to the backend's own, and throughput counted on the input model."""
    if cost is None:
        return None
    cost.baselines.update(baselines)
    if input_macs is not None:
        cost.count_input_ops(input_macs)
    return cost


def summarize(cost: CostReport, model: str, what: str, reference: bool = False) -> dict[str, Any]:
    """The report entry of one baseline."""
    runs = "the input model" if model == "input" else f"{model} (--baseline-model)"
    entry: dict[str, Any] = {
        "latency_s": cost.latency_s, "latency_cycles": cost.latency_cycles, "energy_j": cost.energy_j,
        "energy_breakdown_j": dict(cost.energy_breakdown_j), "model": model, "what": f"{what}, on {runs}",
        "normalized_by": list(NORMALIZATIONS),
    }
    if reference:
        entry["reference"] = True
    return entry


def reference_baseline(baselines: dict[str, dict[str, Any]]) -> str | None:
    """Name of the baseline standing for "the input model on this target", if any."""
    return next((name for name, entry in baselines.items() if entry.get("reference")), None)
