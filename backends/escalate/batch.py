"""ESCALATE's cost and baselines at many hardware points in one call.

The equations are escalate's own (``schedule_totals``, ``accelerator_totals``: every layer equation is written
with ``backends.pointwise`` so it takes arrays of hardware points as well as one point); this module only
arranges the points. A parameter in ``STRUCTURAL`` fixes array shapes or the lowering (the channel-tile width
``basis_cols``, the row-group heights ``coef_rows`` / ``dense_rows``, the bit widths the lowering reads, the
two on/off switches), so it takes one value per evaluation: the points are grouped by those values, each
group's schedules are lowered once, and every other parameter is an array over the group's points.

``cost_many`` returns, per point, exactly what ``target.cost(target.lower(model, hw), hw)`` and the
``dense`` / ``sparse`` baselines on the baseline model give (latency, cycles, energy).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ...compiler.workload import Workload
from .config import EscalateConfig
from .cost import ACCELERATORS, accelerator_totals, schedule_totals
from .lower import Schedule, lower_dense, lower_workload

#: Parameters the lowering reads (one schedule per combination of their values).
LOWERING = ("basis_cols", "coef_rows", "act_bits", "weight_bits", "basis_bits", "coef_bits", "intermediate_bits")
#: Parameters that take one value per evaluation (the points are grouped by them).
STRUCTURAL = (*LOWERING, "dense_rows", "activation_skipping", "onchip_activations")
#: The totals reported per point, for the compiled model and for each baseline.
TOTALS = ("latency_cycles", "latency_s", "energy_j")

_FIELDS = {f.name: f for f in dataclasses.fields(EscalateConfig)}


def point_values(values: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    """Each parameter's values as an array, coerced and validated as ``EscalateConfig.from_dict`` does."""
    out = {}
    for name, items in values.items():
        coerced = {v: getattr(EscalateConfig.from_dict({name: v}, "hardware point"), name)
                   for v in dict.fromkeys(items)}
        out[name] = np.array([coerced[v] for v in items])
    return out


def groups(arrays: dict[str, np.ndarray], names: tuple[str, ...], n: int) -> list[np.ndarray]:
    """The point indices of every combination of the ``names`` parameters' values (all points when none varies)."""
    varying = [arrays[name] for name in names if name in arrays]
    if not varying:
        return [np.arange(n)]
    codes = np.zeros(n, dtype=np.int64)
    for column in varying:
        levels, inverse = np.unique(column, return_inverse=True)
        codes = codes * len(levels) + inverse.reshape(-1)
    _, inverse = np.unique(codes, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)


def batch_config(arrays: dict[str, np.ndarray], index: np.ndarray) -> EscalateConfig:
    """The config of the points ``index`` of one group: a ``STRUCTURAL`` parameter as the group's single value,
    every other one as an array over the points (its default repeated where it does not vary)."""
    kwargs: dict[str, Any] = {}
    for name, f in _FIELDS.items():
        if name in STRUCTURAL:
            kwargs[name] = arrays[name][index[0]].item() if name in arrays else f.default
        else:
            kwargs[name] = arrays[name][index] if name in arrays else np.full(len(index), f.default)
    return EscalateConfig(**kwargs)


def cost_many(workload: Workload, baseline_workload: Workload, values: dict[str, list[Any]]) -> dict[str, Any]:
    """Per point: ``latency_cycles`` / ``latency_s`` / ``energy_j`` of the compiled model, and ``baselines``
    {name: the same three} for the same-shape baselines and the ``ACCELERATORS`` on ``baseline_workload``."""
    arrays = point_values(values)
    n = len(next(iter(arrays.values()))) if arrays else 1
    out: dict[str, Any] = {k: np.zeros(n) for k in TOTALS}
    out["baselines"] = {}
    schedules: dict[tuple[Any, ...], tuple[Schedule, Schedule]] = {}
    for index in groups(arrays, STRUCTURAL, n):
        hw = batch_config(arrays, index)
        key = tuple(getattr(hw, name) for name in LOWERING)
        if key not in schedules:
            schedules[key] = (lower_workload(workload, hw), lower_dense(baseline_workload, hw))
        schedule, dense_schedule = schedules[key]
        _, total, same_shape = schedule_totals(schedule, hw)
        baselines = {**same_shape, **{kind: accelerator_totals(dense_schedule, hw, kind)[1] for kind in ACCELERATORS}}
        _store(out, total, index)
        for name, entry in baselines.items():
            _store(out["baselines"].setdefault(name, {k: np.zeros(n) for k in TOTALS}), entry, index)
    return out


def _store(columns: dict[str, np.ndarray], totals: dict[str, Any], index: np.ndarray) -> None:
    for key in TOTALS:
        columns[key][index] = totals[key]
