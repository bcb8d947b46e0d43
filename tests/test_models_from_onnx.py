"""The ONNX → torch conversion behind the exporters' ``--model FILE.onnx`` (and ``FILE.py:FACTORY``)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import torch
from click.testing import CliRunner

from pimc.compiler.loader import load_model
from pimc.compiler.sessions import make_session
from pimc.models import bundled_model_path
from pimc.models.from_onnx import load_onnx_module
from pimc.runtime.datasets import load_dataset


def test_converted_module_computes_what_onnxruntime_computes():
    module, shape, _ = load_onnx_module(bundled_model_path())
    assert shape == (1, 8, 8)
    x = load_dataset("digits", shape, split="test").x[:16]
    original = load_model(bundled_model_path())
    session = make_session(original)
    ref = session.run(None, {session.get_inputs()[0].name: x})[0]
    got = module.eval()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in module.modules()) == 4


def test_export_prune_on_a_users_onnx_keeps_its_io_names(tmp_path):
    from pimc.cli.main import cli

    out = tmp_path / "p.onnx"
    result = CliRunner().invoke(cli, [
        "export", "prune", "--model", str(bundled_model_path()), "--data", "digits", "-o", str(out),
        "--admm-epochs", "1", "--retrain-epochs", "1", "--steps", "1", "--train-limit", "128", "--ratio", "4", "--no-progress",
        "--json",
    ])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["compression"] >= 3.5
    source, pruned = onnx.load(str(bundled_model_path())), onnx.load(str(out))
    assert [i.name for i in pruned.graph.input] == [i.name for i in source.graph.input]
    assert [o.name for o in pruned.graph.output] == [o.name for o in source.graph.output]


def test_export_prune_on_a_factory(tmp_path):
    from pimc.cli.main import cli

    factory = tmp_path / "net.py"
    factory.write_text(
        "from torch import nn\n"
        "def build(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, num_classes))\n")
    out = tmp_path / "f.onnx"
    result = CliRunner().invoke(cli, [
        "export", "prune", "--model", f"{factory}:build", "--input-shape", "1,8,8", "--data", "digits",
        "-o", str(out), "--epochs", "1", "--admm-epochs", "1", "--retrain-epochs", "1", "--steps", "1", "--train-limit", "128",
        "--ratio", "4", "--no-progress", "--json",
    ])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["compression"] >= 3.5


def test_converted_resnet_traces_with_torch_fx_and_keeps_its_residual_streams(tmp_path):
    """PENNI's residual-channel grouping (torch.fx) finds the same streams in a user's ONNX ResNet as in
    the torch model it was exported from; the conversion computes the same logits."""
    from pimc.models.train import export_onnx
    from pimc.models.zoo import build_model, model_input_shape
    from pimc.passes.decompose.exporter import find_residual_spaces

    torch.manual_seed(0)
    model = build_model("resnet20", 10).eval()
    shape = model_input_shape("resnet20")
    export_onnx(model, tmp_path / "r20.onnx", shape)
    converted, _, _ = load_onnx_module(tmp_path / "r20.onnx")
    streams, note = find_residual_spaces(converted)
    assert note is None
    expected = sorted((s.channels, len(s.writers)) for s in find_residual_spaces(model)[0])
    assert sorted((s.channels, len(s.writers)) for s in streams) == expected == [(16, 4), (32, 4), (64, 4)]
    x = torch.randn(2, *shape)
    with torch.no_grad():
        np.testing.assert_allclose(converted.eval()(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-4)


def test_a_super_resolution_onnx_with_a_symbolic_size_and_depth_to_space_converts(tmp_path):
    import onnxruntime as ort

    from pimc.models.sr_zoo import edsr_small
    from pimc.models.train import export_onnx

    torch.manual_seed(0)
    path = export_onnx(edsr_small().eval(), tmp_path / "edsr.onnx", (3, 24, 24))
    module, shape, _ = load_onnx_module(path, (3, 24, 24))
    x = np.random.default_rng(0).random((2, 3, 20, 28)).astype(np.float32)  # not the training size
    expected = ort.InferenceSession(str(path)).run(None, {"input": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), expected, rtol=1e-4, atol=1e-4)
    assert shape == (3, 24, 24) and expected.shape == (2, 3, 40, 56)
