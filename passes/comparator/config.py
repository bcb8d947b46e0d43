"""Settings of the comparator algorithm, torch-free: the substitution (``LBCConfig``, shared by the
``comparator-conv`` graph pass, ``LBConv2d`` and ``pimc export comparator``) and the exporter's training
(``LBCTraining``); ``pimc export comparator`` and ``pimc.compress(method="comparator")`` take their defaults
from here."""

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


@dataclass(frozen=True)
class LBCConfig:
    """Defaults of LBC substitution, the single source for the comparator-conv pass, ``LBConv2d`` /
    ``replace_convs`` and ``pimc export comparator`` (LBCNN: dense anchors, ReLU, ± pairs).

    ``anchors`` = 0 means automatic: Cin·k² per layer (lbc) or k² per input channel (separable), at most
    ``max_anchors`` per layer for lbc. CMPNET (``build_cmpnet``) keeps its own defaults: separable,
    8 anchors per channel, binary comparator."""

    variant: str = "lbc"
    anchors: int = 0
    max_anchors: int = 2048
    density: float = 0.9
    comparator: str = "relu"
    min_kernel: int = 2


def auto_anchors(variant: str, cin: int, kernel: tuple[int, int], max_anchors: int = LBCConfig.max_anchors) -> int:
    """The automatic anchor count: per layer for lbc (Cin·k², capped), per input channel for separable (k²)."""
    kh, kw = kernel
    return min(cin * kh * kw, max_anchors) if variant == "lbc" else kh * kw
