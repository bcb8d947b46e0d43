"""The onnxruntime target's documented int8 pipeline (examples/onnxruntime_int8.toml) on a decomposed model:
shrink removes the dead channel, recompose gives dense convs, quantize gives int8 kernels, accuracy is
measured on the held-out split and the budget is enforced."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from pimc.compiler.annotations import get_node_annotation
from pimc.compiler.graph import attr
from pimc.compiler.loader import load_model
from pimc.compiler.passbase import PassContext, get_pass
from pimc.models import bundled_model_path
from pimc.runtime.ort_graph import op_counts, optimized_model

PIPELINE = Path(__file__).resolve().parents[2] / "examples" / "onnxruntime_int8.toml"


def _pimc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pimc", *args], capture_output=True, text=True)


def _kill_filter(model: onnx.ModelProto, node: onnx.NodeProto, channel: int) -> None:
    """Zero one output filter (weights and bias) of ``node``: a dead channel for shrink to remove."""
    inits = {i.name: i for i in model.graph.initializer}
    for name in node.input[1:]:
        array = numpy_helper.to_array(inits[name]).copy()
        array[channel] = 0
        inits[name].CopyFrom(numpy_helper.from_array(array, name))


@pytest.fixture(scope="module")
def decomposed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model decomposed at rank 5 (two-conv PENNI form), one filter of its first layer dead."""
    model = load_model(str(bundled_model_path()))
    model = get_pass("decompose")(rank=5, refit=False).run(model, PassContext()).model
    first = next(n for n in model.graph.node if get_node_annotation(n, "role") == "coefficient")
    _kill_filter(model, first, 0)
    path = tmp_path_factory.mktemp("stack") / "penni.onnx"
    onnx.save(model, str(path))
    return path


def _optimized_ops(path: Path) -> Counter:
    return op_counts(optimized_model(str(path)))


def test_pipeline_shrinks_recomposes_and_quantizes(decomposed: Path, tmp_path: Path) -> None:
    out, report_path = tmp_path / "out.onnx", tmp_path / "r.json"
    res = _pimc("compile", str(decomposed), "-t", "onnxruntime", "--pipeline", str(PIPELINE), "--data", "digits",
                "-o", str(out), "--report", str(report_path))
    assert res.returncode == 0, res.stderr
    report = json.loads(report_path.read_text())
    records = {p["name"]: p for p in report["passes"]}
    assert records["shrink"]["changed"] and records["shrink"]["params_after"] < records["shrink"]["params_before"]
    assert len(records["recompose"]["stats"]["recomposed"]) == 3 and not records["recompose"]["stats"]["kept"]
    assert records["quantize"]["stats"]["calibration_source"] == "digits"
    accuracy = report["accuracy"]
    assert accuracy["measured"] and accuracy["samples"] == 225 and accuracy["drop_points"] <= 1.0
    model = onnx.load(str(out))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 3
    assert all(attr(n, "group", 1) == 1 and get_node_annotation(n, "recomposed_from") for n in convs)
    assert all(get_node_annotation(n, "role") is None for n in model.graph.node)
    first_weight = next(n for n in model.graph.node if n.op_type == "DequantizeLinear"
                        and n.output[0] == convs[0].input[1]).input[0]
    dense = onnx.load(str(bundled_model_path())).graph
    assert numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == first_weight)).shape[0] == \
        numpy_helper.to_array(next(i for i in dense.initializer if i.name == dense.node[0].input[1])).shape[0] - 1
    ops = _optimized_ops(out)
    assert ops["QLinearConv"] == 3 and ops["Conv"] == 0 and ops["FusedConv"] == 0 and ops["QGemm"] == 1
    x = np.zeros((2, 1, 8, 8), np.float32)
    (logits,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert logits.shape == (2, 10) and np.isfinite(logits).all()


def test_pipeline_respects_the_accuracy_budget(decomposed: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    res = _pimc("compile", str(decomposed), "-t", "onnxruntime", "--pipeline", str(PIPELINE), "--data", "digits",
                "--set", "quantize.bits=2", "--max-accuracy-drop", "0.5", "-o", str(out))
    assert res.returncode != 0
    assert "accuracy budget exceeded" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()
