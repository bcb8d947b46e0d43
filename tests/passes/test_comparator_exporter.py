"""LBConv2d, conv replacement, annotated export and the CMPNET-style zoo network (torch vs onnxruntime)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from pimc.compiler import annotations as ann
from pimc.compiler.errors import PimcError
from pimc.compiler.loader import infer_shapes
from pimc.compiler.verify import run_model
from pimc.compiler.workload import extract_workload
from pimc.models.cmpnet import INPUT_SHAPE, build_cmpnet, build_cmpnet_cnn
from pimc.passes.comparator.exporter import (
    LBConv2d,
    compare,
    export_lbc_onnx,
    freeze_all_but_pointwise,
    lbc_modules,
    replace_convs,
)


def test_lbconv_forward_matches_its_definition():
    torch.manual_seed(0)
    layer = LBConv2d(4, 6, 3, stride=2, anchors=10, comparator="relu").eval()
    x = torch.randn(2, 4, 9, 9)
    a = torch.nn.functional.conv2d(x, layer.anchor, stride=2, padding=1)
    expected = layer.pointwise(torch.relu(a))
    assert torch.allclose(layer(x), expected)
    assert set(torch.unique(layer.anchor).tolist()) <= {-1.0, 0.0, 1.0}
    assert not layer.anchor.requires_grad and "anchor" in dict(layer.named_buffers())


def test_separable_anchors_are_depthwise_and_binary_comparator_has_a_gradient():
    layer = LBConv2d(3, 5, 3, anchors=4, separable=True, comparator="binary")
    assert layer.anchor.shape == (12, 1, 3, 3) and layer.anchors == 12
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    layer.train()
    layer(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    layer.eval()
    a = torch.randn(100)
    assert torch.equal(compare(a, "binary", False), (a > 0).float())


def test_bad_arguments_are_user_errors():
    with pytest.raises(PimcError):
        LBConv2d(3, 4, comparator="tanh")
    with pytest.raises(PimcError):
        LBConv2d(3, 4, density=0.0)


def test_replace_convs_in_a_user_model_and_train_only_pointwise():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 3, 2, 1))
    replaced = replace_convs(model, anchors=6, seed=1)
    assert replaced == ["0", "3"]
    assert isinstance(model[0], LBConv2d) and isinstance(model[2], nn.Conv2d) and isinstance(model[3], LBConv2d)
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 4, 4, 4)
    freeze_all_but_pointwise(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"0.pointwise.weight", "0.pointwise.bias", "3.pointwise.weight", "3.pointwise.bias"}


def test_cmpnet_export_is_annotated_and_matches_torch_on_onnxruntime(tmp_path):
    torch.manual_seed(0)
    model = build_cmpnet(anchors_per_channel=2).eval()
    path = tmp_path / "cmpnet.onnx"
    annotated = export_lbc_onnx(model, path, INPUT_SHAPE)
    assert set(annotated) == {name for name, _ in lbc_modules(model)}
    proto = onnx.load(str(path))
    x = torch.randn(3, *INPUT_SHAPE)
    ours = run_model(proto, [{"input": x.numpy()}])[0][0]
    with torch.no_grad():
        ref = model(x).numpy()
    # the comparison bit is discontinuous: float summation order may flip a few near-zero bits
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 0.1
    layers = extract_workload(infer_shapes(proto)).layers
    roles = [r.role for r in layers]
    assert roles.count("anchor") == roles.count("lbc_pointwise") == len(annotated)
    pointwise = [r for r in layers if r.role == "lbc_pointwise"]
    assert all(r.act_bits == 1 and r.annotations["comparator"] == "binary" for r in pointwise)
    first = next(r for r in pointwise if r.annotations["layer"] == "stem.0")
    assert first.annotations["original_cin"] == 3 and first.annotations["kernel"] == [3, 3]
    comparators = [n for n in proto.graph.node if ann.get_node_annotation(n, "role") == "comparator"]
    assert len(comparators) == len(annotated) and all(n.op_type == "Greater" for n in comparators)


def test_relu_cmpnet_export_matches_torch_tightly(tmp_path):
    torch.manual_seed(1)
    model = build_cmpnet(anchors_per_channel=2, comparator="relu").eval()
    path = tmp_path / "relu.onnx"
    export_lbc_onnx(model, path, INPUT_SHAPE)
    x = torch.randn(2, *INPUT_SHAPE)
    ours = run_model(onnx.load(str(path)), [{"input": x.numpy()}])[0][0]
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(ours - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_cnn_twin_has_the_same_configuration_with_ordinary_convs():
    lbc = build_cmpnet()
    cnn = build_cmpnet_cnn()
    shapes = [(m.cin, m.cout, m.stride) for _, m in lbc_modules(lbc)]
    convs = [(m.in_channels, m.out_channels, m.stride[0]) for m in cnn.modules() if isinstance(m, nn.Conv2d)]
    assert shapes == convs
    assert cnn(torch.randn(1, *INPUT_SHAPE)).shape == (1, 10)


def test_cli_replaces_a_zoo_models_convs_trains_and_exports(tmp_path):
    from click.testing import CliRunner

    from pimc.cli.export.comparator import command

    out = tmp_path / "dc.onnx"
    result = CliRunner().invoke(command, ["--model", "digits_cnn", "--epochs", "1", "--anchors", "2",
                                          "--comparator", "relu", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "replaced 3 convs" in result.output and "test accuracy" in result.output
    roles = [ann.get_node_annotation(n, "role") for n in onnx.load(str(out)).graph.node]
    assert roles.count("anchor") == 3 and roles.count("lbc_pointwise") == 3


def test_cli_rejects_bad_options(tmp_path):
    from click.testing import CliRunner

    from pimc.cli.export.comparator import command

    result = CliRunner().invoke(command, ["--density", "0", "-o", str(tmp_path / "x.onnx")])
    assert result.exit_code != 0 and "density" in str(result.exception or result.output)


@pytest.mark.slow
def test_cmpnet_trains_on_digits_close_to_its_cnn_twin(tmp_path):
    from pimc.models.train import digits_arrays, evaluate_torch, make_loader, train_classifier

    x, y = digits_arrays(INPUT_SHAPE, "train")
    xt, yt = digits_arrays(INPUT_SHAPE, "test")
    accuracy = {}
    for name, model in (("cmpnet", build_cmpnet(anchors_per_channel=8)), ("cnn", build_cmpnet_cnn())):
        torch.manual_seed(0)
        train_classifier(model, make_loader(x, y, 64, True, 0), 20, progress=False)
        accuracy[name] = evaluate_torch(model, xt, yt)
    assert accuracy["cmpnet"] >= accuracy["cnn"] - 0.03


def test_export_of_a_trained_onnx_model_reports_its_accuracy_and_warns_when_the_lbc_network_loses_it(
        tmp_path, capsys):
    import json

    from pimc.cli.main import main
    from pimc.models import bundled_model_path

    code = main(["export", "comparator", "--model", str(bundled_model_path()), "--data", "digits", "--epochs", "1",
                 "--train-limit", "32", "-o", str(tmp_path / "lbc.onnx"), "--no-progress", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["input_accuracy"] > 0.9
    lost = 100 * (summary["input_accuracy"] - summary["test_accuracy"])
    assert (lost > 1.0) == bool(summary.get("warnings"))
