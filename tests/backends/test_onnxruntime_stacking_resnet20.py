"""Slow: PENNI-trained ResNet-20 (digits, short schedule) → shrink + recompose + int8 on onnxruntime.

Asserts what the stacked pipeline reached here (benchmarks/penni_int8_resnet20.py has the full run and the
numbers in the README), not a 4× goal, which it does not reach: every conv of the output runs as an
onnxruntime integer kernel, int8 costs at most 1 point against the PENNI fp32 model on the held-out split,
and the stacked model is faster than the dense fp32 model at batch 64 (interleaved medians; a ratio, no
wall-clock limit)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pimc.runtime.bench import compare_models
from pimc.runtime.ort_graph import op_counts, optimized_model

PIPELINE = Path(__file__).resolve().parents[2] / "examples" / "onnxruntime_int8.toml"


def _pimc(*args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "pimc", *args], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res


@pytest.mark.slow
def test_penni_resnet20_stacked_with_int8(tmp_path: Path) -> None:
    penni, dense = tmp_path / "penni.onnx", tmp_path / "dense.onnx"
    _pimc("export", "decompose", "--model", "resnet20", "--data", "digits", "-o", str(penni), "--dense-output",
          str(dense), "--threads", "1", "--pretrain-epochs", "3", "--epochs", "2", "--prune-rounds", "1",
          "--finetune-epochs", "1", "--no-progress")
    fp32, int8, report = tmp_path / "p32.onnx", tmp_path / "p8.onnx", tmp_path / "r.json"
    _pimc("compile", str(penni), "-t", "onnxruntime", "--data", "digits", "-o", str(fp32))
    _pimc("compile", str(penni), "-t", "onnxruntime", "--data", "digits", "--pipeline", str(PIPELINE),
          "-o", str(int8), "--report", str(report))
    accuracy = json.loads(report.read_text())["accuracy"]
    assert accuracy["measured"] and accuracy["drop_points"] <= 1.0
    ops = op_counts(optimized_model(str(int8), "all"))
    assert ops["QLinearConv"] > 0 and ops["Conv"] == 0 and ops["FusedConv"] == 0 and ops["QLinearAdd"] > 0
    rows = compare_models([dense, fp32, int8], "digits", (64,), repeats=10, threads=1)
    assert rows[0]["latency_ms_b64"] / rows[2]["latency_ms_b64"] > 1.0
