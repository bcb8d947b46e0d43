"""The one ADMM iteration, checked step by step against hand-computed values with a pruning projection
(keep the largest magnitude) and a quantization projection (nearest multiple of q)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pimc.models.admm import Admm, per_layer


def _layer(values: list[float]) -> nn.Linear:
    layer = nn.Linear(len(values), 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([values]))
    return layer


def _keep_largest(values: torch.Tensor) -> torch.Tensor:
    return torch.where(values.abs() == values.abs().max(), values, torch.zeros_like(values))


def _round_to_half(values: torch.Tensor) -> torch.Tensor:
    return torch.round(values / 0.5) * 0.5


def test_pruning_step_by_hand():
    layer = _layer([3.0, -1.0, 0.5])
    admm = Admm({"fc": layer}, per_layer(lambda _n, v: _keep_largest(v)), rho=2.0, growth=2.0, every=1)
    assert admm.z["fc"].tolist() == [[3.0, 0.0, 0.0]] and admm.u["fc"].tolist() == [[0.0, 0.0, 0.0]]
    # penalty = ρ/2 ‖W − Z + U‖² = 1 · (0 + 1 + 0.25)
    assert float(admm.penalty().detach()) == pytest.approx(1.25)
    admm.after_step()  # Z ← Proj(W + U) = [3, 0, 0]; U ← (U + W − Z) / 2 = [0, −0.5, 0.25]; ρ ← 4
    assert admm.z["fc"].tolist() == [[3.0, 0.0, 0.0]]
    assert admm.u["fc"].tolist() == [[0.0, -0.5, 0.25]]
    assert admm.rho == 4.0
    assert admm.trace[-1]["rho"] == 2.0
    assert admm.trace[-1]["primal_residual"] == pytest.approx((1.25 / 10.25) ** 0.5)
    # penalty = 4/2 · ‖[0, −1.5, 0.75]‖² = 2 · 2.8125
    assert float(admm.penalty().detach()) == pytest.approx(5.625)


def test_quantization_step_by_hand():
    layer = _layer([0.7, -0.2])
    admm = Admm({"fc": layer}, per_layer(lambda _n, v: _round_to_half(v)), rho=1.0, growth=1.0, every=2,
                label="quantize")
    assert admm.z["fc"].tolist() == [[0.5, 0.0]]
    admm.after_step()
    assert not admm.trace  # every 2 steps
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.9, -0.3]]))
    admm.after_step()  # Z ← round([0.9, −0.3]) = [1.0, −0.5]; U ← [−0.1, 0.2]; ρ stays 1
    assert admm.z["fc"].tolist() == [[1.0, -0.5]]
    assert admm.u["fc"] == pytest.approx(torch.tensor([[-0.1, 0.2]]))
    assert admm.trace[-1]["phase"] == "quantize" and admm.rho == 1.0
    assert admm.residual() == pytest.approx(((0.1**2 + 0.2**2) / (0.81 + 0.09)) ** 0.5)


def test_each_step_runs_before_the_update():
    layer = _layer([1.0, 2.0])
    seen = []
    admm = Admm({"fc": layer}, per_layer(lambda _n, v: v), rho=1.0, growth=1.0, every=1,
                each_step=lambda: seen.append(len(seen)))
    admm.after_step()
    admm.after_step()
    assert seen == [0, 1] and len(admm.trace) == 2
