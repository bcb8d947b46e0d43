"""``pimc.compress``: one call per method on a trained torch module or an ONNX path; the written ONNX
computes what the returned module computes (onnxruntime oracle); bad method / option is one clear error."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import pimc
from pimc.compiler.errors import PimcError
from pimc.compiler.sessions import make_session
from pimc.compiler.storage import model_storage
from pimc.models.train import train_classifier, training_data

SHAPE = (1, 8, 8)
FAST = {
    "decompose": {"epochs": 1, "finetune_epochs": 1, "rank": 3},
    "pattern": {"admm_epochs": 1, "retrain_epochs": 1},
    "prune": {"admm_epochs": 1, "retrain_epochs": 1, "steps": 1, "ratio": 4},
    "quantize": {"quant_epochs": 1, "bits": 6},
    "comparator": {"epochs": 1, "anchors": 2},
    "feature-reg": {"epochs": 1, "levels": (0.5, 0.7), "calibration": 64},
}

# the fixture's CNN as exported (BatchNorm folded into the first conv's bias): 6·9 + 6, 8·6·9 + 8, 10·512 + 10
DENSE_FP32_BITS = 32 * (60 + 440 + 5130)


@pytest.fixture(scope="module")
def trained(single_torch_thread):
    data = training_data("digits", SHAPE, 32, limit=128)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    train_classifier(model, data.loader, 2, progress=False)
    return model, data


def _onnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    session = make_session(onnx.load(str(path)))
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("method", sorted(FAST))
def test_compress_writes_the_onnx_of_the_returned_module(method: str, trained, tmp_path: Path) -> None:
    model, data = trained
    out = tmp_path / f"{method}.onnx"
    result = pimc.compress(copy.deepcopy(model), data.loader, method=method, output=out, input_shape=SHAPE,
                           progress=False, **FAST[method])
    assert isinstance(result, nn.Module) and out.is_file()
    store = model_storage(onnx.load(str(out)))  # against the CNN given, whatever the method made of it
    assert store["dense_fp32_bits"] == DENSE_FP32_BITS and store["reference"] != "this model"
    x = data.test.x[:32]
    with torch.no_grad():
        reference = result.eval()(torch.from_numpy(x)).numpy()
    got = _onnx_outputs(out, x)
    if method == "quantize":  # QDQ activations are quantized in the graph, not in the returned module
        assert (got.argmax(1) == reference.argmax(1)).mean() >= 0.8
    else:
        np.testing.assert_allclose(got, reference, rtol=1e-3, atol=1e-3)


def test_compress_an_onnx_path_keeps_its_names(trained, tmp_path: Path) -> None:
    model, data = trained
    source = tmp_path / "mine.onnx"
    torch.onnx.export(copy.deepcopy(model).eval(), (torch.randn(2, *SHAPE),), str(source), dynamo=False,
                      input_names=["pixels"], output_names=["scores"], dynamic_axes={"pixels": {0: "n"}})
    out = tmp_path / "p.onnx"
    pimc.compress(str(source), data.loader, method="prune", output=out, progress=False, **FAST["prune"])
    proto = onnx.load(str(out))
    assert [i.name for i in proto.graph.input] == ["pixels"] and [o.name for o in proto.graph.output] == ["scores"]
    assert model_storage(proto)["dense_fp32_bits"] == DENSE_FP32_BITS


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "svd"}, "unknown method 'svd' (use decompose, pattern, prune, quantize, comparator, feature-reg, channel-prune, admp)"),
    ({"method": "decompose", "ranks": 3}, "unknown option ranks (valid: "),
    ({"method": "prune", "input_shape": None}, "give input_shape=(C, H, W)"),
    ({"method": "quantize", "bits": 12}, "--bits and --act-bits must lie between 2 and 8"),
    ({"method": "pattern", "connectivity": 1.5}, "--connectivity must be in [0, 1), got 1.5"),
    ({"method": "pattern", "mode": "greedy"}, "mode must be one of admm, oneshot"),
    ({"method": "comparator", "train": "some"}, "--train must be one of all, pointwise"),
])
def test_compress_errors_are_one_line(kwargs: dict, message: str, trained, tmp_path: Path) -> None:
    model, data = trained
    out = tmp_path / "x.onnx"
    call = {"input_shape": SHAPE, **kwargs}
    with pytest.raises(PimcError) as info:
        pimc.compress(copy.deepcopy(model), data.loader, output=out, **call)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not out.exists()


def test_import_pimc_does_not_import_torch() -> None:
    code = "import sys, pimc; assert 'torch' not in sys.modules; assert callable(pimc.compress)"
    subprocess.run([sys.executable, "-c", code], check=True)
