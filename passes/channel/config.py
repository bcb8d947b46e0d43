"""Settings of the training-aware channel pruning exporter (torch-free; the method: ``exporter.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...compiler.errors import PimcError
from ...compiler.method import Method
from ...compiler.settings import setting


@dataclass
class ChannelPruneConfig:
    """How many channels go, in how many rounds, and the training around each round."""

    ratio: float = setting(0.5, "Fraction of every channel group's channels removed in the end.")
    steps: int = setting(3, "Rounds of group lasso + pruning + fine-tuning; each keeps the same fraction of the "
                         "channels, so the kept fraction falls geometrically to 1 − ratio.")
    block: int = setting(8, "Keep a multiple of this many channels per group (onnxruntime's CPU block: 8 with "
                         "AVX2, 16 with AVX-512).", minimum=1)
    penalty: float = setting(1e-4, "λ of the group-lasso penalty on the channel norms (all producers of a "
                             "group together) before each pruning round; 0: none.")
    lasso_epochs: int = setting(2, "Epochs with the group-lasso penalty before each pruning round.")
    finetune_epochs: int = setting(3, "Fine-tuning epochs of the narrowed model after each pruning round.")
    lr: float = setting(1e-3, "Adam learning rate of the group-lasso and fine-tuning epochs.", cli="prune-lr")
    distill: float = setting(0.5, "Weight of the distillation loss from the unpruned model while fine-tuning "
                             "(0: labels only).")
    calibration: int = setting(64, "Training images that refit the readers of the removed channels.")

    def check(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            raise PimcError(f"--ratio must be in (0, 1), got {self.ratio}")
        if self.steps < 1:
            raise PimcError(f"--steps must be positive, got {self.steps}")
        if self.penalty < 0 or self.lasso_epochs < 0 or self.finetune_epochs < 0:
            raise PimcError("--penalty, --lasso-epochs and --finetune-epochs must not be negative")
        if not 0.0 <= self.distill <= 1.0:
            raise PimcError(f"--distill must be in [0, 1], got {self.distill}")
        if self.calibration < 1:
            raise PimcError(f"--calibration must be positive, got {self.calibration}")

    @property
    def step_ratio(self) -> float:
        """The fraction of the current channels each round removes."""
        return 1.0 - (1.0 - self.ratio) ** (1.0 / self.steps)


METHOD = Method("channel-prune", (ChannelPruneConfig,), "pimc.passes.channel.exporter:compress_trained")
