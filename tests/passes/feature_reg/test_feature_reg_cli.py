"""``pimc export feature-reg`` end to end on tiny runs (a few dozen digits images, one epoch each), and
pimc's own tooling (run, inspect, compile) on the multi-level file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from pimc.passes.feature_reg.config import LEVEL_INPUT
from pimc.passes.feature_reg.measure import level_metadata

BUNDLED = Path(__file__).resolve().parents[3] / "models" / "digits_cnn.onnx"
QUICK = ["--train-limit", "60", "--epochs", "2", "--reg-epochs", "1", "--frozen-epochs", "1", "--calibration", "40",
         "--no-progress", "--json"]


def pimc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pimc", *args], capture_output=True, text=True, cwd=cwd,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("frcli")
    result = pimc("export", "feature-reg", "--model", "digits_cnn", "--data", "digits", "-o", str(out / "r.onnx"),
                  "--dense-output", str(out / "d.onnx"), "--levels", "0.5,0.8,0.95", *QUICK)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), out


def test_summary_measures_every_level_on_the_test_split(zoo_run):
    summary, out = zoo_run
    assert summary["levels"] == [0.5, 0.8, 0.95]
    assert len(summary["test"]) == 3 and 0 <= summary["default_level"] < 3
    assert summary["ungated_convs_onnx"] and summary["gated_convs"]
    for row in summary["test"]:
        assert 0.0 <= row["accuracy"] <= 1.0
        assert set(row["zero_fraction"]) == set(summary["zero_fraction_dense"])
    gated = [k for k in summary["zero_fraction_dense"] if k not in summary["ungated_convs_onnx"]]
    means = [np.mean([row["zero_fraction"][k] for k in gated]) for row in summary["test"]]
    assert means == sorted(means) and means[-1] > means[0]
    assert summary["accuracy_gated"] == summary["test"][summary["default_level"]]["accuracy"]
    assert 0.0 <= summary["accuracy_dense"] <= 1.0
    assert level_metadata(out / "r.onnx")["default_level"] == summary["default_level"]
    assert level_metadata(out / "d.onnx") is None


def test_pimc_run_inspect_and_compile_accept_the_multi_level_file(zoo_run):
    _, out = zoo_run
    run = pimc("run", str(out / "r.onnx"), "--data", "digits")
    assert run.returncode == 0, run.stderr
    assert "accuracy" in run.stdout
    inspect = pimc("inspect", str(out / "r.onnx"), "--json")
    assert inspect.returncode == 0, inspect.stderr
    compiled = out / "c.onnx"
    comp = pimc("compile", str(out / "r.onnx"), "--target", "escalate", "--data", "digits", "-o", str(compiled),
                "--report", str(out / "rep.json"))
    assert comp.returncode == 0, comp.stderr
    model = onnx.load(str(compiled))
    assert LEVEL_INPUT in [i.name for i in model.graph.input]
    assert LEVEL_INPUT in [t.name for t in model.graph.initializer]
    report = json.loads((out / "rep.json").read_text())
    assert report["accuracy"]["output"] is not None


def test_compile_costs_the_level_it_is_given(zoo_run):
    """``--set activation-sparsity.level=K`` runs, measures and costs level K of the multi-level file."""
    _, out = zoo_run
    zeros = []
    for level in (0, 1):
        report = out / f"level{level}.json"
        comp = pimc("compile", str(out / "r.onnx"), "--target", "escalate", "--data", "digits", "--passes",
                    "fold-constants,eliminate-identity,fold-batchnorm,cleanup,activation-sparsity", "--set",
                    f"activation-sparsity.level={level}", "-o", str(out / f"level{level}.onnx"), "--report",
                    str(report), "--max-accuracy-drop", "100")
        assert comp.returncode == 0, comp.stderr
        model = onnx.load(str(out / f"level{level}.onnx"))
        assert int(onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == LEVEL_INPUT))) == level
        stats = next(p for p in json.loads(report.read_text())["passes"] if p["name"] == "activation-sparsity")
        zeros.append(sum(stats["stats"]["input_zero_fraction"].values()))
    assert zeros[1] > zeros[0]
    wrong = pimc("compile", str(BUNDLED), "--target", "escalate", "--data", "digits", "--set",
                 "activation-sparsity.level=1", "-o", str(out / "x.onnx"))
    assert wrong.returncode != 0 and "not a multi-level" in wrong.stderr


def test_an_onnx_model_keeps_its_io_names(tmp_path):
    source = onnx.load(str(BUNDLED))
    result = pimc("export", "feature-reg", "--model", str(BUNDLED), "--data", "digits", "-o", str(tmp_path / "g.onnx"),
                  "--levels", "0.6,0.9", *QUICK)
    assert result.returncode == 0, result.stderr
    model = onnx.load(str(tmp_path / "g.onnx"))
    assert [i.name for i in model.graph.input] == [source.graph.input[0].name, LEVEL_INPUT]
    assert [o.name for o in model.graph.output] == [o.name for o in source.graph.output]
    summary = json.loads(result.stdout)
    assert summary["accuracy_gated"] > 0.5  # a trained model fine-tuned, not a fresh one


@pytest.mark.parametrize("args, message", [
    (["--levels", "0.9,0.5"], "strictly increasing"),
    (["--levels", "0.5,1.5"], "zero fractions in [0, 1)"),
    (["--levels", "a,b"], "comma-separated"),
    (["--data", "random"], "cannot train on"),
    (["--model", "nope.onnx"], "nope.onnx"),
    (["--model", "no_such_model"], "no_such_model"),
    (["--val-fraction", "1.5"], "--val-fraction"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    base = {"--model": "digits_cnn", "--data": "digits"}
    rest = []
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag in base:
            base[flag] = value
        else:
            rest += [flag, value]
    out = tmp_path / "r.onnx"
    result = pimc("export", "feature-reg", *[x for kv in base.items() for x in kv], "-o", str(out), *rest,
                  "--train-limit", "20", "--epochs", "1", "--no-progress")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0] and "Traceback" not in result.stderr
    assert not out.exists()


def test_super_resolution_levels_are_scored_in_psnr(tmp_path):
    """On image targets the exporter trains with L1, scores every level in dB and keeps a symbolic image size."""
    out = tmp_path / "sr.onnx"
    result = pimc("export", "feature-reg", "--model", "espcn", "--data", "sr-samples:2", "-o", str(out),
                  "--levels", "0.5,0.8", "--epochs", "1", "--reg-epochs", "1", "--train-limit", "64",
                  "--batch-size", "16", "--calibration", "32", "--no-progress", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["metric"] == "psnr" and len(summary["test"]) == 2
    assert all(5.0 < row["accuracy"] < 60.0 for row in summary["test"])  # dB, not a fraction
    model = onnx.load(str(out))
    assert model.graph.output[0].name == "image"
    assert not model.graph.input[0].type.tensor_type.shape.dim[2].HasField("dim_value")
