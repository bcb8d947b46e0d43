"""The training-aware channel pruning exporter: the group lasso, the rounds, and the narrowed ONNX it writes
(tiny epochs; onnxruntime as the oracle of the written file)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from pimc.compiler.graph import get_initializer
from pimc.models.from_onnx import OnnxModule
from pimc.models.train import export_onnx, make_loader
from pimc.passes.channel.channel_prune import channel_groups
from pimc.passes.channel.config import ChannelPruneConfig
from pimc.passes.channel.exporter import as_onnx, compress_trained, group_lasso

pytestmark = pytest.mark.usefixtures("single_torch_thread")
BUNDLED = Path(__file__).resolve().parents[2] / "models" / "digits_cnn.onnx"


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.b(torch.relu(self.a(h))))
        return self.fc(h.mean(dim=(2, 3)))


def _conv_widths(model: onnx.ModelProto) -> list[int]:
    return [get_initializer(model.graph, n.input[1]).shape[0] for n in model.graph.node if n.op_type == "Conv"]


def test_the_group_lasso_sums_the_joint_norm_of_each_tied_channel():
    torch.manual_seed(0)
    onnx_model = as_onnx(Residual().eval(), (1, 8, 8))
    module = OnnxModule(onnx_model)
    groups = channel_groups(onnx_model)[0]
    stream = next(g for g in groups if len(g.producers) == 2)  # stem and b write the residual stream
    expected = 0.0
    for group in groups:
        squares = sum(module.layers[module.keys[p.node.name]].weight.pow(2).reshape(group.width, -1).sum(dim=1)
                      + module.layers[module.keys[p.node.name]].bias.pow(2) for p in group.producers)
        expected += float(torch.sqrt(squares).sum().detach())
    assert len(stream.producers) == 2
    assert float(group_lasso(module, groups, 0.5)(module).detach()) == pytest.approx(0.5 * expected, rel=1e-5)


def test_rounds_narrow_every_group_to_the_ratio_and_the_file_runs(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 1, 8, 8)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    torch.manual_seed(0)
    config = ChannelPruneConfig(ratio=0.5, steps=2, lasso_epochs=1, finetune_epochs=1, calibration=16)
    out = tmp_path / "p.onnx"
    compress_trained(Residual(), make_loader(x, y, 16, True), (1, 8, 8), out, config, progress=False)
    model = onnx.load(str(out))
    assert _conv_widths(model) == [8, 8, 8]  # 16 → 12 → 8 (nearest multiple of 8 each round), stream tied
    import onnxruntime as ort

    logits = ort.InferenceSession(str(out)).run(None, {model.graph.input[0].name: x[:4]})[0]
    assert logits.shape == (4, 3) and np.isfinite(logits).all()


def test_the_cli_prunes_a_users_onnx_and_reports_params_and_accuracy(tmp_path):
    out, dense = tmp_path / "c.onnx", tmp_path / "d.onnx"
    done = subprocess.run([sys.executable, "-m", "pimc", "export", "channel-prune", "--model", str(BUNDLED), "--data",
                           "digits", "-o", str(out), "--dense-output", str(dense), "--steps", "1", "--lasso-epochs",
                           "1", "--finetune-epochs", "1", "--train-limit", "256", "--threads", "1", "--no-progress",
                           "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["pruned"]["params"] < summary["dense"]["params"]
    assert summary["pruned"]["macs"] < summary["dense"]["macs"]
    assert 0.0 <= summary["pruned"]["accuracy"] <= 1.0
    original = onnx.load(str(BUNDLED))
    written = onnx.load(str(out))
    assert [i.name for i in written.graph.input] == [i.name for i in original.graph.input]  # the user's names


def test_export_onnx_of_a_pruned_module_round_trips(tmp_path):
    torch.manual_seed(0)
    module = OnnxModule(as_onnx(Residual().eval(), (1, 8, 8)))
    path = export_onnx(module, tmp_path / "m.onnx", (1, 8, 8))
    assert _conv_widths(onnx.load(str(path))) == [16, 16, 16]
