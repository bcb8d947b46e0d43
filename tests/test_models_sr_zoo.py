"""The super-resolution zoo: ESPCN and EDSR-small export with DepthToSpace and a symbolic image size, train on
super-resolution data, and compile for every target under a PSNR budget read in dB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pimc.compiler.target import all_targets
from pimc.models.train import export_onnx
from pimc.models.zoo import build_model

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "report.schema.json").read_text())


@pytest.mark.parametrize(("name", "scale"), [("espcn", 2), ("edsr-small", 2), ("edsr-small", 4), ("espcn", 3)])
def test_export_has_depth_to_space_and_symbolic_size_and_matches_torch(tmp_path, name, scale):
    import onnxruntime as ort

    torch.manual_seed(0)
    model = build_model(name, scale=scale).eval()
    path = export_onnx(model, tmp_path / "m.onnx", (3, 12, 12))
    proto = onnx.load(str(path))
    assert "DepthToSpace" in {n.op_type for n in proto.graph.node}
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert not dims[2].HasField("dim_value") and proto.graph.output[0].name == "image"
    x = np.random.default_rng(0).random((1, 3, 10, 14)).astype(np.float32)
    ours = ort.InferenceSession(str(path)).run(None, {"input": x})[0]
    assert ours.shape == (1, 3, 10 * scale, 14 * scale)
    assert np.allclose(ours, model(torch.from_numpy(x)).detach().numpy(), atol=1e-4)


@pytest.fixture(scope="module")
def trained_espcn(tmp_path_factory):
    out = tmp_path_factory.mktemp("sr") / "espcn.onnx"
    done = subprocess.run([sys.executable, "-m", "pimc", "models", "train", "espcn", "--data", "sr-samples:2",
                           "-o", str(out), "--epochs", "2", "--batch-size", "16", "--lr", "1e-3",
                           "--train-limit", "512", "--threads", "1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "against bicubic" in done.stdout and "dB" in done.stdout
    return out


@pytest.mark.parametrize("target", sorted(all_targets()))
def test_every_target_compiles_an_sr_model_under_a_psnr_budget(trained_espcn, tmp_path, target):
    report = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "pimc", "compile", str(trained_espcn), "--target", target,
                           "--data", "sr-samples:2", "--input-shape", "input=1x3x16x16", "--max-accuracy-drop",
                           "0.1", "-o", str(tmp_path / "out.onnx"), "--report", str(report)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "PSNR (Y)" in done.stdout and "dB budget" in done.stdout
    data = json.loads(report.read_text())
    jsonschema.validate(data, SCHEMA)
    accuracy = data["accuracy"]
    assert accuracy["metric"] == "psnr" and accuracy["unit"] == "dB"
    assert 15.0 < accuracy["input"] < 45.0 and accuracy["drop_points"] <= 0.1 + 1e-9
    assert 0.0 < accuracy["ssim_output"] <= 1.0
    assert "DepthToSpace" in {n.op_type for n in onnx.load(str(tmp_path / "out.onnx")).graph.node}
