"""Training settings of the comparator exporter, torch-free so that ``pimc export comparator`` and
``pimc.compress(method="comparator")`` take their defaults from here (the substitution itself is
``comparator_conv.LBCConfig``, shared with the ``comparator-conv`` graph pass)."""

from __future__ import annotations

from dataclasses import dataclass

from ...compiler.errors import PimcError

TRAIN_WHAT = ("all", "pointwise")


@dataclass
class LBCTraining:
    """Training after the substitution: ``train="all"`` trains every parameter, ``"pointwise"`` only the
    LBC 1×1 weights (the rest keeps its weights: the user's trained ones, or a fresh initialisation)."""

    epochs: int = 20
    lr: float = 3e-3
    train: str = "all"
    seed: int = 0
    progress: bool = True

    def check(self) -> None:
        if self.epochs < 1:
            raise PimcError(f"--epochs must be positive, got {self.epochs}")
        if self.train not in TRAIN_WHAT:
            raise PimcError(f"--train must be one of {', '.join(TRAIN_WHAT)}, got {self.train!r}")
