"""What every exporter's augmentation settings share, torch-free: the conversion of its ``augment_shift``,
``augment_rotate`` and ``augment_scale`` fields into a ``models.augment.Augment`` and their check. Each
method declares the three fields itself, with the defaults its data want."""

from __future__ import annotations

from ..compiler.errors import PimcError


class AugmentFields:
    """A mixin for a settings dataclass with ``augment_shift``, ``augment_rotate`` and ``augment_scale``."""

    augment_shift: float
    augment_rotate: float
    augment_scale: float

    def augment(self):
        """The ``models.augment.Augment`` of these fields (imported here: settings modules stay torch-free)."""
        from .augment import Augment

        return Augment(self.augment_shift, self.augment_rotate, self.augment_scale)

    def check_augment(self) -> None:
        if self.augment_shift < 0 or self.augment_rotate < 0 or not 0 <= self.augment_scale < 1:
            raise PimcError("--augment-shift and --augment-rotate must be >= 0, --augment-scale in [0, 1)")
