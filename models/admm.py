"""ADMM for constrained training (ADMM-NN; docs/sources.md): one iteration serves every projection.

To minimise f(W) subject to W ∈ S, training minimises

    f(W) + ρ/2 · Σ_layers ‖W − Z + U‖²                         (``Admm.penalty``)

and every ``every`` optimizer steps (``Admm.after_step``) the auxiliary and the scaled dual variables move:

    Z ← Proj_S(W + U)          U ← U + W − Z          ρ ← ρ · growth,  U ← U / growth

The last rescaling keeps the unscaled dual ρU unchanged when ρ grows (U is the dual scaled by 1/ρ); with
``growth = 1`` it is the original fixed-ρ iteration. The projection is the algorithm's only part:
pattern pruning projects each kernel onto its library pattern, pruning keeps the largest magnitudes, and
quantization snaps to the nearest level ±i·q. ``trace`` records ρ and the primal residual ‖W − Z‖/‖W‖ of
every update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

Projection = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass
class PrunedLayer:
    """One layer under a pruning constraint: its module, the 0/1 mask set by the hard projection, and for a
    pattern-pruned conv its pattern library."""

    name: str
    module: nn.Module
    mask: torch.Tensor | None = None
    library: list[list[int]] = field(default_factory=list)

    @property
    def is_conv(self) -> bool:
        return isinstance(self.module, nn.Conv2d)

    @torch.no_grad()
    def apply_mask(self) -> None:
        """Zero the pruned weights again (after an optimizer step)."""
        if self.mask is not None:
            self.module.weight.mul_(self.mask)


@dataclass
class PruningResult:
    """What an ADMM pruning run did: the pruned layers, the modules it skipped (with the reason) and the
    per-update trace; each algorithm's result adds its own summary."""

    layers: dict[str, PrunedLayer]
    skipped: list[dict[str, str]]
    config: Any
    trace: list[dict[str, float]] = field(default_factory=list)

    def layer_summary(self, describe: Callable[[torch.Tensor], dict[str, Any]]) -> dict[str, Any]:
        """``{"layers": {name: describe(weight)}, "skipped": ..., "trace": ...}``."""
        layers = {name: describe(layer.module.weight.detach()) for name, layer in self.layers.items()}
        return {"layers": layers, "skipped": self.skipped, "trace": self.trace}


class Admm:
    """Z, U and ρ for the weights of ``modules`` (name → a module with a ``weight``) under ``project``."""

    def __init__(self, modules: dict[str, nn.Module], project: Projection, rho: float, growth: float, every: int,
                 trace: list[dict[str, float | str]] | None = None, label: str | None = None,
                 each_step: Callable[[], None] | None = None):
        self.modules, self.project = modules, project
        self.rho, self.growth, self.every = rho, growth, max(1, every)
        self.trace = trace if trace is not None else []
        self.label, self.each_step = label, each_step
        self.steps = 0
        weights = self._weights()
        self.z = project(weights)
        self.u = {n: torch.zeros_like(w) for n, w in weights.items()}

    def _weights(self) -> dict[str, torch.Tensor]:
        return {n: m.weight.detach() for n, m in self.modules.items()}

    def penalty(self, _model: nn.Module | None = None) -> torch.Tensor:
        total = sum((m.weight - self.z[n] + self.u[n]).pow(2).sum() for n, m in self.modules.items())
        return 0.5 * self.rho * total

    def after_step(self, _model: nn.Module | None = None) -> None:
        if self.each_step is not None:
            self.each_step()
        self.steps += 1
        if self.steps % self.every == 0:
            self.update()

    @torch.no_grad()
    def update(self) -> None:
        weights = self._weights()
        self.z = self.project({n: w + self.u[n] for n, w in weights.items()})
        residual = norm = 0.0
        for n, w in weights.items():
            self.u[n] = (self.u[n] + w - self.z[n]) / self.growth
            residual += float((w - self.z[n]).pow(2).sum())
            norm += float(w.pow(2).sum())
        entry: dict[str, float | str] = {"step": self.steps, "rho": self.rho,
                                         "primal_residual": (residual / max(norm, 1e-30)) ** 0.5}
        if self.label is not None:
            entry = {"phase": self.label, **entry}
        self.trace.append(entry)
        self.rho *= self.growth

    @torch.no_grad()
    def residual(self) -> float:
        """‖W − Proj_S(W)‖ / ‖W‖ over every layer: how far the weights are from the set."""
        weights = self._weights()
        projected = self.project(weights)
        num = sum(float((w - projected[n]).pow(2).sum()) for n, w in weights.items())
        den = sum(float(w.pow(2).sum()) for w in weights.values())
        return (num / max(den, 1e-30)) ** 0.5


def per_layer(project_one: Callable[[str, torch.Tensor], torch.Tensor]) -> Projection:
    """A projection that acts on each layer alone (``project_one(name, values)``)."""
    return lambda values: {n: project_one(n, v) for n, v in values.items()}
