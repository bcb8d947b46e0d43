"""Post-training compile of a user's own CNN (slow): a CNN trained on real MNIST, compiled post-training with
every target's default pipeline; see ``benchmarks/honest_compile_mnist.py``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "honest_compile_mnist.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("honest_compile_mnist", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_user_cnn_on_mnist_compiles_within_budget_and_beats_the_dense_accelerator(tmp_path: Path):
    rows = {r["target"]: r for r in _benchmark().main(["--out", str(tmp_path), "--epochs", "6"])}
    assert all("error" not in r for r in rows.values()), rows
    escalate = rows["escalate"]
    assert escalate["input_acc"] >= 0.97
    assert escalate["drop_points"] <= 1.0
    assert escalate["speedup_vs"]["dense"] >= 1.5
    assert escalate["energy_gain_vs"]["dense"] >= 1.2
    assert rows["cmp-pim"]["energy_gain_vs"]["cnn"] >= 1.0
    for row in rows.values():
        assert row["drop_points"] <= 1.0
        before, after = (int(v) for v in row["params"].split(" -> "))
        assert after <= before
        before, after = (int(v) for v in row["macs"].split(" -> "))
        assert after <= before
