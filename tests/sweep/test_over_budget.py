"""A sweep records every compiled trial: a drop over the spec's ``max_accuracy_drop`` is the status
``over_budget`` with its accuracy, latency and energy kept (off the feasible front, hollow in the plot);
without ``max_accuracy_drop`` nothing is marked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pimc.sweep.results import write_results
from pimc.sweep.runner import PENALTY, objective_values
from pimc.sweep.spec import parse_spec
from pimc.sweep.trial import run_trial

MODEL = str(Path(__file__).resolve().parents[2] / "models" / "digits_cnn.onnx")


def rank_point(rank: int) -> dict:
    return {"model": MODEL, "target": "escalate", "axes": {"decompose.rank": rank, "hw.escalate.basis_rows": 8},
            "key": f"r{rank}", "index": 0}


def test_a_drop_over_the_spec_budget_is_over_budget_with_its_numbers():
    row = run_trial(rank_point(2), "digits", None, 1.0, 0)
    assert row["status"] == "over_budget" and row["error"] == ""
    assert row["drop_points"] > 1.0 and row["accuracy"] is not None
    assert row["latency_s"] > 0 and row["energy_j"] > 0 and row["speedup_vs.dense"] > 0


def test_without_max_accuracy_drop_nothing_is_over_budget():
    row = run_trial(rank_point(2), "digits", None, None, 0)
    assert row["drop_points"] > 1.0  # over compile's own default budget, which the sweep does not apply
    assert row["status"] == "ok" and row["accuracy"] is not None and row["energy_j"] > 0


def rows_with(statuses: list[str]) -> list[dict]:
    values = [(1.0, 0.70), (2.0, 0.90), (3.0, 0.95), (0.5, 0.60)]
    return [{"key": str(i), "trial": i, "model": MODEL, "target": "escalate", "decompose.rank": i + 1,
             "status": status, "error": "", "accuracy": acc, "energy_j": energy, "latency_s": energy / 10}
            for i, (status, (energy, acc)) in enumerate(zip(statuses, values, strict=True))]


def test_over_budget_rows_are_off_the_feasible_front_and_in_the_plot(tmp_path):
    spec = parse_spec({"model": MODEL, "targets": ["escalate"], "data": "digits", "max_accuracy_drop": 5.0,
                       "objectives": ["energy_j", "accuracy"], "axes": {"decompose.rank": [1, 2, 3, 4]}})
    rows = rows_with(["ok", "ok", "over_budget", "over_budget"])
    files = write_results(rows, spec, tmp_path)
    frame = pd.read_parquet(files["parquet"])
    assert list(frame["pareto"]) == [True, True, False, False]
    assert list(frame["status"]) == ["ok", "ok", "over_budget", "over_budget"]
    assert frame["accuracy"].notna().all() and frame["energy_j"].notna().all()
    assert set(pd.read_csv(files["pareto_csv"])["trial"]) == {0, 1}
    assert Path(files["pareto_png"]).stat().st_size > 0


def test_objectives_of_an_over_budget_row():
    row = rows_with(["over_budget"] * 4)[2]
    assert objective_values(row, ["energy_j", "accuracy"]) == {"obj_energy_j": 3.0, "obj_accuracy": 0.95}
    assert objective_values(row, ["energy_j", "latency_s"]) == {"obj_energy_j": PENALTY, "obj_latency_s": PENALTY}
    assert objective_values({**row, "status": "ok"}, ["energy_j"]) == {"obj_energy_j": 3.0}


@pytest.mark.slow  # Ray and Tune start in a new process, four compiles with data (~20 s on two cores)
def test_rank_by_hardware_sweep_with_data_gives_four_measured_rows(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(f'model = "{MODEL}"\ntargets = ["escalate"]\ndata = "digits"\n'
                    '[axes]\n"decompose.rank" = [2, 3]\n"hw.escalate.basis_rows" = [4, 16]\n')
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "pimc", "sweep", str(spec), "-o", str(out), "--workers", "2",
                           "--no-progress"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    frame = pd.read_parquet(out / "results.parquet")
    assert len(frame) == 4 and list(frame["status"]) == ["ok"] * 4, list(frame["error"])
    for column in ("accuracy", "latency_s", "energy_j"):
        assert frame[column].notna().all() and (frame[column] > 0).all(), column
    assert frame.groupby("decompose.rank")["accuracy"].nunique().eq(1).all()  # hardware leaves accuracy alone
    assert frame["accuracy"].nunique() == 2
    assert (out / "pareto.png").stat().st_size > 0
    assert "4 trials (4 ok, 0 failed)" in done.stdout


@pytest.mark.parametrize("drop, expected", [(None, "ok"), (50.0, "ok"), (0.0, "over_budget")])
def test_budget_status(drop, expected):
    from pimc.sweep.trial import budget_status

    accuracy = {"measured": True, "drop_points": 3.0, "max_drop_points": 1.0 if drop is None else drop,
                "within_budget": drop is not None and 3.0 <= drop}
    assert budget_status(accuracy, drop) == expected
    assert budget_status({"measured": False}, drop) == "ok"
