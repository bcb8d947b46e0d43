"""The layer-wise search: the order of allocations, the damage law, and what a compile reports of it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pimc.app.compile import CompileOptions, compile_model
from pimc.compiler.layerwise import (
    NO_BUDGET,
    Candidate,
    Site,
    _lambda_path,
    _Layer,
    _Option,
    _power_law,
    _saving,
)
from pimc.models import bundled_model_path


def _layer(name: str, options: list[tuple[float, float]]) -> _Layer:
    return _Layer(Site(name, "x", 1.0), [_Option(Candidate(0.0, lambda m: None), s, None, k) for s, k in options])


def test_allocations_run_from_nothing_to_everything_with_growing_saving():
    layers = [_layer("a", [(0.3, 0.01), (0.2, 0.001)]), _layer("b", [(0.5, 0.5), (0.1, 1e-4)]),
              _layer("c", [(0.05, 0.2)])]
    path = _lambda_path(layers)
    assert path[0] == (None, None, None) and path[-1] == (0, 0, 0)
    savings = [_saving(layers, allocation) for allocation in path]
    assert savings == sorted(savings) and len(set(path)) == len(path)


def test_power_law_passes_through_both_probes():
    a, b = _power_law((0.1, 0.004), (0.02, 0.00016))
    assert b == pytest.approx(2.0)
    assert a * 0.1**b == pytest.approx(0.004) and a * 0.02**b == pytest.approx(0.00016)
    assert _power_law((0.1, 1.0), (0.1, 1.0))[1] == 2.0  # coinciding errors: the quadratic default


def test_a_searched_compile_reports_what_steered_and_how(tmp_path: Path):
    _, report = compile_model(CompileOptions(input=str(bundled_model_path()), target="escalate", data="digits",
                                             output=str(tmp_path / "o.onnx")))
    accuracy = report["accuracy"]
    steering = accuracy["steering"]
    assert steering["steering_samples"] + accuracy["samples"] == 450 and accuracy["calibration_samples"] == 256
    search = accuracy["search"][0]
    assert search["pass"] == "decompose" and search["trace"] and search["final"]["margin_points"] >= 0
    final = search["final"]
    assert final["drop_points"] + final["margin_points"] <= 1.0 + 1e-9
    timings = report["timings"]
    assert timings["model_evaluations"] == steering["evaluations"] > 0
    assert {"load_s", "passes_s", "accuracy_s", "total_s"} <= set(timings)


def test_a_lossy_pass_without_a_budget_returns_at_once_with_one_warning(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "pimc", "compile", str(bundled_model_path()), "-t", "escalate",
                           "--passes", "pattern-prune", "-o", str(tmp_path / "o.onnx")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "pattern-prune changed nothing" in line]
    assert len(lines) == 1 and "no accuracy budget" in lines[0]
    assert NO_BUDGET.split(":")[0] in done.stdout.replace("\n", " ")
