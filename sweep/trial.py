"""One sweep trial: a ``pimc compile`` with the trial's ``--set`` options and hardware, flattened to a row.

A trial compiles, costs and (with labelled data) evaluates exactly as ``pimc compile`` does:
``compile_model(CompileOptions(...))`` with the pass axes as ``sets`` and the hardware axes written to a
temporary ``--hw`` file, except that a drop over the accuracy budget is recorded rather than refused
(``enforce_budget=False``): every compiled trial keeps its accuracy, latency and energy. Its status is
``over_budget`` when the spec sets ``max_accuracy_drop`` and the drop exceeds it, else ``ok`` (without
``max_accuracy_drop`` the sweep marks nothing, whatever compile's own default budget says). Any error (an
option for a pass outside the target's pipeline...) becomes ``status = "failed"`` and ``error``.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..compiler.errors import PimcError

STATUS_OK, STATUS_OVER_BUDGET, STATUS_FAILED, STATUS_CRASHED = "ok", "over_budget", "failed", "crashed"
#: Statuses of a compiled and costed trial (its row has accuracy, latency and energy).
MEASURED = (STATUS_OK, STATUS_OVER_BUDGET)


def trial_key(model_digest: str, target: str, axes: dict[str, Any], extra: str = "") -> str:
    """A stable hash of the model's content, the target and the axis values (the journal's key)."""
    text = _KEY_ENCODER.encode({"model": model_digest, "target": target, "axes": axes, "extra": extra})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_KEY_ENCODER = json.JSONEncoder(sort_keys=True, default=str)


def file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def split_axes(axes: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """(``--set`` items, {hardware param: value}) of one trial's axis values."""
    sets = tuple(f"{name}={_set_value(v)}" for name, v in axes.items() if not name.startswith("hw."))
    hw = {name.split(".", 2)[2]: v for name, v in axes.items() if name.startswith("hw.")}
    return sets, hw


def _set_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def write_hw_toml(values: dict[str, Any], path: Path) -> None:
    """A flat ``name = value`` TOML file (what ``--hw`` reads)."""
    lines = []
    for name, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            text = json.dumps(str(value))
        lines.append(f"{name} = {text}")
    path.write_text("\n".join(lines) + "\n")


def compile_options(model_path: str, target: str, axes: dict[str, Any], data: str | None,
                    eval_data: str | None, max_drop: float | None, seed: int, hw_path: str | None,
                    input_shapes: tuple[str, ...] = (), passes: str | None = None):
    from ..app.compile import CompileOptions

    sets, _ = split_axes(axes)
    return CompileOptions(input=model_path, target=target, write_output=False, data=data, eval_data=eval_data,
                          sets=sets, hw=hw_path, seed=seed, max_accuracy_drop=max_drop, enforce_budget=False,
                          input_shapes=tuple(input_shapes), passes=passes)


def run_trial(point: dict[str, Any], data: str | None, eval_data: str | None, max_drop: float | None,
              seed: int, model_bytes: bytes | None = None, input_shapes: tuple[str, ...] = (),
              passes: str | None = None) -> dict[str, Any]:
    """Compile one point; never raises for a failing compile (the row says ``failed``)."""
    from ..app.compile import compile_model

    start = time.perf_counter()
    row = base_row(point)
    with tempfile.TemporaryDirectory(prefix="pimc-sweep-") as tmp:
        model_path = _materialize(point["model"], model_bytes, Path(tmp))
        _, hw = split_axes(point["axes"])
        hw_path = None
        if hw:
            hw_path = str(Path(tmp) / "hw.toml")
            write_hw_toml(hw, Path(hw_path))
        try:
            opts = compile_options(model_path, point["target"], point["axes"], data, eval_data, max_drop,
                                   seed, hw_path, input_shapes, passes)
            _, report = compile_model(opts)
            row.update(report_metrics(report, max_drop))
        except PimcError as exc:
            row.update(status=STATUS_FAILED, error=str(exc).splitlines()[0] if str(exc) else "error")
        except Exception as exc:  # a bug in one trial must not end the sweep
            row.update(status=STATUS_FAILED, error=f"{type(exc).__name__}: {exc}".splitlines()[0])
    row["seconds"] = round(time.perf_counter() - start, 4)
    return row


