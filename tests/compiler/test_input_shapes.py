"""``--input-shape``: fixing symbolic dims at load, and simulators refusing symbolic spatial dims."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pimc.app.compile import CompileOptions, compile_model
from pimc.cli.main import main
from pimc.compiler.errors import PimcError
from pimc.compiler.graph import value_shapes
from pimc.compiler.input_shapes import fix_input_shapes, parse_input_shape
from pimc.compiler.loader import load_model


def _fcn(path: Path, dims: list) -> Path:
    """Conv → Relu → Conv on an input of ``dims`` (symbols allowed)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="c2", pads=[1, 1, 1, 1])]
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w1", (4, 3, 3, 3)), ("w2", (2, 4, 3, 3)))]
    graph = helper.make_graph(nodes, "fcn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_parse_input_shape():
    assert parse_input_shape("x=1x3x224x224") == ("x", [1, 3, 224, 224])
    assert parse_input_shape("a=b=2X4") == ("a=b", [2, 4])
    for bad in ("x", "x=", "=1x2", "x=1xhx2", "x=1x0"):
        with pytest.raises(PimcError, match="--input-shape"):
            parse_input_shape(bad)


def test_fix_input_shapes_writes_dims_and_reinfers(tmp_path: Path):
    model = fix_input_shapes(load_model(_fcn(tmp_path / "m.onnx", ["N", 3, "H", "W"])), ["x=2x3x10x12"])
    shapes = value_shapes(model)
    assert shapes["x"] == [2, 3, 10, 12] and shapes["r"] == [2, 4, 10, 12] and shapes["y"] == [2, 2, 10, 12]


@pytest.mark.parametrize(("spec", "message"), [
    ("z=1x3x8x8", "has no input 'z'"), ("x=1x3x8", "rank 4, not 3"), ("x=1x4x8x8", "dim 1 of input 'x' is fixed at 3"),
])
def test_fix_input_shapes_errors(spec: str, message: str, tmp_path: Path):
    model = load_model(_fcn(tmp_path / "m.onnx", ["N", 3, "H", "W"]))
    with pytest.raises(PimcError, match=message):
        fix_input_shapes(model, [spec])


@pytest.mark.parametrize("target", ["escalate", "cim", "cmp-pim"])
def test_simulators_refuse_symbolic_spatial_dims_in_one_line(target: str, tmp_path: Path, capsys):
    src = _fcn(tmp_path / "m.onnx", ["N", 3, "H", "W"])
    assert main(["compile", str(src), "-t", target, "-o", str(tmp_path / "o.onnx")]) == 1
    err = capsys.readouterr().err
    assert err == "pimc: error: input 'x' has symbolic dims [N, 3, H, W]; give --input-shape x=1x3xHxW\n"


def test_simulator_costs_the_given_shape(tmp_path: Path, capsys):
    src = _fcn(tmp_path / "m.onnx", ["N", 3, "H", "W"])
    report = tmp_path / "r.json"
    assert main(["compile", str(src), "-t", "cim", "-o", str(tmp_path / "o.onnx"), "--report", str(report),
                 "--input-shape", "x=1x3x16x16"]) == 0
    capsys.readouterr()
    data = json.loads(report.read_text())
    assert {layer["positions"] for layer in data["cost"]["layers"]} == {256}
    assert "assumptions" not in data
    assert data["model"]["macs"] == 256 * (4 * 27 + 2 * 36)


def test_symbolic_batch_alone_is_costed_as_one_and_reported(tmp_path: Path):
    src = _fcn(tmp_path / "m.onnx", ["batch", 3, 8, 8])
    _, report = compile_model(CompileOptions(input=str(src), target="escalate", output=str(tmp_path / "o.onnx")))
    assert report["assumptions"] == ["input 'x' has a symbolic batch dim batch: costed as batch 1 "
                                     "(give --input-shape to cost another batch)"]
    assert report["model"]["macs_before"] == 64 * (4 * 27 + 2 * 36)


def test_onnxruntime_target_needs_no_fixed_shape(tmp_path: Path):
    src = _fcn(tmp_path / "m.onnx", ["N", 3, "H", "W"])
    out = tmp_path / "o.onnx"
    _, report = compile_model(CompileOptions(input=str(src), target="onnxruntime", output=str(out)))
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3, "H", "W"]
    assert "assumptions" not in report


def test_inspect_takes_input_shape(tmp_path: Path, capsys):
    src = _fcn(tmp_path / "m.onnx", ["N", 3, "H", "W"])
    assert main(["inspect", str(src), "--json", "--input-shape", "x=1x3x5x5"]) == 0
    assert "pimc: error" not in capsys.readouterr().err
    assert main(["inspect", str(src), "--input-shape", "x=1x3"]) == 1
    assert "rank 4, not 2" in capsys.readouterr().err


def test_layers_left_symbolic_by_inference_are_reported(tmp_path: Path):
    """A Resize whose sizes are a runtime input leaves the next conv's H, W symbolic: said, not hidden."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Resize", ["x", "", "", "sizes"], ["r"], name="resize"),
             helper.make_node("Conv", ["r", "w"], ["y"], name="conv")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4]),
                     helper.make_tensor_value_info("sizes", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(rng.standard_normal((3, 2, 1, 1)).astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "m.onnx"))
    _, report = compile_model(CompileOptions(input=str(tmp_path / "m.onnx"), target="cim",
                                             output=str(tmp_path / "o.onnx"), passes="fold-constants,cleanup"))
    assert any(note.startswith("Conv 'conv': 'r' has symbolic dims") for note in report["assumptions"])


def test_run_takes_input_shape(tmp_path: Path, capsys):
    """A fully convolutional model with symbolic H, W runs on digits once its input shape is fixed."""
    src = _fcn(tmp_path / "m.onnx", ["N", 3, "H", "W"])
    assert main(["run", str(src), "--data", "digits", "--limit", "8", "--repeats", "1"]) == 1
    assert "symbolic; give --input-shape" in capsys.readouterr().err
    assert main(["run", str(src), "--data", "digits", "--limit", "8", "--repeats", "1", "--json",
                 "--input-shape", "x=1x3x8x8"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 8
