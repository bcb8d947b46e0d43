"""ADMP: the gradient reversal, the ADMM projection onto hard channel masks, folding the masks, and the CLI's
four models on a domain pair that ships offline (tiny epochs)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from pimc.compiler.graph import get_initializer
from pimc.models.from_onnx import OnnxModule
from pimc.passes.channel.admp import ChannelMasks, _Reverse
from pimc.passes.channel.exporter import as_onnx

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 10, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(10, 3))


def test_the_gradient_reversal_is_the_identity_forward_and_flips_the_gradient_backward():
    x = torch.randn(4, requires_grad=True)
    y = _Reverse.apply(x, 0.5)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.full((4,), -0.5))


def test_the_projection_keeps_the_k_largest_soft_mask_entries_and_accumulates_the_dual():
    onnx_model = as_onnx(_model().eval(), (1, 6, 6))
    module = OnnxModule(onnx_model)
    masks = ChannelMasks(module, onnx_model, ratio=0.5, block=1)
    group = next(g for g in masks.groups if g["soft"].numel() == 8)
    assert group["keep"] == 4
    with torch.no_grad():
        group["soft"].copy_(torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.05, 0.6]))
        group["dual"].zero_()
    masks.project()
    assert group["hard"].tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert torch.allclose(group["dual"], group["soft"] - group["hard"])


def test_folded_hard_masks_zero_exactly_the_dropped_channels():
    onnx_model = as_onnx(_model().eval(), (1, 6, 6))
    module = OnnxModule(onnx_model)
    masks = ChannelMasks(module, onnx_model, ratio=0.5, block=1)
    x = torch.randn(2, 1, 6, 6)
    for g in masks.groups:
        g["hard"] = torch.zeros_like(g["soft"])
        g["hard"][: g["keep"]] = 1.0
    masks.harden()
    with torch.no_grad():
        masked = module(x)
    masks.fold()
    with torch.no_grad():
        assert torch.allclose(module(x), masked, atol=1e-6)  # folded into the producers, the hooks removed
    first = as_onnx(module, (1, 6, 6))
    weight = get_initializer(first.graph, next(n for n in first.graph.node if n.op_type == "Conv").input[1])
    assert (abs(weight[4:]).sum() == 0) and (abs(weight[:4]).sum() > 0)


def test_the_cli_reports_source_only_adapted_admp_and_the_baseline(tmp_path):
    out = tmp_path / "a.onnx"
    done = subprocess.run([sys.executable, "-m", "pimc", "export", "admp", "--model", "lenet5_caffe", "--data", "mnist",
                           "--target-data", "digits", "-o", str(out), "--epochs", "1", "--adapt-epochs", "1",
                           "--admm-epochs", "1", "--finetune-epochs", "1", "--train-limit", "200", "--threads", "1",
                           "--no-progress", "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert set(summary["models"]) == {"source-only", "adapted", "admp", "prune-then-adapt"}
    assert summary["channels_removed"] == pytest.approx(0.6, abs=0.02)
    assert summary["models"]["admp"]["conv_channels"] == summary["models"]["prune-then-adapt"]["conv_channels"]
    assert out.exists()