def _materialize(model: str, model_bytes: bytes | None, tmp: Path) -> str:
    """The model as a local file: its own path, or (on a cluster) the bytes the driver shipped."""
    if model_bytes is None:
        return model
    path = tmp / Path(model).name
    path.write_bytes(model_bytes)
    return str(path)


def base_row(point: dict[str, Any]) -> dict[str, Any]:
    return {"key": point.get("key"), "trial": point.get("index"), "model": point["model"],
            "target": point["target"], **point["axes"], "status": STATUS_OK, "error": ""}


def report_metrics(report: dict[str, Any], max_drop: float | None) -> dict[str, Any]:
    """The row fields of one compile report: status, accuracy, size, cost and every baseline ratio."""
    model = report.get("model", {})
    acc = report.get("accuracy") or {}
    row: dict[str, Any] = {
        "status": budget_status(acc, max_drop),
        "accuracy": acc.get("output") if acc.get("measured") else None,
        "accuracy_input": acc.get("input") if acc.get("measured") else None,
        "drop_points": acc.get("drop_points") if acc.get("measured") else None,
        "params": model.get("params"), "nonzero_params": model.get("nonzero_params"),
        "macs": model.get("macs"), "effective_macs": model.get("effective_macs"),
    }
    row.update(cost_metrics(report.get("cost")))
    return row


def budget_status(accuracy: dict[str, Any], max_drop: float | None) -> str:
    """``over_budget`` when the spec sets ``max_accuracy_drop`` (compile measured against it) and the measured
    drop is over it; ``ok`` otherwise."""
    over = max_drop is not None and accuracy.get("measured") and accuracy.get("within_budget") is False
    return STATUS_OVER_BUDGET if over else STATUS_OK


def cost_metrics(cost: dict[str, Any] | None) -> dict[str, Any]:
    if not cost:
        return {"latency_s": None, "energy_j": None}
    row = {"latency_s": cost["latency_s"], "energy_j": cost["energy_j"],
           "throughput_gops": cost.get("throughput_gops"), "tops_per_w": cost.get("tops_per_w")}
    for name, value in sorted(cost.get("speedup_vs", {}).items()):
        row[f"speedup_vs.{name}"] = _finite(value)
    for name, value in sorted(cost.get("energy_gain_vs", {}).items()):
        row[f"energy_gain_vs.{name}"] = _finite(value)
    return row


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def cost_columns(costs: dict[str, Any], input_macs: int) -> dict[str, list[Any]]:
    """``cost_metrics`` of N hardware points at once, from a target's ``cost_many`` arrays (``latency_s``,
    ``energy_j``, ``baselines`` {name: {``latency_s``, ``energy_j``}}): throughput counted on the input model's
    MACs and each baseline's ratio, as the report's ``count_input_ops`` / ``speedup_vs`` / ``energy_gain_vs``."""
    latency, energy = np.asarray(costs["latency_s"]), np.asarray(costs["energy_j"])
    ops, baselines = 2.0 * input_macs, costs["baselines"]
    with np.errstate(divide="ignore", invalid="ignore"):
        cols = {"latency_s": latency, "energy_j": energy,
                "throughput_gops": np.where(latency != 0, ops / latency / 1e9, 0.0),
                "tops_per_w": np.where(energy != 0, ops / energy / 1e12, 0.0)}
        for name in sorted(baselines):
            cols[f"speedup_vs.{name}"] = baselines[name]["latency_s"] / latency
        for name in sorted(baselines):
            cols[f"energy_gain_vs.{name}"] = baselines[name]["energy_j"] / energy
    return {k: finite_list(v) for k, v in cols.items()}


def finite_list(values: np.ndarray) -> list[float | None]:
    """Python floats, with None for every non-finite value (as ``cost_metrics`` gives a row)."""
    finite = np.isfinite(values)
    items = values.tolist()
    if finite.all():
        return items
    return [v if ok else None for v, ok in zip(items, finite.tolist(), strict=True)]
