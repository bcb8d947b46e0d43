"""Random affine augmentation of training batches (models/augment.py) and its use in train_classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pimc.compiler.errors import PimcError
from pimc.models.augment import Augment
from pimc.models.train import make_loader, train_classifier

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _impulses(n: int, size: int = 15) -> torch.Tensor:
    x = torch.zeros(n, 1, size, size)
    x[:, 0, size // 2, size // 2] = 1.0
    return x


def _centres(x: torch.Tensor) -> torch.Tensor:
    """(n, 2) centre of mass (row, col) of each image."""
    h, w = x.shape[-2:]
    rows, cols = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
    mass = x.sum(dim=(1, 2, 3))
    return torch.stack([(x[:, 0] * rows).sum(dim=(1, 2)) / mass, (x[:, 0] * cols).sum(dim=(1, 2)) / mass], 1)


def test_inactive_augment_returns_the_batch_itself():
    x = torch.randn(4, 1, 8, 8)
    assert Augment()(x, torch.Generator().manual_seed(0)) is x


def test_shifts_move_each_image_by_at_most_the_range_and_differ_per_image():
    x = _impulses(200)
    out = Augment(shift=2.0)(x, torch.Generator().manual_seed(0))
    moved = _centres(out) - 7.0
    assert float(moved.abs().max()) <= 2.0 + 1e-4
    assert float(moved.abs().max()) > 1.5  # the range is used, not only sub-pixel jitter
    assert torch.unique(moved.round(decimals=3), dim=0).shape[0] > 100  # one draw per image
    assert torch.allclose(out.sum(dim=(1, 2, 3)), torch.ones(200), atol=1e-4)  # interior: mass kept


def test_border_padding_keeps_a_constant_background():
    x = torch.full((16, 1, 10, 10), -1.0)  # normalised MNIST background
    out = Augment(shift=3.0, rotate=15.0, scale=0.2)(x, torch.Generator().manual_seed(1))
    assert torch.allclose(out, x)


def test_rotation_turns_a_horizontal_bar():
    x = torch.zeros(64, 1, 21, 21)
    x[:, 0, 10, 3:18] = 1.0
    out = Augment(rotate=30.0)(x, torch.Generator().manual_seed(2))
    spread = out[:, 0].sum(dim=2)  # mass per row: a turned bar leaves row 10
    off_row = 1 - spread[:, 10] / spread.sum(dim=1)
    assert float(off_row.max()) > 0.5 and float(off_row.min()) >= 0.0


def test_same_seed_same_batch_and_bad_ranges_are_refused():
    x = torch.randn(8, 1, 12, 12)
    aug = Augment(shift=2.0, rotate=10.0)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.allclose(a, x)
    with pytest.raises(PimcError, match="augmentation"):
        Augment(scale=1.5).check()


def test_train_classifier_trains_on_augmented_batches():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 2)

        def forward(self, x):
            if self.training:
                seen.append(x.detach().clone())
            return self.fc(x.flatten(1))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 2, 32)
    loader = make_loader(x, y, 32, False, 0)
    train_classifier(Probe(), loader, 1, progress=False)
    assert torch.equal(seen[-1], torch.from_numpy(x))  # default: no augmentation
    train_classifier(Probe(), loader, 1, progress=False, augment=Augment(shift=2.0))
    assert seen[-1].shape == (32, 1, 8, 8) and not torch.allclose(seen[-1], torch.from_numpy(x))
