"""Hyper-parameters of the PENNI exporter, torch-free so that ``pimc export decompose`` takes its option
defaults from here without importing torch (the library dataclass is the single source of the CLI's
defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from ...compiler.method import Method
from ...compiler.settings import setting


@dataclass
class PenniConfig:
    """Hyper-parameters of ``penni_compress`` (see the module docstring for their meaning)."""

    rank: int = setting(5, "Basis kernels per layer (d).", minimum=1)
    epochs: int = setting(12, "Alternating basis/coefficient epochs.", minimum=0)
    swap_every: int = setting(2, "Epochs before basis/coefficient swap.", minimum=1)
    l1: float = setting(1e-4, "L1 weight on the coefficients.")
    group_l1: float = setting(1e-2, "Group-lasso weight on per-filter and per-input-channel coefficient slices.")
    threshold: float = setting(1.0, "Prune |c| < threshold x std(C) per layer.")
    group_threshold: float = setting(1.0, "Prune whole slices whose RMS < group-threshold x std(C) (0 = off).")
    prune_rounds: int = setting(3, "Prune after each of this many equal parts of the alternating epochs.", minimum=1)
    residual_l1: float = setting(1e-2, "Group-lasso weight on residual-stream channels (all writers' and readers' "
                                       "slices together).")
    residual_threshold: float = setting(1.1, "Kill residual channels whose group norm < this x the stream's mean "
                                             "(0 = off).")
    finetune_epochs: int = setting(6, "Masked fine-tuning epochs.", minimum=0)
    lr: float = setting(3e-3, "Adam learning rate (cosine decay).")
    weight_decay: float = setting(5e-4, "Adam weight decay during the PENNI phases.")
    seed: int = 0
    progress: bool = True


METHOD = Method("decompose", (PenniConfig,), "pimc.passes.decompose.exporter:compress_trained")
