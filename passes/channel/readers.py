"""The layers that read a channel group: which channels matter to them, and their refit once channels are gone.

A reader r (a Conv of group 1, a Gemm or a MatMul, possibly behind a Flatten) sees the group's C channels as
C blocks of f features each (f = kh·kw for a conv, in im2col order (c, ky, kx); the Flatten block H·W for an
FC layer; 1 for a plain FC). With the reference statistics of ``compiler.reconstruct`` on the calibration
samples (G = Σ x xᵀ, h_o = Σ x y_o with y the reference output, both from the reference input x):

**Saliency** (with data). Channel c alone carries the output energy

    e_r,c = Σ_o W_r[o, c]ᵀ G[c, c] W_r[o, c]          (W_r[o, c]: row o's f weights on channel c)

of reader r; a channel scores s_c = Σ_r e_r,c / Σ_o ‖y_r,o‖², the share of each reader's output it carries,
summed over the readers. The lowest go first. Cross terms between channels are ignored (they are what the
refit recovers). Without data, ``channel_prune.py`` scores the producers' filter energies instead.

**Refit** (ThiNet, Luo et al., ICCV 2017; He et al., ICCV 2017): removing channel set R leaves every row of
r the same kept features K = all features of the channels not in R, so one ridge system serves all rows:

    (G[K, K] + λ I) w_o = h_o[K],   λ = ridge · mean diag G[K, K]   (the bias feature unregularised)

solved once on the kept block (``reconstruct.solve`` on the restricted statistics). The bias absorbs the
mean of what the removed channels contributed. The target is the *reference* output, so a reader whose input
is the group alone is refitted exactly as ThiNet does; a row another group already zeroed (this reader is
also a producer there) is written back as zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...compiler.reconstruct import LayerStats, relative_error, solve
from ..prune.prune import PrunableLayer


@dataclass
class ReaderFit:
    """One reader of a group of ``channels`` channels, with its reference statistics (None: not refitted)."""

    layer: PrunableLayer
    channels: int
    stats: LayerStats | None

    @property
    def per_channel(self) -> int:
        return self.layer.rows.shape[1] // self.channels

    def features(self, channels: list[int] | np.ndarray) -> np.ndarray:
        """Feature indices of ``channels`` in the reader's rows."""
        f = self.per_channel
        return (np.asarray(channels, dtype=np.int64)[:, None] * f + np.arange(f)[None, :]).reshape(-1)

    def contribution(self) -> np.ndarray:
        """Per channel, the share of the reader's reference output energy it carries alone (``e_r,c``)."""
        if self.stats is None:
            return np.zeros(self.channels)
        c, f = self.channels, self.per_channel
        gram = self.stats.gram[:-1, :-1].reshape(c, f, c, f)
        blocks = gram[np.arange(c), :, np.arange(c), :]  # (C, f, f): each channel's own block
        rows = self.layer.rows.astype(np.float64).reshape(-1, c, f)
        energy = np.einsum("ocf,cfg,ocg->c", rows, blocks, rows, optimize=True)
        return energy / max(float(self.stats.target_energy.sum()), 1e-30)

    def refit(self, removed: list[int]) -> tuple[np.ndarray, np.ndarray | None, float]:
        """(rows, bias, relative output error) with ``removed`` channels' features zero and the rest refitted;
        without statistics, the rows with those features zeroed and the error unknown (nan)."""
        rows = self.layer.rows.astype(np.float64).copy()
        gone = self.features(removed)
        if self.stats is None:
            rows[:, gone] = 0.0
            return rows, None, float("nan")
        kept = np.setdiff1d(np.arange(rows.shape[1]), gone)
        index = np.append(kept, rows.shape[1])  # the bias feature stays last
        sub = LayerStats(self.stats.gram[np.ix_(index, index)], self.stats.cross[index], self.stats.target_energy,
                         self.stats.rows)
        fit_bias = self.layer.node.op_type != "MatMul"  # a MatMul has no bias to absorb the lost mean
        weights, bias = solve(sub, np.ones((rows.shape[0], len(kept)), dtype=bool), fit_bias=fit_bias)
        error = relative_error(sub, weights, bias)
        rows[:] = 0.0
        rows[:, kept] = weights
        return rows, bias if fit_bias else None, error
