"""The ADMM / retraining schedule of the pattern exporter, torch-free so that ``pimc export pattern`` takes
its option defaults from here (the library dataclass is the single source of the CLI's defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from ...compiler.errors import PimcError

MODES = ("admm", "oneshot")  # ADMM then masked retraining, or one projection then fine-tuning


@dataclass
class AdmmSchedule:
    """Training schedule of the ADMM and masked-retraining phases."""

    admm_epochs: int = 20
    retrain_epochs: int = 20
    rho: float = 5e-2
    rho_growth: float = 1.5
    update_every: int | None = None
    lr: float = 2e-3

    def check(self) -> None:
        if self.admm_epochs < 0 or self.retrain_epochs < 0:
            raise PimcError("epochs must not be negative")
        if self.rho <= 0:
            raise PimcError(f"rho must be positive, got {self.rho}")
        if not 1.0 <= self.rho_growth <= 10.0:
            raise PimcError(f"rho growth must be in [1, 10], got {self.rho_growth}")
        if self.update_every is not None and self.update_every < 1:
            raise PimcError(f"update_every must be positive, got {self.update_every}")
