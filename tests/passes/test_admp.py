"""ADMP: the gradient reversal, the pseudo-labels' alignment, the ADMM projection onto hard channel masks, folding
the masks, and the CLI's four models on a domain pair that ships offline (tiny epochs)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from pimc.compiler.graph import get_initializer
from pimc.models.from_onnx import OnnxModule
from pimc.passes.channel.admp import ChannelMasks, _Reverse, aligned_pseudo_labels
from pimc.passes.channel.admp_config import AdmpConfig
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


def _masks(module: OnnxModule, onnx_model) -> ChannelMasks:
    return ChannelMasks(module, onnx_model, AdmpConfig(ratio=0.5, block=1), steps_per_epoch=1)


def test_the_projection_keeps_the_k_largest_soft_mask_entries_and_accumulates_the_dual():
    onnx_model = as_onnx(_model().eval(), (1, 6, 6))
    masks = _masks(OnnxModule(onnx_model), onnx_model)
    name = next(n for n, m in masks.masks.items() if m.weight.numel() == 8)
    assert masks.keep[name] == 4
    soft = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.05, 0.6])
    with torch.no_grad():
        masks.masks[name].weight.copy_(soft)
    masks.admm.u[name].zero_()
    masks.admm.after_step()  # one step per epoch: Z and U move
    assert masks.admm.z[name].tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert torch.allclose(masks.admm.u[name], soft - masks.admm.z[name])


def test_folded_hard_masks_zero_exactly_the_dropped_channels():
    onnx_model = as_onnx(_model().eval(), (1, 6, 6))
    module = OnnxModule(onnx_model)
    masks = _masks(module, onnx_model)
    x = torch.randn(2, 1, 6, 6)
    for name, mask in masks.masks.items():
        masks.admm.z[name] = torch.zeros_like(mask.weight.detach())
        masks.admm.z[name][: masks.keep[name]] = 1.0
    masks.harden()
    with torch.no_grad():
        masked = module(x)
    masks.fold()
    with torch.no_grad():
        assert torch.allclose(module(x), masked, atol=1e-6)  # folded into the producers, the hooks removed
    first = as_onnx(module, (1, 6, 6))
    weight = get_initializer(first.graph, next(n for n in first.graph.node if n.op_type == "Conv").input[1])
    assert (abs(weight[4:]).sum() == 0) and (abs(weight[:4]).sum() > 0)


def test_alignment_rescales_target_predictions_to_the_source_class_balance():
    # every target image leans to class 0; the source predicts both classes equally often
    target = torch.log(torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45]]))
    source = torch.log(torch.tensor([[0.95, 0.05], [0.05, 0.95]]))
    labels, kept = aligned_pseudo_labels(target, source, confidence=0.0)
    mean = torch.tensor([0.9 + 0.6 + 0.55, 0.1 + 0.4 + 0.45]) / 3
    aligned = torch.exp(target) * (torch.tensor([0.5, 0.5]) / mean)
    expected = (aligned / aligned.sum(1, keepdim=True)).argmax(1)
    assert labels.tolist() == expected.tolist() == [0, 1, 1]
    assert kept.all()
    _, strict = aligned_pseudo_labels(target, source, confidence=0.99)
    assert not strict.any()


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


def test_an_adaptation_epoch_covers_the_larger_domain_repeating_the_smaller_ones_batches():
    import numpy as np
    from torch.utils.data import DataLoader, TensorDataset

    from pimc.passes.channel.admp import Domains

    source = DataLoader(TensorDataset(torch.arange(10.0), torch.zeros(10)), batch_size=4)  # 3 batches
    domains = Domains(source, np.zeros((25, 1), np.float32))  # 25 target images: 7 batches of 4
    batches = list(domains.epoch())
    assert len(domains.epoch()) == len(batches) == 7
    assert torch.equal(batches[3][0], batches[0][0])  # the source started again
    assert len(Domains(source, np.zeros((5, 1), np.float32)).epoch()) == 3  # a smaller target: the source's epoch
