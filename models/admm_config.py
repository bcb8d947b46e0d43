"""The ADMM's own settings (``models/admm.py``), torch-free: the penalty ρ, its growth per update and how
often Z and U move. Each ADMM schedule (pattern, prune) extends this class with its epochs."""

from __future__ import annotations

from dataclasses import dataclass

from ..compiler.errors import PimcError
from ..compiler.settings import setting


@dataclass
class AdmmPenalty:
    rho: float = setting(1e-2, "Initial ADMM penalty ρ.")
    rho_growth: float = setting(1.3, "ρ multiplier per Z update.")
    update_every: int | None = setting(None, "Optimizer steps between Z/U updates (default: one epoch).", minimum=1)

    def check(self) -> None:
        if self.rho <= 0:
            raise PimcError(f"--rho must be positive, got {self.rho}")
        if not 1.0 <= self.rho_growth <= 10.0:
            raise PimcError(f"--rho-growth must be in [1, 10], got {self.rho_growth}")
        if self.update_every is not None and self.update_every < 1:
            raise PimcError(f"--update-every must be positive, got {self.update_every}")
