"""Zoo models build, run and report errors for unknown names."""

from __future__ import annotations

import pytest
import torch

from pimc.compiler.errors import PimcError
from pimc.models.zoo import MODELS, build_model, model_input_shape

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shape(name: str) -> None:
    spec = MODELS[name]
    model = build_model(name).eval()
    batch = 1 if spec.input_shape[1] > 64 else 2
    with torch.inference_mode():
        out = model(torch.randn(batch, *spec.input_shape))
    if spec.task == "sr":  # num_classes is the default scale
        channels, height, width = spec.input_shape
        assert out.shape == (batch, channels, spec.num_classes * height, spec.num_classes * width)
    else:
        assert out.shape == (batch, spec.num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "mobilenetv2", "digits_cnn"])
def test_num_classes_and_channels_overrides(name: str) -> None:
    model = build_model(name, num_classes=7, in_channels=2).eval()
    with torch.no_grad():
        out = model(torch.randn(1, *model_input_shape(name, 2)))
    assert out.shape == (1, 7)


def test_known_parameter_counts() -> None:
    counts = {n: sum(p.numel() for p in build_model(n).parameters()) for n in ("lenet5", "resnet50")}
    assert counts["lenet5"] == 61706
    assert counts["resnet50"] == 25557032


def test_caffe_lenet5_is_admm_nns_model() -> None:
    model = build_model("lenet5_caffe")
    weights = {n: tuple(p.shape) for n, p in model.named_parameters() if n.endswith("weight")}
    assert list(weights.values()) == [(20, 1, 5, 5), (50, 20, 5, 5), (500, 800), (10, 500)]
    assert sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight")) == 430500
    assert model_input_shape("lenet5_caffe") == (1, 28, 28)
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    assert len(relus) == 1  # Caffe's prototxt: ReLU after ip1 only


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(PimcError, match="unknown model 'alexnet'.*resnet20"):
        build_model("alexnet")
