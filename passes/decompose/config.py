"""Hyper-parameters of the PENNI exporter, torch-free so that ``pimc export decompose`` takes its option
defaults from here without importing torch (the library dataclass is the single source of the CLI's
defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PenniConfig:
    """Hyper-parameters of ``penni_compress`` (see the module docstring for their meaning)."""

    rank: int = 5
    epochs: int = 12
    swap_every: int = 2
    l1: float = 1e-4
    group_l1: float = 1e-2
    threshold: float = 1.0
    group_threshold: float = 1.0
    prune_rounds: int = 3
    residual_l1: float = 1e-2
    residual_threshold: float = 1.1
    finetune_epochs: int = 6
    lr: float = 3e-3
    weight_decay: float = 5e-4
    seed: int = 0
    progress: bool = True

