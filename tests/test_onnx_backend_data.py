"""Every pytorch-converted/test_Conv* and pytorch-operator/test_operator_conv case shipped inside the onnx
package compiles with ``--target onnxruntime`` (opset 6, IR 3, weights listed as graph inputs) and its
output matches the stored ``output_0.pb``; the nine IR 3 "light" model-zoo graphs compile for every target
(SqueezeNet for two targets in the default run, the rest marked slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from pimc.cli.main import main

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
CASES = sorted((DATA / "pytorch-converted").glob("test_Conv*")) + [DATA / "pytorch-operator" / "test_operator_conv"]


def _tensor(path: Path) -> np.ndarray:
    tensor = onnx.TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(tensor)


def test_cases_are_present():
    assert len(CASES) >= 29 and all((c / "model.onnx").exists() for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_conv_case_compiles_and_matches(case: Path, tmp_path: Path, capsys):
    out = tmp_path / "out.onnx"
    assert main(["compile", str(case / "model.onnx"), "--target", "onnxruntime", "-o", str(out), "--verify",
                 "--json"]) == 0
    capsys.readouterr()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    assert len(inputs) == 1
    for data_set in sorted(case.glob("test_data_set_*")):
        x = _tensor(data_set / "input_0.pb")
        expected = _tensor(data_set / "output_0.pb")
        got = session.run(None, {inputs[0].name: x})[0]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


LIGHT = DATA / "light"
ZOO = sorted(p.stem for p in LIGHT.glob("light_*.onnx"))
TARGETS = ["onnxruntime", "escalate", "cim", "cmp-pim"]
FAST = {("light_squeezenet", "onnxruntime"), ("light_squeezenet", "escalate")}


def test_light_zoo_is_present():
    assert len(ZOO) == 9


def _zoo_params():
    for name in ZOO:
        for target in TARGETS:
            marks = () if (name, target) in FAST else (pytest.mark.slow,)
            yield pytest.param(name, target, marks=marks, id=f"{name}-{target}")


@pytest.mark.parametrize(("name", "target"), list(_zoo_params()))
def test_ir3_zoo_graph_compiles_and_runs(name: str, target: str, tmp_path: Path, capsys):
    """IR 3 model-zoo graphs (every initializer also a graph input): the compiled model is valid, needs
    only the image and runs on onnxruntime; the onnxruntime target keeps the outputs."""
    src = LIGHT / f"{name}.onnx"
    out = tmp_path / "out.onnx"
    assert main(["compile", str(src), "--target", target, "-o", str(out), "--json"]) == 0
    assert capsys.readouterr().err == ""
    onnx.checker.check_model(str(out), full_check=True)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    assert len(inputs) == 1
    x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in inputs[0].shape])
    got = session.run(None, {inputs[0].name: x.astype(np.float32)})[0]
    assert got.shape == _tensor(LIGHT / f"{name}_output_0.pb").shape
    if target == "onnxruntime":
        original = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
        want = original.run(None, {inputs[0].name: x.astype(np.float32)})[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))
