"""No target's default pipeline makes a model bigger: params and MACs never grow, on the zoo exports and on
the bundled model, with and without labelled data."""

from __future__ import annotations

from pathlib import Path

import pytest

from pimc.app.compile import CompileOptions, compile_model
from pimc.cli.models import export_annotated
from pimc.compiler.target import all_targets
from pimc.models import bundled_model_path
from pimc.models.zoo import build_model, model_input_shape

ZOO = ("lenet5", "resnet20", "mobilenetv2", "cmpnet", "cmpnet_cnn")


@pytest.fixture(scope="module")
def zoo_exports(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("zoo")
    paths = {}
    for name in ZOO:
        paths[name] = folder / f"{name}.onnx"
        export_annotated(build_model(name), paths[name], model_input_shape(name, None))
    return paths


def _assert_not_larger(report: dict) -> None:
    m = report["model"]
    assert m["params"] <= m["params_before"], (report["target"], m)
    assert m["macs"] <= m["macs_before"], (report["target"], m)


@pytest.mark.parametrize("target", list(all_targets()))
@pytest.mark.parametrize("name", ZOO)
def test_zoo_exports_never_grow(zoo_exports, name: str, target: str, tmp_path: Path):
    _, report = compile_model(CompileOptions(input=str(zoo_exports[name]), target=target,
                                             output=str(tmp_path / "o.onnx")))
    _assert_not_larger(report)
    assert report["accuracy"]["measured"] is False


@pytest.mark.parametrize("target", list(all_targets()))
def test_bundled_model_never_grows_with_data(target: str, tmp_path: Path):
    _, report = compile_model(CompileOptions(input=str(bundled_model_path()), target=target, data="digits",
                                             output=str(tmp_path / "o.onnx")))
    _assert_not_larger(report)
    assert report["accuracy"]["drop_points"] <= 1.0
