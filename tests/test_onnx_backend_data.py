"""Every pytorch-converted/test_Conv* and pytorch-operator/test_operator_conv case shipped inside the onnx
package compiles with ``--target onnxruntime`` (opset 6, IR 3, weights listed as graph inputs) and its
output matches the stored ``output_0.pb``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from pimc.compiler.cli import main

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
