"""Feature Regularization's settings and the names its ONNX files use (torch-free; the method: ``exporter.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...compiler.errors import PimcError
from ...compiler.method import Method
from ...compiler.settings import setting

LEVEL_INPUT = "sparsity_level"
TABLE_NAME = "feature_reg.thresholds"
KEEP_NAME = "feature_reg.keep"
METADATA_KEY = "pimc.feature_reg"
PLACEMENTS = ("conv-input", "stream")  # where the gates sit (see the module docstring)
GATES = ("threshold", "topk", "image")  # what a gate zeroes (see the exporter's module docstring)


@dataclass
class FeatureRegConfig:
    """The regularizer, the levels and the fine-tuning schedule (CLI defaults are these)."""

    levels: tuple[float, ...] = setting((0.5, 0.6, 0.7, 0.75, 0.8), "Target zero fractions of the gated conv "
                                        "inputs, one threshold row each (increasing).")
    penalty: float = setting(0.5, "λ of the per-pixel channel-L1 / RMS penalty on the gated conv inputs.")
    epochs: int = setting(14, "Fine-tuning epochs with the penalty and batch-quantile gates.", cli="reg-epochs")
    ramp: float = setting(0.4, "Share of the regularized fine-tune over which the targets rise linearly from 0.")
    frozen_epochs: int = setting(0, "Fine-tuning epochs with the calibrated thresholds frozen (0: none).")
    frozen_lr_scale: float = setting(0.1, "Learning rate of the frozen-threshold epochs, as a fraction of --reg-lr.")
    lr: float = setting(1e-3, "Adam learning rate of fine-tuning.", cli="reg-lr")
    momentum: float = setting(0.1, "Momentum of the running thresholds while tracking batch quantiles.")
    calibration: int = setting(512, "Training images that calibrate the threshold table.")
    val_fraction: float = setting(0.15, "Seeded part of the training split held out (never trained on) to pick the "
                                  "default level.")
    max_accuracy_drop: float | None = setting(None, "Default level: the highest whose validation metric is within "
                                              "this of dense (default: 1 point of top-1; 0.1 dB of PSNR for "
                                              "image-to-image models).")
    floor_z: float = setting(2.0, "Calibrate each level this many standard errors (over the calibration images) "
                             "above its target, so unseen images still meet it; 0: the exact quantile.")
    placement: str = setting("conv-input", "conv-input: a gate in front of each conv; stream: one gate per map the "
                             "convs read, on its producer, so every reader (a residual Add too) and the stored map "
                             "are gated.", cli="gate-placement", choices=PLACEMENTS)
    gate: str = setting("threshold", "threshold: zero |x| below a per-layer threshold calibrated on training images "
                        "(the zeros follow the image content); topk: keep the ⌊(1 − level)·C⌋ largest |x| of the C "
                        "channels at each pixel (every pixel of every image meets the level); image: keep the ⌊(1 − level)·L⌋ "
                        "largest |x| of each image's whole map of L values (every image meets the level, the "
                        "pixels share it by content).", choices=GATES)

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
        check_gate(self.gate)


def check_gate(gate: str) -> None:
    if gate not in GATES:
        raise PimcError(f"--gate must be one of {', '.join(GATES)}, got '{gate}'")


def check_placement(placement: str) -> None:
    if placement not in PLACEMENTS:
        raise PimcError(f"--gate-placement must be one of {', '.join(PLACEMENTS)}, got '{placement}'")


METHOD = Method("feature-reg", (FeatureRegConfig,), "pimc.passes.feature_reg.exporter:compress_trained")
