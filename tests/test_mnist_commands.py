"""``--data mnist`` wherever ``digits`` works: run, bench, compile, models train, an exporter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pimc.cli.main import main
from pimc.models import bundled_model_path


def test_run_and_bench_on_mnist(capsys) -> None:
    model = str(bundled_model_path())
    assert main(["run", model, "--data", "mnist", "--repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 1000 and result["data"] == "mnist" and 0 <= result["accuracy"] <= 1
    assert main(["bench", model, model, "--data", "mnist", "--batches", "8", "--repeats", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[1]["top1_agreement"] == 1.0


def test_compile_calibrates_on_mnist(tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.onnx"
    code = main(["compile", str(bundled_model_path()), "--target", "cim", "--data", "mnist", "-o", str(out), "--json"])
    assert code == 0 and out.is_file()
    report = json.loads(capsys.readouterr().out)
    assert any(p["name"] == "quantize" and p["changed"] for p in report["passes"])


def test_models_train_on_mnist(tmp_path: Path, capsys, single_torch_thread) -> None:
    out = tmp_path / "t.onnx"
    assert main(["models", "train", "digits_cnn", "--data", "mnist", "--epochs", "1", "-o", str(out)]) == 0
    assert "on 1000 samples" in capsys.readouterr().out


@pytest.mark.slow
def test_export_quantize_on_mnist(tmp_path: Path, capsys, single_torch_thread) -> None:
    code = main(["export", "quantize", "--model", "digits_cnn", "--data", "mnist", "--epochs", "1",
                 "--quant-epochs", "1", "-o", str(tmp_path / "q.onnx"), "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["onnx_accuracy"] > 0.1
