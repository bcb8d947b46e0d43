"""Seeded random affine augmentation of training batches (small shifts, rotations and scalings).

Each image of a batch gets its own transform, drawn uniformly: a translation of up to ``shift`` pixels in x
and y, a rotation of up to ``rotate`` degrees and a scaling by up to ``scale`` (fraction, 0.1 = ±10 %),
applied with bilinear resampling (``affine_grid`` + ``grid_sample``) and border padding, so a shifted image
is filled with its own edge values (the background on MNIST-like data) rather than with zeros, which after
normalisation are not the background. ``Augment()`` (all zero) leaves batches unchanged and costs nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..compiler.errors import PimcError


@dataclass(frozen=True)
class Augment:
    """Ranges of the random affine transform (0 disables that part)."""

    shift: float = 0.0  # pixels, each of x and y uniform in [-shift, shift]
    rotate: float = 0.0  # degrees, uniform in [-rotate, rotate]
    scale: float = 0.0  # fraction, uniform in [1 - scale, 1 + scale]

    @property
    def active(self) -> bool:
        return bool(self.shift or self.rotate or self.scale)

    def check(self) -> None:
        if self.shift < 0 or self.rotate < 0 or not 0 <= self.scale < 1:
            raise PimcError(f"augmentation needs shift >= 0, rotate >= 0 and 0 <= scale < 1, got {self}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A randomly transformed copy of the NCHW batch ``x`` (``x`` itself when inactive)."""
        if not self.active or x.ndim != 4:
            return x
        theta = self.matrices(x.shape[0], x.shape[-2], x.shape[-1], generator).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def matrices(self, n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """(n, 2, 3) ``affine_grid`` matrices mapping output to input coordinates in [-1, 1]."""
        u = torch.rand(n, 4, generator=generator) * 2 - 1
        angle = u[:, 0] * math.radians(self.rotate)
        zoom = 1 + u[:, 1] * self.scale
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        tx = u[:, 2] * self.shift * 2 / width  # one pixel is 2/W in normalised coordinates
        ty = u[:, 3] * self.shift * 2 / height
        return torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
