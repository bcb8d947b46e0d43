"""torch exports end to end: legacy (opset 17, BatchNorm kept) and dynamo (opset 18+, with and without
onnxscript's optimizer) compile with ``--target onnxruntime --verify``; ResNet-18 runs are slow-marked."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_ort

from pimc.cli.main import main

torch = pytest.importorskip("torch")


def _small_cnn():
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.1),
        nn.Conv2d(8, 8, 3, stride=2, groups=2, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )
    _randomize_bn(model)
    return model.eval()


def _randomize_bn(model) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def _export(model, path: Path, shape, dynamo: bool, **kwargs) -> Path:
    x = torch.randn(1, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False, **kwargs)
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17,
                              training=torch.onnx.TrainingMode.PRESERVE, **kwargs)
    return path


def _compile(src: Path, tmp_path: Path, capsys) -> tuple[dict, Path]:
    out = tmp_path / "out.onnx"
    report = tmp_path / "report.json"
    code = main(["compile", str(src), "--target", "onnxruntime", "--verify", "-o", str(out), "--report", str(report),
                 "--passes", "fold-constants,eliminate-identity,fold-batchnorm,cleanup"])
    capsys.readouterr()
    assert code == 0
    return json.loads(report.read_text()), out


def _check_against_torch(model, out: Path, shape) -> None:
    x = torch.randn(1, *shape)
    with torch.no_grad():
        expected = model(x).numpy()
    got = run_ort(out, {onnx.load(str(out)).graph.input[0].name: x.numpy()})[0]
    scale = float(np.max(np.abs(expected)))
    assert float(np.max(np.abs(got - expected))) / scale < 1e-4


@pytest.mark.parametrize("variant", ["legacy", "dynamo", "dynamo-unoptimized"])
def test_small_cnn_export_compiles(variant: str, tmp_path: Path, capsys):
    model = _small_cnn()
    kwargs = {"optimize": False} if variant == "dynamo-unoptimized" else {}
    src = _export(model, tmp_path / "m.onnx", (3, 16, 16), dynamo=variant != "legacy", **kwargs)
    opset = onnx.load(str(src), load_external_data=False).opset_import
    version = next(o.version for o in opset if o.domain in ("", "ai.onnx"))
    assert version == 17 if variant == "legacy" else version >= 18
    report, out = _compile(src, tmp_path, capsys)
    assert report["verify"]["max_rel_err"] <= 1e-5
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "BatchNormalization" not in ops and "Identity" not in ops and "Dropout" not in ops
    _check_against_torch(model, out, (3, 16, 16))


def test_dynamo_opset_25(tmp_path: Path, capsys):
    model = _small_cnn()
    src = _export(model, tmp_path / "m25.onnx", (3, 16, 16), dynamo=True, opset_version=25)
    report, out = _compile(src, tmp_path, capsys)
    assert report["verify"]["max_rel_err"] <= 1e-5
    _check_against_torch(model, out, (3, 16, 16))


@pytest.mark.slow
@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_resnet18_compiles_within_1e4(dynamo: bool, tmp_path: Path, capsys):
    """ResNet-18 (CIFAR) --target onnxruntime --verify has max rel err <= 1e-4."""
    from pimc.models.zoo import build_model

    torch.manual_seed(0)
    model = build_model("resnet18")
    _randomize_bn(model)
    model.eval()
    kwargs = {"optimize": False} if dynamo else {}
    src = _export(model, tmp_path / "resnet18.onnx", (3, 32, 32), dynamo=dynamo, **kwargs)
    out = tmp_path / "out.onnx"
    report = tmp_path / "report.json"
    assert main(["compile", str(src), "--target", "onnxruntime", "--verify", "-o", str(out),
                 "--report", str(report)]) == 0
    capsys.readouterr()
    data = json.loads(report.read_text())
    assert data["verify"]["max_rel_err"] <= 1e-4
    assert data["model"]["nodes"] < data["model"]["nodes_before"]
    _check_against_torch(model, out, (3, 32, 32))


@pytest.mark.parametrize("target", ["cim", "onnxruntime"])
def test_keep_initializers_as_inputs_export_needs_only_the_image(target: str, tmp_path: Path, capsys):
    """Weights listed as graph inputs are constants: the compiled model asks for the image alone, even
    after passes removed or replaced those weights."""
    model = _small_cnn()
    src = _export(model, tmp_path / "m.onnx", (3, 16, 16), dynamo=False, keep_initializers_as_inputs=True,
                  input_names=["input"])
    assert len(onnx.load(str(src)).graph.input) > 1
    out = tmp_path / "out.onnx"
    assert main(["compile", str(src), "--target", target, "-o", str(out), "--json"]) == 0
    capsys.readouterr()
    onnx.checker.check_model(str(out), full_check=True)
    session_inputs = [i.name for i in onnx.load(str(out)).graph.input]
    assert session_inputs == ["input"]
    x = torch.randn(1, 3, 16, 16)
    assert run_ort(out, {"input": x.numpy()})[0].shape == (1, 5)
