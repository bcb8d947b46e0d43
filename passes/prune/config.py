"""Hyper-parameters of the ADMM-NN pruning exporter, torch-free so that ``pimc export prune`` takes its
option defaults from here (the library dataclass is the single source of the CLI's defaults)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...compiler.errors import PimcError
from .masks import parse_nm

SCOPES = ("erk", "global", "layer")
QUANTIZE_SCALES = ("channel", "layer")


@dataclass
class PruneConfig:
    """What to prune and how hard (see ``exporter``'s module docstring)."""

    ratio: float = 85.0  # whole-model compression of the pruned layers' non-zeros (1 / density)
    scope: str = "erk"  # erk: ERK share per layer; global: one normalised threshold; layer: same everywhere
    conv_weight: float = 8.0  # erk / global: convs get this many times the share of an FC layer
    nm: str = ""  # N:M instead of a ratio, e.g. "2:4"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    shrink: bool = True  # remove the channels pruning left dead from the export (exact; see ``exporter``)

    @property
    def density(self) -> float:
        return 1.0 / self.ratio

    def check(self) -> None:
        if self.ratio < 1.0:
            raise PimcError(f"--ratio must be at least 1, got {self.ratio}")
        if self.scope not in SCOPES:
            raise PimcError(f"--scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if self.conv_weight <= 0:
            raise PimcError(f"--conv-weight must be positive, got {self.conv_weight}")
        try:
            parse_nm(self.nm)
        except ValueError as exc:
            raise PimcError(f"--nm: {exc}") from None


@dataclass
class PruneSchedule:
    """ADMM, progressive steps, masked retraining and the optional ADMM quantization of the survivors."""

    admm_epochs: int = 10  # per ADMM step
    retrain_epochs: int = 10  # masked retraining after each step
    steps: int = 5  # progressive mode: > 1 raises the ratio geometrically over this many ADMM steps
    rho: float = 1e-2
    rho_growth: float = 1.3
    update_every: int | None = None  # Z/U updates every this many steps (default: once per epoch)
    lr: float = 2e-3
    quantize_bits: int | None = None
    quantize_epochs: int = 6  # ADMM quantization epochs (then biases are retrained for as many)
    act_bits: int = 8
    quantize_scale: str = "channel"  # channel: one q per output channel; layer: one q per layer (ADMM-NN)
    # random affine augmentation of every training batch (pre-training, ADMM, retraining; models/augment.py):
    # ±2 px shifts by default, scarce data (4,000 MNIST images) over-fits without it
    augment_shift: float = 2.0
    augment_rotate: float = 0.0
    augment_scale: float = 0.0
    # knowledge distillation from the dense model during ADMM, masked retraining and quantization
    # (models/train.py distillation_loss): loss = (1 − α)·CE + α·T²·KL(teacher ‖ student) at temperature T
    distill: float = 0.0
    distill_temperature: float = 4.0

    def augment(self):
        """The ``models.augment.Augment`` of these fields (imported here: this module stays torch-free)."""
        from ...models.augment import Augment

        return Augment(self.augment_shift, self.augment_rotate, self.augment_scale)

    def check(self) -> None:
        if min(self.admm_epochs, self.retrain_epochs, self.quantize_epochs) < 0:
            raise PimcError("epochs must not be negative")
        if self.steps < 1:
            raise PimcError(f"--steps must be positive, got {self.steps}")
        if self.rho <= 0:
            raise PimcError(f"--rho must be positive, got {self.rho}")
        if not 1.0 <= self.rho_growth <= 10.0:
            raise PimcError(f"--rho-growth must be in [1, 10], got {self.rho_growth}")
        if self.quantize_bits is not None and not 2 <= self.quantize_bits <= 8:
            raise PimcError(f"--quantize-bits must be in 2..8, got {self.quantize_bits}")
        if self.quantize_scale not in QUANTIZE_SCALES:
            raise PimcError(f"--quantize-scale must be one of {', '.join(QUANTIZE_SCALES)}, got {self.quantize_scale!r}")
        if self.augment_shift < 0 or self.augment_rotate < 0 or not 0 <= self.augment_scale < 1:
            raise PimcError("--augment-shift and --augment-rotate must be >= 0, --augment-scale in [0, 1)")
        if not 0.0 <= self.distill <= 1.0:
            raise PimcError(f"--distill must be in [0, 1], got {self.distill}")
        if not (math.isfinite(self.distill_temperature) and self.distill_temperature > 0):
            raise PimcError(f"--distill-temperature must be positive, got {self.distill_temperature}")
        if self.update_every is not None and self.update_every < 1:
            raise PimcError(f"update_every must be positive, got {self.update_every}")
