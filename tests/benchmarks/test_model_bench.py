"""The user-style model families of ``benchmarks/user_models.py`` and a one-cell run of
``benchmarks/model_bench.py`` (slow)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def um(single_torch_thread):
    return _load("user_models")


def test_there_are_at_least_eight_families(um):
    assert len(um.FAMILIES) >= 8


@pytest.mark.parametrize("dataset", ["mnist", "digits", "mnist3"])
def test_every_family_maps_a_batch_to_ten_logits(um, dataset: str):
    shape = um.INPUT_SHAPES[dataset]
    for family in um.FAMILIES:
        model = um.build_model(family, shape).eval()
        with torch.no_grad():
            out = model(torch.randn(2, *shape))
        assert out.shape == (2, 10), family
        assert um.count_params(model) > 0 and um.count_macs(model, shape) > 0, family


def test_families_have_their_defining_layers(um):
    def has(family: str, predicate) -> bool:
        return any(predicate(m) for m in um.build_model(family, (1, 28, 28)).modules())

    conv = torch.nn.Conv2d
    assert has("mobilenetv2", lambda m: isinstance(m, conv) and m.groups == m.in_channels > 1)
    assert has("mobilenetv2", lambda m: isinstance(m, torch.nn.ReLU6))
    assert has("resnext", lambda m: isinstance(m, conv) and m.groups == 8)
    assert has("silu_hswish", lambda m: isinstance(m, torch.nn.SiLU))
    assert has("silu_hswish", lambda m: isinstance(m, torch.nn.Hardswish))
    assert has("resnet_stem7", lambda m: isinstance(m, conv) and m.kernel_size == (7, 7))
    assert has("lenet_fc512", lambda m: isinstance(m, torch.nn.Linear) and m.in_features == 64 * 7 * 7
               and m.out_features == 512)
    assert has("resnet_bottleneck", lambda m: isinstance(m, um.Bottleneck))
    assert has("densenet", lambda m: isinstance(m, um.DenseLayer))


def test_resnet18_half_has_the_stated_size(um):
    model = um.resnet18_half()
    assert 2.7e6 < um.count_params(model) < 2.9e6
    assert 1.35e8 < um.count_macs(model, (3, 32, 32)) < 1.45e8
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_tint_pads_to_32_and_colours_each_image(um):
    grey = np.ones((4, 28, 28), dtype=np.float32)
    tinted = um.tint(grey, seed=0)
    assert tinted.shape == (4, 3, 32, 32) and tinted.dtype == np.float32
    assert np.all(tinted[:, :, :2] == 0) and np.all(tinted[:, :, :, -2:] == 0)
    colours = tinted[:, :, 16, 16]
    assert np.all((colours >= um.TINT_LOW) & (colours <= um.TINT_HIGH))
    assert len({tuple(c) for c in colours.round(6)}) == 4


def test_random_shift_keeps_the_shape(um):
    x = torch.randn(5, 3, 32, 32)
    y = um.random_shift(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape


@pytest.mark.slow
def test_bench_runs_one_cell(tmp_path: Path, single_torch_thread):
    bench = _load("model_bench").main(["--out", str(tmp_path), "--models", "resnet_stem7", "--datasets", "digits",
                                       "--targets", "onnxruntime", "--epochs", "3", "--threads", "1"])
    [record] = bench["records"]
    assert record["ok"], record
    assert record["dataset"] == "digits" and record["target"] == "onnxruntime"
    assert record["compile_seconds"] > 0 and record["run_seconds"] > 0
    assert isinstance(record["silent_breach"], bool)
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert on_disk["machine"]["git_commit"] and on_disk["records"][0]["model"] == "resnet_stem7"
    with np.load(tmp_path / "digits" / "resnet_stem7" / "test.npz") as test:
        assert test["x"].shape[1:] == (1, 16, 16) and test["y"].dtype == np.int64
