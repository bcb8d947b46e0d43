"""cmp-pim on the bundled model and the zoo exports: the default never loses to the cnn baseline, and the
CMPNET as `pimc models export cmpnet` writes it beats both baselines."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from pimc.app.compile import CompileOptions, compile_model
from pimc.cli.models import export_annotated
from pimc.compiler import annotations as ann
from pimc.models import bundled_model_path
from pimc.models.zoo import build_model, model_input_shape

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def export(name: str, folder: Path) -> str:
    torch.manual_seed(0)
    path = folder / f"{name}.onnx"
    export_annotated(build_model(name), path, model_input_shape(name, None))
    return str(path)


def cmp_pim(path: str) -> dict:
    return compile_model(CompileOptions(input=path, target="cmp-pim", write_output=False))[1]


def assert_never_worse_than_cnn(report: dict) -> None:
    gain = report["cost"]["energy_gain_vs"]["cnn"]
    assert gain >= 1 - 1e-9, (report["input"], gain)
    assert not any("energy of the input model" in w for w in report["warnings"])


def test_default_never_loses_energy_to_cnn_on_the_bundled_model():
    assert_never_worse_than_cnn(cmp_pim(str(bundled_model_path())))


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "mobilenetv2", "cmpnet", "cmpnet_cnn"])
def test_default_never_loses_energy_to_cnn_on_zoo_exports(name: str, tmp_path: Path):
    assert_never_worse_than_cnn(cmp_pim(export(name, tmp_path)))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "vgg16", "resnet50"])
def test_default_never_loses_energy_to_cnn_on_large_zoo_exports(name: str, tmp_path: Path):
    assert_never_worse_than_cnn(cmp_pim(export(name, tmp_path)))


def test_cmpnet_as_exported_is_annotated_and_beats_both_baselines(tmp_path: Path):
    path = export("cmpnet", tmp_path)
    roles = [ann.get_node_annotation(n, "role") for n in onnx.load(path).graph.node]
    assert roles.count("anchor") == roles.count("lbc_pointwise") == 6
    report = cmp_pim(path)
    cost = report["cost"]
    assert len(cost["cmp_pim"]["lbc_blocks"]) == 6
    for name in ("cnn", "lbcnn"):
        assert cost["baselines"][name]["model"] == "input"
        assert cost["energy_gain_vs"][name] > 2 and cost["speedup_vs"][name] > 1
    assert report["warnings"] == []


def test_cnn_baseline_of_cmpnet_costs_what_its_plain_twin_costs(tmp_path: Path):
    cmpnet = cmp_pim(export("cmpnet", tmp_path))["cost"]["baselines"]["cnn"]
    twin = cmp_pim(export("cmpnet_cnn", tmp_path))["cost"]
    assert cmpnet["energy_j"] == pytest.approx(twin["energy_j"])
    assert cmpnet["latency_s"] == pytest.approx(twin["latency_s"])
