"""The README's main job: `pimc demo` compiles the bundled model for every target and measures accuracy."""

from __future__ import annotations

import json

from rich.console import Console

from pimc.compiler.demo import run_demo
from pimc.compiler.target import all_targets
from pimc.models import bundled_model_path


def test_demo_compiles_for_every_target_and_reports_accuracy(tmp_path):
    rows = run_demo(tmp_path, bundled_model_path(), Console(file=open(tmp_path / "out.txt", "w")))
    by_target = {r["target"]: r for r in rows}
    assert set(by_target) == {"-", *all_targets()}
    assert by_target["-"]["accuracy"] >= 0.95
    assert by_target["onnxruntime"]["accuracy"] == by_target["-"]["accuracy"]
    assert by_target["cim"]["accuracy"] >= by_target["-"]["accuracy"] - 0.01
    for name in all_targets():
        report = json.loads((tmp_path / f"digits_cnn.{name}.json").read_text())
        assert report["target"] == name
        assert report["verify"] is not None
        if name != "onnxruntime":
            assert report["cost"]["energy_j"] > 0 and report["cost"]["latency_s"] > 0
