"""Feature Regularization's settings and the names its ONNX files use (torch-free; the method: ``exporter.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...compiler.errors import PimcError

LEVEL_INPUT = "sparsity_level"
TABLE_NAME = "feature_reg.thresholds"
METADATA_KEY = "pimc.feature_reg"
PLACEMENTS = ("conv-input", "stream")  # where the gates sit (see the module docstring)


@dataclass
class FeatureRegConfig:
    """The regularizer, the levels and the fine-tuning schedule (CLI defaults are these)."""

    levels: tuple[float, ...] = (0.5, 0.6, 0.7, 0.75, 0.8)
    penalty: float = 0.5
    epochs: int = 14
    ramp: float = 0.4
    frozen_epochs: int = 0
    frozen_lr_scale: float = 0.1
    lr: float = 1e-3
    momentum: float = 0.1
    calibration: int = 512
    val_fraction: float = 0.15
    max_accuracy_drop: float = 1.0
    floor_z: float = 2.0
    placement: str = "conv-input"

    def check(self) -> None:
        if not self.levels:
            raise PimcError("--levels needs at least one target zero fraction")
        if any(not 0.0 <= s < 1.0 for s in self.levels):
            raise PimcError(f"--levels must be zero fractions in [0, 1), got {list(self.levels)}")
        if list(self.levels) != sorted(set(self.levels)):
            raise PimcError(f"--levels must be strictly increasing, got {list(self.levels)}")
        if self.penalty < 0:
            raise PimcError(f"--penalty must not be negative, got {self.penalty}")
        if self.epochs < 1 or self.frozen_epochs < 0:
            raise PimcError("--reg-epochs must be positive and --frozen-epochs not negative")
        if not 0.0 <= self.ramp <= 1.0:
            raise PimcError(f"--ramp must be in [0, 1], got {self.ramp}")
        if not 0.0 < self.val_fraction < 1.0:
            raise PimcError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        if self.calibration < 1:
            raise PimcError(f"--calibration must be positive, got {self.calibration}")
        if not 0.0 <= self.floor_z <= 10.0:
            raise PimcError(f"--floor-z must be in [0, 10], got {self.floor_z}")
        check_placement(self.placement)


def check_placement(placement: str) -> None:
    if placement not in PLACEMENTS:
        raise PimcError(f"--gate-placement must be one of {', '.join(PLACEMENTS)}, got '{placement}'")
