"""Settings of pattern pruning, torch-free: the patterns (``PatternConfig``, shared by the graph pass and the
exporter) and the exporter's ADMM / retraining schedule (``AdmmSchedule``); ``pimc export pattern`` takes its
option defaults from here."""

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


def default_nonzeros(k: int) -> int:
    """PatDNN keeps 4 of 9; other kernel sizes keep the same fraction."""
    return 4 if k == 3 else max(1, round(4 * k * k / 9))


@dataclass(frozen=True)
class PatternConfig:
    """Settings shared by the graph pass and the training-aware exporter."""

    patterns: int = 8
    nonzeros: int = 0
    connectivity: float = 0.0
    library: str = "derived"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def nonzeros_for(self, k: int) -> int:
        return min(self.nonzeros, k * k) if self.nonzeros else default_nonzeros(k)

    def check(self) -> None:
        if self.patterns < 1:
            raise PimcError(f"--patterns must be positive, got {self.patterns}")
        if self.nonzeros < 0:
            raise PimcError(f"--nonzeros must not be negative, got {self.nonzeros}")
        if not 0.0 <= self.connectivity < 1.0:
            raise PimcError(f"--connectivity must be in [0, 1), got {self.connectivity}")
