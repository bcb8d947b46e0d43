"""The onnxruntime target times the input and the output model (interleaved, auto-ranged to a time budget)
when a pass changed more than the exact normalisations, and reports × faster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pimc.app.compile import CompileOptions, compile_model
from pimc.models import bundled_model_path


def test_onnxruntime_compile_reports_measured_latency(tmp_path: Path) -> None:
    _, report = compile_model(CompileOptions(str(bundled_model_path()), "onnxruntime", output=str(tmp_path / "o.onnx"),
                                             measure_latency=True))
    latency = report["latency"]
    assert latency["measured"] and latency["batches"] == [1, 64]
    assert all(latency["repeats"][f"b{b}"] >= 3 for b in (1, 64)) and "auto-ranged" in latency["method"]
    for b in (1, 64):
        assert latency[f"input_ms_b{b}"] > 0 and latency[f"output_ms_b{b}"] > 0
        ratio = latency[f"input_ms_b{b}"] / latency[f"output_ms_b{b}"]
        assert latency[f"speedup_b{b}"] == pytest.approx(ratio, rel=1e-2)
        assert latency[f"batch_b{b}"] == b


def test_only_normalising_passes_leave_latency_unmeasured_and_say_why(tmp_path: Path) -> None:
    _, report = compile_model(CompileOptions(str(bundled_model_path()), "onnxruntime", output=str(tmp_path / "o.onnx")))
    assert report["latency"]["measured"] is False and "only exact normalisations" in report["latency"]["note"]
    _, report = compile_model(CompileOptions(str(bundled_model_path()), "onnxruntime", output=str(tmp_path / "q.onnx"),
                                             passes="fold-batchnorm,quantize,cleanup"))
    assert report["latency"]["measured"] is True


def test_simulator_targets_do_not_time_onnxruntime(tmp_path: Path) -> None:
    _, report = compile_model(CompileOptions(str(bundled_model_path()), "cim", output=str(tmp_path / "o.onnx")))
    assert "latency" not in report


def test_terminal_and_json_show_it(tmp_path: Path) -> None:
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "pimc", "compile", str(bundled_model_path()), "-t", "onnxruntime",
                           "-o", str(out), "--report", str(rep), "--latency"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "onnxruntime latency (interleaved medians, repeats auto-ranged to a 2 s budget; repeats" in done.stdout
    assert "batch 1:" in done.stdout
    assert json.loads(rep.read_text())["latency"]["measured"] is True
