"""Quality metrics, one per kind of model, each a per-sample score whose mean is the figure reported.

* ``top1`` (classifiers; labels are integers): score_i = [argmax output_i = y_i]; reported as a fraction, its
  drops in points (× 100).
* ``psnr`` (image-to-image; targets are images): on the luma of ITU-R BT.601 (Y = 16 + 65.481 R + 128.553 G +
  24.966 B, on 0–255), with ``S`` pixels shaved from every border (S: the scale, ratio of target to input
  height), score_i = 10 · log10(255² / MSE_i) dB; reported and budgeted in dB. The usual super-resolution
  protocol (EDSR, RCAN, ... evaluate on Y with the scale shaved). ``ssim`` on the same luma is reported beside
  it (Wang et al. 2004: 7 × 7 uniform window, K1 = 0.01, K2 = 0.03).

The metric follows the data: integer labels mean top-1, image targets PSNR (``metric_for``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import PimcError


@dataclass(frozen=True)
class Metric:
    name: str  # "top1" | "psnr"
    unit: str  # "points" | "dB": the unit of a drop
    scale: float  # a drop in ``unit`` = scale · (reference − candidate)
    shave: int = 0  # psnr: border pixels left out (the super-resolution scale)
    default_budget: float = 1.0  # --max-accuracy-drop when none is given, in ``unit``

    def scores(self, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """One score per sample."""
        if self.name == "top1":
            return (outputs.reshape(len(outputs), -1).argmax(axis=1) == targets).astype(np.float64)
        return psnr_y(outputs, targets, self.shave)

    def value(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        return float(np.mean(self.scores(outputs, targets)))

    def second(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """The figures reported beside the metric: SSIM for PSNR, nothing for top-1."""
        if self.name != "psnr":
            return {}
        return {"ssim": float(np.mean(ssim_y(outputs, targets, self.shave)))}


TOP1 = Metric("top1", "points", 100.0)
# an assumption, not a published threshold: a tenth of a dB, small against the gaps between the SR networks
# papers compare
DEFAULT_PSNR_BUDGET_DB = 0.1


def metric_for(inputs: np.ndarray, targets: np.ndarray | None) -> Metric:
    """Top-1 for integer labels; PSNR for image targets (N × C × H × W), shaving the scale target H / input H."""
    if targets is not None and targets.ndim == 4 and np.issubdtype(targets.dtype, np.floating):
        return Metric("psnr", "dB", 1.0, shave=max(1, targets.shape[2] // max(1, inputs.shape[2])),
                      default_budget=DEFAULT_PSNR_BUDGET_DB)
    return TOP1


def luma(images: np.ndarray) -> np.ndarray:
    """BT.601 Y on 0–255 of N × 3 × H × W images in [0, 1] (a single channel is taken as Y·255 directly)."""
    x = np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0)
    if x.shape[1] == 1:
        return x[:, 0] * 255.0
    return 16.0 + 65.481 * x[:, 0] + 128.553 * x[:, 1] + 24.966 * x[:, 2]


def psnr_y(outputs: np.ndarray, targets: np.ndarray, shave: int = 0) -> np.ndarray:
    """Per-image PSNR (dB) on Y, ``shave`` pixels removed from each border."""
    if outputs.shape != targets.shape:
        raise PimcError(f"the model outputs {tuple(outputs.shape[1:])}, the targets are {tuple(targets.shape[1:])}")
    s = shave
    a, b = luma(outputs), luma(targets)
    if s:
        a, b = a[:, s:-s, s:-s], b[:, s:-s, s:-s]
    mse = np.mean((a - b) ** 2, axis=(1, 2))
    return 10.0 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def ssim_y(outputs: np.ndarray, targets: np.ndarray, shave: int = 0) -> np.ndarray:
    """Per-image SSIM on Y (7 × 7 uniform window), ``shave`` pixels removed from each border."""
    from scipy.ndimage import uniform_filter

    a, b = luma(outputs), luma(targets)
    if shave:
        a, b = a[:, shave:-shave, shave:-shave], b[:, shave:-shave, shave:-shave]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = []
    for x, y in zip(a, b, strict=True):
        mx, my = uniform_filter(x, 7), uniform_filter(y, 7)
        vx = uniform_filter(x * x, 7) - mx * mx
        vy = uniform_filter(y * y, 7) - my * my
        cov = uniform_filter(x * y, 7) - mx * my
        s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        out.append(float(np.mean(s[3:-3, 3:-3])))
    return np.array(out)
