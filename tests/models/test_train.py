"""The one training loop: the hooks run in their order, the learning rate follows the cosine schedule."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pimc.models.train import Hooks, run_training


def test_hooks_run_in_order_and_the_learning_rate_follows_the_cosine():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    loader = DataLoader(TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,))), batch_size=4)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    events, rates = [], []

    def loss(x, y):
        events.append("loss")
        rates.append(opt.param_groups[0]["lr"])
        return nn.functional.cross_entropy(model(x), y)

    hooks = Hooks(loss, after_backward=lambda: events.append("backward"),
                  after_step=lambda: events.append(f"step:{torch.is_grad_enabled()}"),
                  epoch_start=lambda e: events.append(f"start{e}"), epoch_end=lambda e: events.append(f"end{e}"))
    history = run_training(opt, loader, 2, hooks, progress=False)
    assert len(history) == 2
    assert events[:5] == ["start0", "loss", "backward", "step:False", "loss"] and events[-1] == "end1"
    assert rates == pytest.approx([1.0, 0.5 * (1 + 0.7071067811865476), 0.5, 0.5 * (1 - 0.7071067811865476)])
