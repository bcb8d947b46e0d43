"""One trial = one compile (no Ray): failures become rows; the fast path equals the full compile."""

from __future__ import annotations

from pathlib import Path

import pytest

from pimc.sweep.fastpath import compile_group, cost_points, to_rows
from pimc.sweep.results import pareto_front
from pimc.sweep.trial import run_trial

MODEL = str(Path(__file__).resolve().parents[2] / "models" / "digits_cnn.onnx")


def point(target, **axes):
    return {"model": MODEL, "target": target, "axes": axes, "key": "k", "index": 0}


def test_option_of_a_pass_outside_the_pipeline_is_a_failed_row():
    row = run_trial(point("cim", **{"decompose.rank": 3}), None, None, None, 0)
    assert row["status"] == "failed" and "not in the pipeline" in row["error"]


def test_trial_row_has_cost_and_baseline_ratios():
    row = run_trial(point("escalate", **{"decompose.rank": 5, "hw.escalate.basis_rows": 16}), None, None, None, 0)
    assert row["status"] == "ok", row["error"]
    assert row["energy_j"] > 0 and row["latency_s"] > 0 and row["accuracy"] is None
    assert row["speedup_vs.dense"] > 0 and row["energy_gain_vs.sparse"] > 0
    assert row["decompose.rank"] == 5 and row["hw.escalate.basis_rows"] == 16


@pytest.mark.parametrize("target, param, values", [("cim", "rows", [32, 128]), ("escalate", "dram_gbps", [6.4, 51.2])])
def test_fast_path_equals_a_full_compile(target, param, values):
    points = [point(target, **{f"hw.{target}.{param}": v}) for v in values]
    group = compile_group(points[0], None, None, None, 0, MODEL)
    fast = to_rows(cost_points(group, points))
    for p, row in zip(points, fast, strict=True):
        full = run_trial(p, None, None, None, 0)
        for name in ("latency_s", "energy_j", "params", "macs", "speedup_vs.input" if target == "cim"
                     else "speedup_vs.dense"):
            assert row[name] == pytest.approx(full[name], rel=1e-12), name
    assert fast[0]["energy_j"] != fast[1]["energy_j"] or fast[0]["latency_s"] != fast[1]["latency_s"]


def test_pareto_front():
    rows = [{"status": "ok", "energy_j": e, "accuracy": a} for e, a in [(1, 0.9), (2, 0.95), (3, 0.94), (1, 0.8)]]
    rows.append({"status": "failed", "energy_j": 0.1, "accuracy": 1.0})
    assert pareto_front(rows, ["energy_j", "accuracy"]) == [0, 1]
