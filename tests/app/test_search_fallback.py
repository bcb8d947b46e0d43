"""A default pipeline whose searched model misses the budget on the held-out test samples writes the pipeline's
model with nothing chosen by the search, and says so; a forced setting still refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from pimc.app import compile as compile_module
from pimc.app.compile import CompileOptions, compile_model
from pimc.compiler.errors import PimcError
from pimc.models import bundled_model_path


def _missing_once(monkeypatch) -> list[int]:
    """The first accuracy measurement (the searched model's) reads 5 points lost; later ones are real."""
    real, calls = compile_module.measure_accuracy, []

    def measured(*args, **kwargs):
        calls.append(1)
        accuracy = real(*args, **kwargs)
        if len(calls) == 1 and accuracy.get("measured"):
            accuracy = {**accuracy, "drop_points": 5.0, "output": accuracy["input"] - 0.05}
        return accuracy

    monkeypatch.setattr(compile_module, "measure_accuracy", measured)
    return calls


def test_a_held_out_miss_of_the_default_pipeline_writes_the_exact_model(monkeypatch, tmp_path: Path) -> None:
    calls = _missing_once(monkeypatch)
    out = tmp_path / "o.onnx"
    _, report = compile_model(CompileOptions(input=str(bundled_model_path()), target="onnxruntime", data="digits",
                                             output=str(out), measure_latency=False))
    accuracy = report["accuracy"]
    assert len(calls) == 2 and accuracy["search_fallback"]["searched_drop_points"] == 5.0
    assert accuracy["drop_points"] == 0.0 and out.exists()
    assert any("nothing chosen by the budget search" in w for w in report["warnings"])
    record = next(r for r in report["passes"] if r["name"] == "channel-prune")
    assert not record["changed"] and "missed the budget" in record["stats"]["note"]


def test_a_forced_setting_that_misses_the_budget_still_refuses(monkeypatch, tmp_path: Path) -> None:
    _missing_once(monkeypatch)
    out = tmp_path / "o.onnx"
    with pytest.raises(PimcError, match="accuracy budget exceeded"):
        compile_model(CompileOptions(input=str(bundled_model_path()), target="onnxruntime", data="digits",
                                     output=str(out), sets=("channel-prune.ratio=0.25",), measure_latency=False))
    assert not out.exists()
