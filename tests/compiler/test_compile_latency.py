"""The onnxruntime target times the input and the output model (interleaved) and reports × faster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pimc.compiler.compile import CompileOptions, compile_model
from pimc.models import bundled_model_path


def test_onnxruntime_compile_reports_measured_latency(tmp_path: Path) -> None:
    _, report = compile_model(CompileOptions(str(bundled_model_path()), "onnxruntime", output=str(tmp_path / "o.onnx")))
    latency = report["latency"]
    assert latency["measured"] and latency["batches"] == [1, 64] and latency["repeats"] > 0
    for b in (1, 64):
        assert latency[f"input_ms_b{b}"] > 0 and latency[f"output_ms_b{b}"] > 0
        ratio = latency[f"input_ms_b{b}"] / latency[f"output_ms_b{b}"]
        assert latency[f"speedup_b{b}"] == pytest.approx(ratio, rel=1e-2)
        assert latency[f"batch_b{b}"] == b


def test_simulator_targets_do_not_time_onnxruntime(tmp_path: Path) -> None:
    _, report = compile_model(CompileOptions(str(bundled_model_path()), "cim", output=str(tmp_path / "o.onnx")))
    assert "latency" not in report


def test_terminal_and_json_show_it(tmp_path: Path) -> None:
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "pimc", "compile", str(bundled_model_path()), "-t", "onnxruntime",
                           "-o", str(out), "--report", str(rep)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "onnxruntime latency (median of 15 interleaved runs, this machine): batch 1:" in done.stdout
    assert json.loads(rep.read_text())["latency"]["measured"] is True
