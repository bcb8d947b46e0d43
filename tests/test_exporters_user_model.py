"""Every exporter on the user's own model: ``--model FILE.onnx`` (names kept, no pre-training) and
``FILE.py:FACTORY``; one check runs the CLI as a user would (``python -m pimc``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from pimc.cli.main import main

FAST = {
    "decompose": ["--pretrain-epochs", "1", "--epochs", "1", "--finetune-epochs", "1", "--rank", "3", "--no-progress"],
    "pattern": ["--epochs", "1", "--admm-epochs", "1", "--retrain-epochs", "1", "--no-progress"],
    "prune": ["--epochs", "1", "--admm-epochs", "1", "--retrain-epochs", "1", "--steps", "1", "--ratio", "4",
              "--no-progress"],
    "quantize": ["--epochs", "1", "--quant-epochs", "1", "--bits", "4", "--no-progress"],
    "comparator": ["--epochs", "1", "--anchors", "2", "--no-progress"],
}


class UserCNN(nn.Module):
    """A user's CNN with BatchNorm, asymmetric-free pads and a Linear head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(8 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def user_onnx(path: Path, shape: tuple[int, int, int] = (1, 16, 16), classes: int = 10) -> Path:
    """Export ``UserCNN`` (random BN statistics, so folding is exercised) with input ``pixels`` / output ``scores``."""
    torch.manual_seed(0)
    model = UserCNN(classes)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    model.eval()
    torch.onnx.export(model, (torch.randn(2, *shape),), str(path), dynamo=False, input_names=["pixels"],
                      output_names=["scores"], dynamic_axes={"pixels": {0: "n"}, "scores": {0: "n"}})
    return path


def _io_names(path: Path) -> tuple[list[str], list[str]]:
    proto = onnx.load(str(path))
    inits = {t.name for t in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name not in inits], [o.name for o in proto.graph.output]


@pytest.mark.parametrize("name", sorted(FAST))
def test_every_exporter_keeps_the_users_io_names(name: str, tmp_path: Path, capsys, single_torch_thread) -> None:
    source = user_onnx(tmp_path / "user.onnx")
    out = tmp_path / "out.onnx"
    code = main(["export", name, "--model", str(source), "--data", "digits", "--train-limit", "64",
                 "-o", str(out), *FAST[name]])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert _io_names(out) == (["pixels"], ["scores"])


@pytest.mark.parametrize("name", ["decompose", "quantize", "comparator"])
def test_every_exporter_trains_a_factory_model(name: str, tmp_path: Path, capsys, single_torch_thread) -> None:
    factory = tmp_path / "net.py"
    factory.write_text(
        "from torch import nn\n"
        "def build(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, num_classes))\n")
    out = tmp_path / "f.onnx"
    code = main(["export", name, "--model", f"{factory}:build", "--input-shape", "1,8,8", "--data", "digits",
                 "--train-limit", "64", "-o", str(out), *FAST[name]])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert _io_names(out) == (["input"], ["logits"])


@pytest.mark.parametrize(("model", "message"), [
    ("missing.onnx", "no such file"),
    ("few_classes.onnx", "the data has 10 classes"),
    ("net.py:nothing", "has no callable nothing"),
])
@pytest.mark.parametrize("name", ["decompose", "quantize", "comparator", "pattern"])
def test_bad_user_model_is_one_line(name: str, model: str, message: str, tmp_path: Path, capsys) -> None:
    user_onnx(tmp_path / "few_classes.onnx", classes=4)
    (tmp_path / "net.py").write_text("x = 1\n")
    out = tmp_path / "out.onnx"
    code = main(["export", name, "--model", str(tmp_path / model), "--data", "digits", "-o", str(out), *FAST[name]])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not out.exists()


def test_zoo_only_options_are_refused_for_a_users_onnx(tmp_path: Path, capsys) -> None:
    source = user_onnx(tmp_path / "user.onnx")
    code = main(["export", "pattern", "--model", str(source), "--in-channels", "3", "-o", str(tmp_path / "o.onnx")])
    err = capsys.readouterr().err
    assert code == 1 and "--in-channels / --input-size apply to zoo models only" in err


def test_done_when_export_decompose_on_your_onnx_with_mnist(tmp_path: Path) -> None:
    """`pimc export decompose --model YOUR.onnx --data mnist` trains and exports a model whose input/output
    names match YOUR.onnx, and reports its held-out accuracy."""
    source = user_onnx(tmp_path / "yours.onnx")
    out = tmp_path / "yours_penni.onnx"
    run = subprocess.run(
        [sys.executable, "-m", "pimc", "export", "decompose", "--model", str(source), "--data", "mnist",
         "-o", str(out), "--train-limit", "64", "--threads", "1", "--json", *FAST["decompose"]],
        capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert _io_names(out) == _io_names(source) == (["pixels"], ["scores"])
    assert summary["pretrained"] is False and summary["test_samples"] == 1000
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["decomposed_layers"] == 2
    assert summary["stored_conv_params"] < summary["dense_conv_params"]
