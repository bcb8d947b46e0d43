"""Settings of the ADMP exporter, cross-domain channel pruning (torch-free; the method: ``admp.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...compiler.errors import PimcError
from ...compiler.method import Method
from ...compiler.settings import setting


@dataclass
class AdmpConfig:
    """The unlabelled target domain, how many channels go, and the adaptation and pruning schedules."""

    target_data: str = setting("digits", "The target domain (its labels are never trained on; its test split "
                               "only reports): digits, mnist, npz:PATH, cifar10:DIR.")
    ratio: float = setting(0.6, "Fraction of every channel group's channels removed.")
    block: int = setting(1, "Keep a multiple of this many channels per group.", minimum=1)
    adapt_epochs: int = setting(10, "Domain-adversarial epochs of the unpruned teacher (and of the baseline).")
    admm_epochs: int = setting(6, "Epochs of ADMM on the soft channel masks.")
    finetune_epochs: int = setting(4, "Epochs with the hard masks fixed.")
    lr: float = setting(1e-3, "Adam learning rate of adaptation and pruning.", cli="admp-lr")
    rho: float = setting(1e-2, "ADMM penalty ρ on ‖m − Z + U‖² (soft mask m, hard mask Z).")
    domain_weight: float = setting(0.3, "Weight of the domain-adversarial loss (gradient reversal).")
    self_training: float = setting(1.0, "Weight of self-training on the model's confident target predictions.")
    confidence: float = setting(0.9, "Softmax confidence from which a target prediction is a pseudo-label.")
    distill: float = setting(1.0, "Weight of the teacher–student divergence on the target images.")
    temperature: float = setting(2.0, "Temperature of that divergence.")

    def check(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            raise PimcError(f"--ratio must be in (0, 1), got {self.ratio}")
        if min(self.adapt_epochs, self.admm_epochs, self.finetune_epochs) < 0:
            raise PimcError("--adapt-epochs, --admm-epochs and --finetune-epochs must not be negative")
        if self.rho <= 0 or self.temperature <= 0 or self.lr <= 0:
            raise PimcError("--rho, --temperature and --admp-lr must be positive")
        if not 0.0 < self.confidence <= 1.0:
            raise PimcError(f"--confidence must be in (0, 1], got {self.confidence}")
        if self.domain_weight < 0 or self.distill < 0 or self.self_training < 0:
            raise PimcError("--domain-weight, --distill and --self-training must not be negative")


METHOD = Method("admp", (AdmpConfig,), "pimc.passes.channel.admp:compress_trained")
