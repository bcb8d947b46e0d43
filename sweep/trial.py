"""One sweep trial: a ``pimc compile`` with the trial's ``--set`` options and hardware, flattened to a row.

A trial compiles, costs and (with labelled data) evaluates exactly as ``pimc compile`` does:
``compile_model(CompileOptions(...))`` with the pass axes as ``sets`` and the hardware axes written to a
temporary ``--hw`` file. Any error (a ``PimcError`` such as the accuracy-budget refusal, or an option for a
pass outside the target's pipeline) becomes the row's ``status = "failed"`` and ``error``.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from ..compiler.errors import PimcError

STATUS_OK, STATUS_FAILED, STATUS_CRASHED = "ok", "failed", "crashed"


def trial_key(model_digest: str, target: str, axes: dict[str, Any], extra: str = "") -> str:
    """A stable hash of the model's content, the target and the axis values (the journal's key)."""
    text = json.dumps({"model": model_digest, "target": target, "axes": axes, "extra": extra},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
                    eval_data: str | None, max_drop: float | None, seed: int, hw_path: str | None):
    from ..compiler.compile import CompileOptions

    sets, _ = split_axes(axes)
    return CompileOptions(input=model_path, target=target, write_output=False, data=data, eval_data=eval_data,
                          sets=sets, hw=hw_path, seed=seed, max_accuracy_drop=max_drop)


def run_trial(point: dict[str, Any], data: str | None, eval_data: str | None, max_drop: float | None,
              seed: int, model_bytes: bytes | None = None) -> dict[str, Any]:
    """Compile one point; never raises for a failing compile (the row says ``failed``)."""
    from ..compiler.compile import compile_model

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
                                   seed, hw_path)
            _, report = compile_model(opts)
            row.update(report_metrics(report))
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


def report_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The row fields of one compile report: accuracy, size, cost and every baseline ratio."""
    model = report.get("model", {})
    acc = report.get("accuracy") or {}
    row: dict[str, Any] = {
        "accuracy": acc.get("output") if acc.get("measured") else None,
        "accuracy_input": acc.get("input") if acc.get("measured") else None,
        "drop_points": acc.get("drop_points") if acc.get("measured") else None,
        "params": model.get("params"), "nonzero_params": model.get("nonzero_params"),
        "macs": model.get("macs"), "effective_macs": model.get("effective_macs"),
    }
    row.update(cost_metrics(report.get("cost")))
    return row


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
