"""The README's main job: `pimc demo` compiles the bundled model for every target under the accuracy budget,
and its compressed twins against the dense model, and reports accuracy before/after and the gains."""

from __future__ import annotations

import json

from rich.console import Console

from pimc.app.demo import render_accuracy, run_demo
from pimc.compiler.target import all_targets
from pimc.models import bundled_model_path


def test_demo_compiles_for_every_target_and_reports_accuracy(tmp_path):
    out = open(tmp_path / "out.txt", "w")
    rows = run_demo(tmp_path, bundled_model_path(), Console(file=out, width=200))
    render_accuracy(rows, Console(file=out, width=200))
    out.close()
    by_target = {r["target"]: r for r in rows if r["kind"] == "post-training"}
    twins = {r["target"]: r for r in rows if r["kind"] != "post-training"}
    assert set(by_target) == set(twins) == set(all_targets())
    for name, row in by_target.items():
        assert row["input"] >= 0.95 and row["samples"] == 225  # the other half of the test split steered
        assert row["drop"] <= 1.0 + 1e-9
        report = json.loads((tmp_path / f"digits_cnn.{name}.json").read_text())
        assert report["target"] == name and report["verify"] is not None
        assert report["model"]["params"] <= report["model"]["params_before"]
        assert report["model"]["macs"] <= report["model"]["macs_before"]
        if name != "onnxruntime":
            assert row["baseline"] is not None and row["speedup"] > 0 and row["energy_gain"] > 0
    assert by_target["onnxruntime"]["accuracy"] == by_target["onnxruntime"]["input"]
    assert by_target["escalate"]["speedup"] > 1 and by_target["escalate"]["energy_gain"] > 1
    for name, row in twins.items():  # measured against the dense bundled model, on the same test images
        assert row["input"] == by_target[name]["input"] and row["samples"] == 225
        assert row["drop"] <= 1.0 and "dense model" in row["baseline"] and row["speedup"] > 0
    assert twins["escalate"]["energy_gain"] > 1 and twins["cim"]["speedup"] > 1
    text = (tmp_path / "out.txt").read_text()
    assert "accuracy in → out" in text and "energy gain" in text
