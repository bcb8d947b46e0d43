"""Sparsity masks shared by the ``prune`` pass and the ADMM exporter (numpy only).

A weight is seen as rows of a reduction: one row per output channel, the features it sums over as
columns (Conv: Cin/g·kh·kw; Gemm/MatMul: the input features). Three constraint sets:

* per layer:   keep the ``round((1 − s)·n)`` largest |w| of the layer (top-k, ADMM-NN's Proj_S);
* global:      one magnitude threshold over all selected layers, so each layer's sparsity follows its
               weights (``global_sparsities``);
* N:M:         in every run of M consecutive weights along a row keep the N largest (a last run of r < M
               weights keeps min(N, r)).
Ties keep the earlier weight (stable sort), so masks are deterministic.
"""

from __future__ import annotations

import numpy as np


def topk_mask(weight: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep the largest-magnitude ``1 − sparsity`` of ``weight`` (any shape); bool mask of its shape."""
    flat = np.abs(weight.astype(np.float64)).reshape(-1)
    drop = int(round(min(max(sparsity, 0.0), 1.0) * flat.size))
    keep = np.ones(flat.size, dtype=bool)
    if drop:
        keep[np.argsort(flat, kind="stable")[:drop]] = False
    return keep.reshape(weight.shape)


def nm_mask(rows: np.ndarray, n: int, m: int) -> np.ndarray:
    """N:M mask of a (rows, features) matrix along the features."""
    out, features = rows.shape
    groups = -(-features // m)
    padded = np.full((out, groups * m), -1.0)
    padded[:, :features] = np.abs(rows.astype(np.float64))
    blocks = padded.reshape(out, groups, m)
    order = np.argsort(-blocks, axis=2, kind="stable")
    keep = np.zeros_like(blocks, dtype=bool)
    np.put_along_axis(keep, order[:, :, :n], True, axis=2)
    keep &= blocks >= 0
    return keep.reshape(out, groups * m)[:, :features]


def parse_nm(text: str | None) -> tuple[int, int] | None:
    """``"2:4"`` → (2, 4); None or "" → None."""
    if not text:
        return None
    n_text, sep, m_text = str(text).partition(":")
    if not sep:
        raise ValueError(f"N:M must look like 2:4, got {text!r}")
    n, m = int(n_text), int(m_text)
    if not 0 < n <= m:
        raise ValueError(f"N:M needs 0 < N <= M, got {text!r}")
    return n, m


def global_sparsities(weights: dict[str, np.ndarray], sparsity: float) -> dict[str, float]:
    """Per-layer sparsity of one global magnitude threshold that removes ``sparsity`` of all weights."""
    mags = np.concatenate([np.abs(w.astype(np.float64)).reshape(-1) for w in weights.values()])
    drop = int(round(sparsity * mags.size))
    if drop == 0:
        return {k: 0.0 for k in weights}
    order = np.argsort(mags, kind="stable")
    dropped = np.zeros(mags.size, dtype=bool)
    dropped[order[:drop]] = True
    out, start = {}, 0
    for name, w in weights.items():
        out[name] = float(dropped[start:start + w.size].mean())
        start += w.size
    return out


def sparsity_of(weight: np.ndarray) -> float:
    return 1.0 - float(np.count_nonzero(weight)) / max(weight.size, 1)
