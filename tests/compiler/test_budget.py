"""The accuracy budget: the bisection over candidates, and compile's measured accuracy and refusal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from pimc.compiler.budget import AccuracyBudget, cheapest_within
from pimc.compiler.compile import CompileOptions, compile_model
from pimc.models import bundled_model_path


class _ScriptedBudget(AccuracyBudget):
    """Accuracy read from the model's doc string, so the search can be checked without onnxruntime."""

    def accuracy(self, model: onnx.ModelProto) -> float:
        self.evaluations += 1
        return float(model.doc_string)


def _model(accuracy: float) -> onnx.ModelProto:
    return onnx.ModelProto(doc_string=str(accuracy))


def _budget(points: float) -> _ScriptedBudget:
    budget = _ScriptedBudget(np.zeros((1, 1)), np.zeros(1, dtype=np.int64), max_drop_points=points, safety=1.0)
    budget.reference_accuracy = 0.99
    return budget


def test_bisection_finds_the_cheapest_candidate_within_the_allowance():
    accuracies = [0.80, 0.90, 0.975, 0.982, 0.985, 0.99]  # cheapest first, error falling as cost rises
    budget = _budget(1.0)
    choice = cheapest_within(accuracies, _model, budget, allowance_points=1.0)
    assert choice is not None and choice.index == 3
    assert budget.evaluations <= 4


def test_no_candidate_within_the_allowance_costs_one_evaluation():
    budget = _budget(0.1)
    assert cheapest_within([0.5, 0.6, 0.7], _model, budget, allowance_points=0.1) is None
    assert budget.evaluations == 1


def test_allowance_is_released_with_progress():
    budget = _budget(2.0)
    budget.safety = 0.5
    assert budget.allowance(0.0) == 0.0
    assert budget.allowance(0.5) == pytest.approx(0.5)
    assert budget.allowance(1.0) == pytest.approx(1.0)


def test_default_escalate_compile_measures_accuracy_and_stays_within_budget(tmp_path: Path):
    out = tmp_path / "out.onnx"
    _, report = compile_model(CompileOptions(input=str(bundled_model_path()), target="escalate", data="digits",
                                             output=str(out)))
    accuracy = report["accuracy"]
    assert accuracy["measured"] and accuracy["samples"] == 450
    assert 0.95 < accuracy["input"] <= 1.0
    assert accuracy["drop_points"] <= 1.0 + 1e-9
    assert accuracy["drop_points"] == pytest.approx(100 * (accuracy["input"] - accuracy["output"]), abs=1e-3)
    decompose = next(p for p in report["passes"] if p["name"] == "decompose")
    chosen = decompose["stats"]["decomposed"]
    assert chosen, "the budget should allow some decomposition of the bundled model"
    assert all(c["refitted"] and c["macs_after"] < c["macs_before"] for c in chosen)
    assert report["model"]["macs"] < report["model"]["macs_before"]
    assert report["model"]["params"] <= report["model"]["params_before"]


def test_without_labels_nothing_lossy_happens_and_the_report_says_so(tmp_path: Path):
    _, report = compile_model(CompileOptions(input=str(bundled_model_path()), target="escalate",
                                             output=str(tmp_path / "o.onnx")))
    assert report["accuracy"]["measured"] is False
    assert "not measured" in report["accuracy"]["note"]
    decompose = next(p for p in report["passes"] if p["name"] == "decompose")
    assert decompose["stats"]["decomposed"] == []
    assert report["model"]["params"] == report["model"]["params_before"]


def test_npz_data_is_split_so_the_test_samples_never_calibrate(tmp_path: Path):
    from pimc.runtime.datasets import load_dataset

    digits = load_dataset("digits", (1, 8, 8), split="test")
    np.savez(tmp_path / "d.npz", x=digits.x, y=digits.y)
    _, report = compile_model(CompileOptions(input=str(bundled_model_path()), target="onnxruntime",
                                             data=f"npz:{tmp_path / 'd.npz'}", output=str(tmp_path / "o.onnx")))
    assert report["accuracy"]["samples"] == round(0.2 * len(digits))


def test_forced_destructive_setting_under_a_small_budget_fails_in_one_line(tmp_path: Path):
    out, rep = tmp_path / "out.onnx", tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pimc", "compile", str(bundled_model_path()), "--target", "escalate",
         "--data", "digits", "--set", "decompose.rank=1", "--set", "decompose.sparsity=0.9",
         "--max-accuracy-drop", "0.5", "-o", str(out), "--report", str(rep)],
        capture_output=True, text=True,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "accuracy budget exceeded" in lines[0] and "0.5" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not rep.exists()
    assert list(tmp_path.iterdir()) == []


def test_json_report_carries_the_accuracy_keys(tmp_path: Path):
    rep = tmp_path / "r.json"
    compile_model(CompileOptions(input=str(bundled_model_path()), target="onnxruntime", data="digits",
                                 output=str(tmp_path / "o.onnx"), report=str(rep)))
    accuracy = json.loads(rep.read_text())["accuracy"]
    assert {"input", "output", "drop_points", "samples", "data"} <= set(accuracy)
