"""Hyper-parameters of the ADMM-NN pruning exporter, torch-free so that ``pimc export prune`` takes its
option defaults from here (the library dataclass is the single source of the CLI's defaults)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...compiler.errors import PimcError
from ...compiler.method import Method
from ...compiler.settings import setting
from ...models.admm_config import AdmmPenalty
from ...models.augment_config import AugmentFields
from .masks import parse_nm

SCOPES = ("erk", "global", "layer")
QUANTIZE_SCALES = ("channel", "layer")


@dataclass
class PruneConfig:
    """What to prune and how hard (see ``exporter``'s module docstring)."""

    ratio: float = setting(85.0, "Compression of the pruned layers' non-zero weights (dense / kept).")
    scope: str = setting("erk", "erk: per-layer density ∝ Σdims/Πdims; global: one threshold on |w|/rms(layer); "
                         "layer: the same sparsity in every layer.", choices=SCOPES)
    conv_weight: float = setting(8.0, "erk / global: convs get this many times an FC layer's share (convs before FC).")
    nm: str = setting("", "N:M sparsity instead of --ratio, e.g. 2:4.")
    include: tuple[str, ...] = setting((), "Only prune Conv2d/Linear modules matching this glob (repeatable).")
    exclude: tuple[str, ...] = setting((), "Do not prune modules matching this glob (repeatable).")
    shrink: bool = setting(True, "Remove the channels pruning left dead (no weights in or out) from the export, "
                           "exactly.")

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
class PruneSchedule(AdmmPenalty, AugmentFields):
    """ADMM, progressive steps, masked retraining and the optional ADMM quantization of the survivors."""

    admm_epochs: int = setting(10, "ADMM epochs per round.")
    retrain_epochs: int = setting(10, "Masked retraining epochs per round.")
    steps: int = setting(5, "Progressive ADMM: raise the ratio geometrically over this many ADMM + retrain rounds.")
    lr: float = setting(2e-3, "Learning rate of ADMM / retraining.", cli="prune-lr")
    quantize_bits: int | None = setting(None, "Jointly quantize the surviving weights to N bits (ADMM, levels ±i·q) "
                                        "and export QDQ.")
    quantize_epochs: int = setting(6, "ADMM quantization epochs (and as many bias-retraining epochs).")
    act_bits: int = setting(8, "Activation bits of the QDQ export (with --quantize-bits).")
    quantize_scale: str = setting("channel", "With --quantize-bits: one scale q per output channel, or per layer "
                                  "(ADMM-NN).", choices=QUANTIZE_SCALES)
    # random affine augmentation of every training batch (pre-training, ADMM, retraining; models/augment.py):
    # ±2 px shifts by default, scarce data (4,000 MNIST images) over-fits without it
    augment_shift: float = setting(2.0, "Random shift of every training batch, up to this many pixels (0: none).")
    augment_rotate: float = setting(0.0, "Random rotation of every training batch, up to this many degrees.")
    augment_scale: float = setting(0.0, "Random scaling of every training batch, up to this fraction (0.1 = ±10 %).")
    # knowledge distillation from the dense model during ADMM, masked retraining and quantization
    # (models/train.py distillation_loss)
    distill: float = setting(0.0, "Knowledge distillation weight α in [0, 1] from the dense model during ADMM, "
                             "masked retraining and quantization: (1 − α)·CE + α·T²·KL(dense ‖ pruned); 0: none.")
    distill_temperature: float = setting(4.0, "Softmax temperature T of --distill.")

    def check(self) -> None:
        super().check()
        if min(self.admm_epochs, self.retrain_epochs, self.quantize_epochs) < 0:
            raise PimcError("epochs must not be negative")
        if self.steps < 1:
            raise PimcError(f"--steps must be positive, got {self.steps}")
        if self.quantize_bits is not None and not 2 <= self.quantize_bits <= 8:
            raise PimcError(f"--quantize-bits must be in 2..8, got {self.quantize_bits}")
        if self.quantize_scale not in QUANTIZE_SCALES:
            raise PimcError(f"--quantize-scale must be one of {', '.join(QUANTIZE_SCALES)}, got {self.quantize_scale!r}")
        self.check_augment()
        if not 0.0 <= self.distill <= 1.0:
            raise PimcError(f"--distill must be in [0, 1], got {self.distill}")
        if not (math.isfinite(self.distill_temperature) and self.distill_temperature > 0):
            raise PimcError(f"--distill-temperature must be positive, got {self.distill_temperature}")


METHOD = Method("prune", (PruneConfig, PruneSchedule), "pimc.passes.prune.exporter:compress_trained")
