"""Settings of pattern pruning, torch-free: the patterns (``PatternConfig``, shared by the graph pass and the
exporter) and the exporter's ADMM / retraining schedule (``AdmmSchedule``); ``pimc export pattern`` takes its
option defaults from here."""

from __future__ import annotations

from dataclasses import dataclass

from ...compiler.errors import PimcError
from ...compiler.method import Method
from ...compiler.settings import setting
from ...models.admm_config import AdmmPenalty

LIBRARIES = ("derived", "greedy", "canonical")  # PatDNN frequency, max kept energy, fixed set
MODES = ("admm", "oneshot")  # ADMM then masked retraining, or one projection then fine-tuning


@dataclass
class AdmmSchedule(AdmmPenalty):
    """Training schedule of the ADMM and masked-retraining phases."""

    rho: float = setting(5e-2, "Initial ADMM penalty ρ.")
    rho_growth: float = setting(1.5, "ρ multiplier per Z update.")
    admm_epochs: int = setting(20, "ADMM epochs (admm mode).")
    retrain_epochs: int = setting(20, "Masked retraining / fine-tuning epochs.")
    lr: float = setting(2e-3, "Learning rate of ADMM / retraining.", cli="prune-lr")
    mode: str = setting("admm", "admm: ADMM then masked retraining; oneshot: one projection then fine-tuning.",
                        choices=MODES)

    def check(self) -> None:
        super().check()
        if self.admm_epochs < 0 or self.retrain_epochs < 0:
            raise PimcError("epochs must not be negative")
        if self.mode not in MODES:
            raise PimcError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")


def default_nonzeros(k: int) -> int:
    """PatDNN keeps 4 of 9; other kernel sizes keep the same fraction."""
    return 4 if k == 3 else max(1, round(4 * k * k / 9))


@dataclass(frozen=True)
class PatternConfig:
    """Settings shared by the graph pass and the training-aware exporter."""

    patterns: int = setting(8, "Library size per layer.")
    nonzeros: int = setting(0, "Weights kept per kernel (0: 4 for 3x3, round(4k²/9) otherwise, 11 for 5x5).")
    connectivity: float = setting(0.0, "Fraction of kernels removed per layer.")
    library: str = setting("derived", "derived (PatDNN frequency), greedy (max kept energy) or canonical.",
                           choices=LIBRARIES)
    include: tuple[str, ...] = setting((), "Only prune conv modules matching this glob (repeatable).")
    exclude: tuple[str, ...] = setting((), "Do not prune conv modules matching this glob (repeatable).")

    def nonzeros_for(self, k: int) -> int:
        return min(self.nonzeros, k * k) if self.nonzeros else default_nonzeros(k)

    def check(self) -> None:
        if self.patterns < 1:
            raise PimcError(f"--patterns must be positive, got {self.patterns}")
        if self.nonzeros < 0:
            raise PimcError(f"--nonzeros must not be negative, got {self.nonzeros}")
        if not 0.0 <= self.connectivity < 1.0:
            raise PimcError(f"--connectivity must be in [0, 1), got {self.connectivity}")


METHOD = Method("pattern", (PatternConfig, AdmmSchedule), "pimc.passes.pattern.admm:compress_trained")
