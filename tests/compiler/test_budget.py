"""The accuracy budget: the bisection over candidates, and compile's measured accuracy and refusal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from pimc.app.compile import CompileOptions, compile_model
from pimc.compiler.budget import AccuracyBudget, log_softmax, logit_change, mean_kl
from pimc.models import bundled_model_path


class _ScriptedBudget(AccuracyBudget):
    """Logits read from a table keyed by the model's doc string, so the signals are checked without onnxruntime."""

    table: dict[str, np.ndarray] = {}

    def logits(self, model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
        self.evaluations += 1
        return self.table[model.doc_string][: len(x)]


def _budget(reference: np.ndarray, labels: np.ndarray, test_samples: int = 0) -> _ScriptedBudget:
    budget = _ScriptedBudget(np.zeros((len(labels), 1), np.float32), labels, max_drop_points=1.0,
                             test_samples=test_samples)
    budget.table = {"reference": reference}
    budget.set_reference(onnx.ModelProto(doc_string="reference"))
    return budget


def _onehot(classes: np.ndarray, scale: float = 5.0) -> np.ndarray:
    return scale * np.eye(3)[classes]


def test_drop_and_its_standard_error_are_paired():
    labels = np.array([0, 1, 2, 0] * 25)
    budget = _budget(_onehot(labels), labels, test_samples=100)
    wrong = labels.copy()
    wrong[:4] = (labels[:4] + 1) % 3  # four images flip from right to wrong
    budget.table["candidate"] = _onehot(wrong)
    m = budget.measure(onnx.ModelProto(doc_string="candidate"))
    d = np.r_[np.ones(4), np.zeros(96)]
    assert m.drop_points == pytest.approx(4.0) and m.flip_rate == pytest.approx(0.04)
    assert m.se_points == pytest.approx(100 * d.std() / 10)
    rate = (4 + 0.5) / 101  # the flip rate with Jeffreys' half flip
    assert m.margin_points == pytest.approx(budget.z * 100 * np.sqrt(rate / 100 + rate / 100))
    assert not budget.fits(m)


def test_an_unchanged_model_fits_with_no_margin():
    labels = np.arange(30) % 3
    budget = _budget(_onehot(labels), labels, test_samples=30)
    budget.table["same"] = _onehot(labels)
    m = budget.measure(onnx.ModelProto(doc_string="same"))
    assert m.drop_points == 0 and m.margin_points == 0 and m.kl == pytest.approx(0) and budget.fits(m)


def test_a_changed_model_without_flips_keeps_a_margin_on_few_images():
    labels = np.arange(30) % 3
    budget = _budget(_onehot(labels), labels, test_samples=30)
    budget.table["nudged"] = _onehot(labels) * 0.9  # outputs changed, no prediction flipped
    m = budget.measure(onnx.ModelProto(doc_string="nudged"))
    rate = 0.5 / 31
    assert m.flip_rate == 0 and m.margin_points == pytest.approx(budget.z * 100 * np.sqrt(2 * rate / 30))
    assert not budget.fits(m)  # on 30 + 30 images one flip is 3.3 points: a 1-point budget cannot vouch for it


def test_logit_change_keeps_growing_where_top1_and_kl_saturate():
    """Confident logits moved a lot: the KL of the softmax and top-1 barely see it, the centred logits do."""
    reference = np.array([[40.0, 0.0, 0.0]] * 8)
    moved = np.array([[30.0, 5.0, 0.0]] * 8)
    assert mean_kl(reference, moved) < 1e-9
    assert logit_change(reference, moved) > 0.05
    assert logit_change(reference, reference) == 0.0


def test_log_softmax_takes_probabilities_as_they_are():
    probs = np.array([[0.7, 0.2, 0.1]])
    assert np.allclose(np.exp(log_softmax(probs)), probs)
    assert np.allclose(np.exp(log_softmax(np.log(probs) + 3.0)), probs)


def test_default_escalate_compile_measures_accuracy_and_stays_within_budget(tmp_path: Path):
    out = tmp_path / "out.onnx"
    _, report = compile_model(CompileOptions(input=str(bundled_model_path()), target="escalate", data="digits",
                                             output=str(out)))
    accuracy = report["accuracy"]
    assert accuracy["measured"] and accuracy["samples"] == 225  # the other half of the test split steered
    assert accuracy["steering"]["steering_samples"] == 225
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
    accuracy = report["accuracy"]
    held_out = round(0.2 * len(digits))  # the file's fixed test part: half steers, half tests
    assert accuracy["samples"] + accuracy["steering"]["steering_samples"] == held_out
    assert accuracy["samples"] == held_out // 2


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
