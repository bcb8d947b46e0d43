"""A 4-trial sweep on a local Ray (2 CPUs): one row per trial, results files, a resume that runs nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pimc.sweep.runner import SweepOptions, run_sweep
from pimc.sweep.spec import parse_spec

MODEL = str(Path(__file__).resolve().parents[2] / "models" / "digits_cnn.onnx")


@pytest.fixture(scope="module")
def local_ray():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_four_trial_grid_and_resume(local_ray, tmp_path):
    spec = parse_spec({"model": MODEL, "targets": ["escalate"], "objectives": ["energy_j", "latency_s"],
                       "axes": {"decompose.rank": [3, 5], "hw.escalate.basis_rows": [8, 16]}})
    opts = SweepOptions(tmp_path / "out", workers=2, progress=False)
    result = run_sweep(spec, opts)
    assert result.computed == 4 and len(result.rows) == 4
    assert all(r["status"] == "ok" for r in result.rows), [r["error"] for r in result.rows]
    assert [r["trial"] for r in result.rows] == [0, 1, 2, 3]
    for name in ("results.csv", "results.parquet", "pareto.csv", "pareto.png", "journal.jsonl"):
        assert (tmp_path / "out" / name).is_file()
    import pandas as pd

    frame = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert list(frame["decompose.rank"].astype(int)) == [3, 3, 5, 5]
    again = run_sweep(spec, SweepOptions(tmp_path / "out", workers=2, resume=True, progress=False))
    assert again.computed == 0 and again.skipped == 4
    assert [r["energy_j"] for r in again.rows] == [r["energy_j"] for r in result.rows]
