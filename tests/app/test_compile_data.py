"""Which images calibrate, steer and test a compile, and what the report says of them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from pimc.models import bundled_model_path
from pimc.runtime.datasets import load_dataset


def _npz(path: Path, split: str, count: int) -> str:
    data = load_dataset("digits", (1, 8, 8), split=split)
    np.savez(path, x=data.x[:count], y=data.y[:count])
    return f"npz:{path}"


def _compile(tmp_path: Path, *args: str) -> dict:
    report = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "pimc", "compile", str(bundled_model_path()), "-t", "escalate",
                           "-o", str(tmp_path / "o.onnx"), "--report", str(report), *args],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return {"report": json.loads(report.read_text()), "stdout": done.stdout}


def test_val_data_steers_and_the_whole_held_out_set_tests(tmp_path: Path):
    out = _compile(tmp_path, "--data", "digits", "--val-data", _npz(tmp_path / "v.npz", "test", 200))
    accuracy = out["report"]["accuracy"]
    assert accuracy["samples"] == 450 and accuracy["steering"]["steering_samples"] == 200
    assert "--val-data" in accuracy["steering"]["steering_source"]
    assert "200 steered" in out["stdout"] and "450 tested" in out["stdout"]


def test_with_eval_data_every_labelled_sample_of_the_npz_calibrates_or_validates(tmp_path: Path):
    calib = _npz(tmp_path / "c.npz", "train", 600)
    out = _compile(tmp_path, "--data", calib, "--eval-data", "digits")
    accuracy = out["report"]["accuracy"]
    assert "calibration 256 + validation 344" in accuracy["data"]
    assert accuracy["samples"] + accuracy["steering"]["steering_samples"] == 450
