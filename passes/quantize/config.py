"""Hyper-parameters of quantization-aware exporting, torch-free so that ``pimc export quantize`` takes its
option defaults from here (the library dataclass is the single source of the CLI's defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from ...compiler.errors import PimcError
from ...compiler.method import Method
from ...compiler.settings import setting

QAT_MODES = ("qat", "admm")


@dataclass
class QatConfig:
    """What ``qat.quantize_trained`` does to a trained float model (see :mod:`.qat`).

    ``act_bits`` None = ``bits``; ``quant_epochs`` / ``quant_lr``: the STE or ADMM training;
    ``rho`` / ``rho_growth`` / ``retrain_epochs``: ADMM only (bias retraining after the projection);
    ``calibration_samples``: training images calibrating the activation ranges of the export (admm, and
    the post-training comparison)."""

    bits: int = setting(8, "Weight bit width (2-8).")
    act_bits: int | None = setting(None, "Activation bit width (default: --bits).")
    mode: str = setting("qat", "STE quantization-aware training or ADMM quantization.", choices=QAT_MODES)
    quant_epochs: int = setting(10, "QAT / ADMM epochs.")
    quant_lr: float = setting(1e-3, "QAT / ADMM learning rate.")
    rho: float = setting(1e-2, "ADMM penalty ρ (initial).")
    rho_growth: float = setting(1.3, "ρ multiplier per ADMM update.")
    retrain_epochs: int = setting(2, "ADMM: epochs retraining biases after the final projection.")
    calibration_samples: int = setting(256, "Training images that calibrate the activation ranges.")
    seed: int = 0
    progress: bool = True

    @property
    def activation_bits(self) -> int:
        return self.act_bits or self.bits

    def check(self) -> None:
        if not 2 <= self.bits <= 8 or not 2 <= self.activation_bits <= 8:
            raise PimcError("--bits and --act-bits must lie between 2 and 8")
        if self.mode not in QAT_MODES:
            raise PimcError(f"--mode must be one of {', '.join(QAT_MODES)}, got {self.mode!r}")
        if self.calibration_samples < 1:
            raise PimcError(f"--calibration-samples must be positive, got {self.calibration_samples}")
        if self.quant_epochs < 1 or self.retrain_epochs < 0:
            raise PimcError("--quant-epochs must be positive and --retrain-epochs non-negative")


METHOD = Method("quantize", (QatConfig,), "pimc.passes.quantize.qat:compress_trained")
