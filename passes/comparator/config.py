"""Settings of the comparator algorithm, torch-free: the substitution (``LBCConfig``, shared by the
``comparator-conv`` graph pass, ``LBConv2d`` and ``pimc export comparator``) and the exporter's training
(``LBCTraining``); ``pimc export comparator`` and ``pimc.compress(method="comparator")`` take their defaults
from here."""

from __future__ import annotations

from dataclasses import dataclass

from ...compiler.errors import PimcError
from ...compiler.method import Method
from ...compiler.settings import setting

TRAIN_WHAT = ("all", "pointwise")
VARIANTS = ("separable", "lbc")
COMPARATORS = ("binary", "relu")


@dataclass
class LBCTraining:
    """Training after the substitution: ``train="all"`` trains every parameter, ``"pointwise"`` only the
    LBC 1×1 weights (the rest keeps its weights: the user's trained ones, or a fresh initialisation)."""

    epochs: int = setting(20, "Training epochs after the substitution.")
    lr: float = setting(3e-3, "Adam learning rate (cosine decay).")
    train: str = setting("all", "Train every parameter, or only the LBC 1×1 weights (the rest keeps its weights).",
                         choices=TRAIN_WHAT)
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

    variant: str = setting("lbc", "Depthwise (CMPNET) or dense (LBCNN) anchor convs, for zoo models (cmpnet is "
                           "separable).", choices=VARIANTS)
    anchors: int = setting(0, "Anchors: per input channel (separable) or per layer (lbc); 0 = automatic (8 per "
                           "channel for cmpnet; k² per channel / Cin·k² per layer, at most --max-anchors, otherwise).")
    max_anchors: int = setting(2048, "Most automatic anchors per lbc layer.", minimum=1)
    density: float = setting(0.9, "Fraction of non-zero anchor weights.")
    comparator: str = setting("relu", "Comparison bit [a>0] (CMPNET) or ReLU (LBCNN) (cmpnet: binary).",
                              choices=COMPARATORS)
    min_kernel: int = setting(2, "Smallest kernel size replaced (1×1 convs stay).", minimum=1)


def auto_anchors(variant: str, cin: int, kernel: tuple[int, int], max_anchors: int = LBCConfig.max_anchors) -> int:
    """The automatic anchor count: per layer for lbc (Cin·k², capped), per input channel for separable (k²)."""
    kh, kw = kernel
    return min(cin * kh * kw, max_anchors) if variant == "lbc" else kh * kw


METHOD = Method("comparator", (LBCConfig, LBCTraining), "pimc.passes.comparator.exporter:compress_trained")
