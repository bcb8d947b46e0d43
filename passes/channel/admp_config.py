"""Settings of the ADMP exporter, cross-domain channel pruning (torch-free; the method: ``admp.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...compiler.errors import PimcError
from ...compiler.method import Method
from ...compiler.settings import setting
from ...models.augment_config import AugmentFields


@dataclass
class AdmpConfig(AugmentFields):
    """The unlabelled target domain, how many channels go, and the adaptation and pruning schedules."""

    target_data: str = setting("digits", "The target domain (its labels are never trained on; its test split "
                               "only reports): digits, mnist, npz:PATH, cifar10:DIR.")
    ratio: float = setting(0.6, "Fraction of every channel group's channels removed.")
    block: int = setting(1, "Keep a multiple of this many channels per group.", minimum=1)
    adapt_epochs: int = setting(10, "Adaptation epochs of the unpruned teacher (and of the baseline).")
    admm_epochs: int = setting(6, "Epochs of ADMM on the soft channel masks.")
    finetune_epochs: int = setting(4, "Epochs with the hard masks fixed.")
    lr: float = setting(1e-3, "Adam learning rate of adaptation and pruning.", cli="admp-lr")
    rho: float = setting(1e-2, "ADMM penalty ρ on ‖m − Z + U‖² (soft mask m, hard mask Z).")
    self_training: float = setting(1.0, "Weight of self-training on confident, distribution-aligned target "
                                   "pseudo-labels.")
    confidence: float = setting(0.9, "Aligned softmax confidence from which a target prediction is a pseudo-label.")
    domain_weight: float = setting(0.0, "Weight of a domain-adversarial loss (gradient reversal; 0: none).")
    # random affine augmentation of the labelled source batches (source training, adaptation, pruning;
    # models/augment.py): scalings up to ±40 % let a source model see digits at the other domain's size
    augment_shift: float = setting(3.0, "Random shift of every source batch, up to this many pixels (0: none).")
    augment_rotate: float = setting(10.0, "Random rotation of every source batch, up to this many degrees.")
    augment_scale: float = setting(0.4, "Random scaling of every source batch, up to this fraction (0.1 = ±10 %).")
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
        self.check_augment()


METHOD = Method("admp", (AdmpConfig,), "pimc.passes.channel.admp:compress_trained")
