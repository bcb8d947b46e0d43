"""Layer-wise reconstruction: refit a compressed layer's free weights to the original layer's output.

One mechanism for every lossy pass (decompose, pattern-prune, comparator-conv, prune). A layer is a Conv
(any kernel, stride, pad, dilation; group 1) or a Gemm/MatMul seen as a 1×1 conv. With x the im2col patch
of the layer's input (F = Cin·kh·kw features, plus a constant 1 for the bias), the original layer computes
    y_o = w_ref,o · x_ref + b_ref,o,
where x_ref comes from the *reference* model (the model as the lossy pass received it). After compressing
the layers before it, the layer sees x_c instead (from the *compressed* model). Each output row o then
solves the ridge problem over the weights S_o that the compression kept (its support):
    min_w  Σ_pixels (w · x_c[S_o] − y_o)² + λ_o ‖w‖²
    ⇔  (G[S_o, S_o] + λ_o I) w = h_o[S_o],    G = Σ x_c x_cᵀ,  h_o = Σ x_c y_o,
    λ_o = ridge · mean(diag G[S_o, S_o])            (scale-free; the bias feature is not regularised).
The target uses x_ref, not x_c, so a refit also corrects the error the earlier layers left behind.

A fixed linear map of the features, z = T x (the shared basis kernels of a decomposed layer: z_(c,j) =
Σ_t B[j,t] x_(c,t)), maps the statistics to G_z = T G Tᵀ and h_z = T h. So one pair (G, H) per layer,
gathered in one pass over the calibration data, serves every candidate rank, basis and sparsity.

The relative reconstruction error of a solution follows from the same statistics:
    err = Σ_o (wᵀ G w − 2 wᵀ h_o + ‖y_o‖²) / Σ_o ‖y_o‖².
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from .errors import PimcError
from .graph import attr

DEFAULT_RIDGE = 1e-3
_CHUNK_BYTES = 64 * 2**20


@dataclass
class ConvGeometry:
    """What im2col needs of a Conv node (2-D, group 1)."""

    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)

    @classmethod
    def of(cls, node: onnx.NodeProto, kernel: tuple[int, int], input_hw: tuple[int, int]) -> ConvGeometry:
        strides = tuple(int(s) for s in (attr(node, "strides", None) or [1, 1]))
        dilations = tuple(int(d) for d in (attr(node, "dilations", None) or [1, 1]))
        pads = tuple(int(p) for p in (attr(node, "pads", None) or [0, 0, 0, 0]))
        auto_pad = attr(node, "auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads = _same_pads(kernel, strides, dilations, input_hw, upper=auto_pad == "SAME_UPPER")
        return cls(kernel, strides, pads, dilations)  # type: ignore[arg-type]

    def positions(self, input_hw: tuple[int, ...]) -> int:
        """Output pixels per sample (im2col rows per sample)."""
        count = 1
        for size, k, s, d, lo, hi in zip(input_hw, self.kernel, self.strides, self.dilations, self.pads[:2],
                                         self.pads[2:], strict=True):
            count *= max(1, (size + lo + hi - (k - 1) * d - 1) // s + 1)
        return count


#: Patches enough to estimate a layer's second moments: at least this many, and 16 per feature.
STATISTICS_ROWS = 16384


def samples_for_statistics(samples: int, positions: int, features: int) -> int:
    """How many samples (of ``samples``, ``positions`` patches each) give max(STATISTICS_ROWS, 16·features)
    patches: on large maps a few images already give more rows than a regression on ``features`` needs."""
    wanted = max(STATISTICS_ROWS, 16 * features)
    return max(1, min(samples, -(-wanted // max(positions, 1))))


def _same_pads(kernel, strides, dilations, input_hw, upper: bool) -> tuple[int, int, int, int]:
    begin, end = [], []
    for k, s, d, size in zip(kernel, strides, dilations, input_hw, strict=True):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if upper else large)
        end.append(large if upper else small)
    return (begin[0], begin[1], end[0], end[1])


def im2col(x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Patches of an NCHW array as rows: (N·OH·OW, C·kh·kw), feature order (c, i, j) like a Conv weight."""
    kh, kw = geo.kernel
    top, left, bottom, right = geo.pads
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    dh, dw = geo.dilations
    sh, sw = geo.strides
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    windows = np.lib.stride_tricks.sliding_window_view(padded, (span_h, span_w), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]  # (N, C, OH, OW, kh, kw)
    n, c, oh, ow = windows.shape[:4]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)


def _rows(x: np.ndarray) -> np.ndarray:
    """A Gemm/MatMul input as rows of features."""
    return x.reshape(-1, x.shape[-1]) if x.ndim <= 2 else x.reshape(x.shape[0], -1)


@dataclass
class LayerStats:
    """Second moments of the compressed input and cross moments with the reference output.

    ``gram`` is (F+1, F+1) and ``cross`` (F+1, Cout) in float64, the last feature being the constant 1;
    ``target_energy`` is Σ y_o² per output; ``rows`` the number of patches (pixels × samples)."""

    gram: np.ndarray
    cross: np.ndarray
    target_energy: np.ndarray
    rows: int

    @property
    def features(self) -> int:
        return self.gram.shape[0] - 1

    def transform(self, t: np.ndarray) -> LayerStats:
        """Statistics of the features z = T x (the bias feature carried along unchanged)."""
        full = np.zeros((t.shape[0] + 1, t.shape[1] + 1))
        full[:-1, :-1] = t
        full[-1, -1] = 1.0
        return LayerStats(full @ self.gram @ full.T, full @ self.cross, self.target_energy, self.rows)

    def transform_per_channel(self, basis: np.ndarray, channels: int) -> LayerStats:
        """``transform(kron(I_channels, basis))`` without forming it: features c·k + t map to c·d + j by
        z_(c,j) = Σ_t basis[j, t] x_(c,t), so each channel pair's block of the Gram matrix is B G_cc' Bᵀ."""
        d, k = basis.shape
        g = self.gram[:-1, :-1].reshape(channels, k, channels, k)
        gram = np.zeros((channels * d + 1, channels * d + 1))
        gram[:-1, :-1] = np.einsum("jt,atbs,ls->ajbl", basis, g, basis, optimize=True).reshape(channels * d, -1)
        edge = np.einsum("jt,atb->ajb", basis, self.gram[:-1, -1].reshape(channels, k, 1)).reshape(-1)
        gram[:-1, -1] = gram[-1, :-1] = edge
        gram[-1, -1] = self.gram[-1, -1]
        cross = np.vstack([np.einsum("jt,ato->ajo", basis, self.cross[:-1].reshape(channels, k, -1)
                                     ).reshape(channels * d, -1), self.cross[-1:]])
        return LayerStats(gram, cross, self.target_energy, self.rows)


FeatureMap = Callable[[np.ndarray], np.ndarray]


def conv_stats(x_comp: np.ndarray, x_ref: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
               geo: ConvGeometry, features: FeatureMap | None = None) -> LayerStats:
    """Statistics of a 2-D conv (group 1) with reference weights ``weight`` (Cout, Cin, kh, kw).

    ``features``, if given, maps the compressed im2col rows (P, Cin·kh·kw) to the features the
    compressed layer actually regresses on (P, M), e.g. the comparator responses of an LBC block's
    anchors; the statistics are then those of the M features (a nonlinear map, unlike ``transform``)."""
    if x_comp.shape != x_ref.shape:
        raise PimcError(f"reconstruction: compressed input {x_comp.shape} and reference {x_ref.shape} differ")
    w = weight.reshape(weight.shape[0], -1).astype(np.float64)
    b = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
    chunks = _patch_chunks(x_comp, x_ref, geo)
    if features is not None:
        chunks = ((features(comp), ref) for comp, ref in chunks)
    return _accumulate(chunks, w, b)


def dense_stats(x_comp: np.ndarray, x_ref: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> LayerStats:
    """Statistics of y = x W + b with ``weight`` (F, Cout) as a Gemm/MatMul stores it."""
    w = weight.T.astype(np.float64)
    b = np.zeros(weight.shape[1]) if bias is None else bias.astype(np.float64)
    return _accumulate(iter([(_rows(x_comp), _rows(x_ref))]), w, b)


def _patch_chunks(x_comp: np.ndarray, x_ref: np.ndarray, geo: ConvGeometry) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    per_sample = max(1, x_comp[:1].nbytes * geo.kernel[0] * geo.kernel[1])
    step = max(1, _CHUNK_BYTES // per_sample)
    for start in range(0, x_comp.shape[0], step):
        yield im2col(x_comp[start:start + step], geo), im2col(x_ref[start:start + step], geo)


def _accumulate(chunks: Iterator[tuple[np.ndarray, np.ndarray]], w: np.ndarray, b: np.ndarray) -> LayerStats:
    gram = cross = None
    energy = np.zeros(w.shape[0])
    rows = 0
    for comp, ref in chunks:
        if gram is None:
            gram = np.zeros((comp.shape[1] + 1, comp.shape[1] + 1))
            cross = np.zeros((comp.shape[1] + 1, w.shape[0]))
        xc = np.hstack([comp.astype(np.float64), np.ones((comp.shape[0], 1))])
        y = ref.astype(np.float64) @ w.T + b
        gram += xc.T @ xc
        cross += xc.T @ y
        energy += np.einsum("pj,pj->j", y, y)
        rows += comp.shape[0]
    if gram is None:
        raise PimcError("reconstruction: no calibration rows")
    return LayerStats(gram, cross, energy, rows)


def solve(stats: LayerStats, support: np.ndarray, ridge: float = DEFAULT_RIDGE,
          fit_bias: bool = True, start: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ridge refit of every output row on its support (Cout, F) bool; returns weights (Cout, F), bias (Cout,).

    Rows are solved in batches of equal support size: row o's system is G restricted to S_o (plus the bias
    feature), gathered to |S_o| × |S_o|, so one batched LAPACK call serves rows of different supports at
    the cost of their kept features only. Large supports are solved iteratively (``_solve_masked_cg``) from
    ``start`` (weights, bias), by default the dense refit."""
    cout, features = support.shape
    if features != stats.features:
        raise PimcError(f"reconstruction: support has {features} features, statistics {stats.features}")
    if support.all():
        return _solve_dense(stats, ridge, fit_bias)
    keep = np.hstack([support, np.full((cout, 1), fit_bias)])
    diag = np.diag(stats.gram)[:-1]
    kept = np.maximum(support.sum(axis=1), 1)
    lam = ridge * (support * diag).sum(axis=1) / kept
    reg = np.append(np.zeros(features), 0.0)  # the bias feature is not regularised
    counts = keep.sum(axis=1)
    if counts.max() > CG_FEATURES:
        return _solve_masked_cg(stats, keep, lam, start or _solve_dense(stats, ridge, fit_bias))
    solution = np.zeros((cout, features + 1))
    for count in np.unique(counts):
        rows_all = np.flatnonzero(counts == count)
        if count == 0:
            continue
        step = max(1, _CHUNK_BYTES // (8 * int(count) ** 2))
        for start in range(0, len(rows_all), step):
            rows = rows_all[start:start + step]
            idx = np.stack([np.flatnonzero(keep[r]) for r in rows])  # (R, count), sorted feature indices
            a = stats.gram[idx[:, :, None], idx[:, None, :]]
            diag_reg = np.where(idx < features, lam[rows, None], reg[idx])
            a[:, np.arange(count), np.arange(count)] += diag_reg
            rhs = stats.cross[idx, rows[:, None]]
            solution[rows[:, None], idx] = _solve_batched(a, rhs)
    return solution[:, :-1], solution[:, -1]


CG_FEATURES = 32  # above this many kept features per row, conjugate gradients beat per-row factorisations
CG_TOLERANCE = 1e-4  # relative residual: the output error it leaves is ~1e-8 of the target's
CG_MAX_STEPS = 40  # the refit's error is measured afterwards; later steps change it in the fourth digit


def _solve_masked_cg(stats: LayerStats, keep: np.ndarray, lam: np.ndarray,
                     start: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The same per-row systems (G_SS + λ_o I) w_S = c_S solved for all rows at once by Jacobi-preconditioned
    conjugate gradients from ``start`` (masked): each step is one (Cout × F)·(F × F) product, against a
    factorisation of every row's |S_o|² system, until every row's residual is below CG_TOLERANCE of its
    right-hand side."""
    g = stats.gram
    features = stats.features
    reg = np.hstack([np.repeat(lam[:, None], features, axis=1), np.zeros((len(lam), 1))]) * keep
    mask = keep.astype(np.float64)
    b = mask * stats.cross.T

    def apply(w: np.ndarray) -> np.ndarray:
        return mask * (w @ g + reg * w)

    diag = np.diag(g)[None, :] + reg
    precondition = np.where(keep & (diag > 0), 1.0 / np.where(diag > 0, diag, 1.0), 0.0)
    x = mask * np.hstack([start[0], start[1][:, None]])
    r = b - apply(x)
    z = precondition * r
    p = z.copy()
    rz = np.sum(r * z, axis=1)
    limit = CG_TOLERANCE * np.maximum(np.linalg.norm(b, axis=1), 1e-30)
    for _ in range(CG_MAX_STEPS):
        if np.all(np.linalg.norm(r, axis=1) <= limit):
            break
        q = apply(p)
        curvature = np.sum(p * q, axis=1)
        alpha = np.divide(rz, curvature, out=np.zeros_like(rz), where=curvature > 0)
        x += alpha[:, None] * p
        r -= alpha[:, None] * q
        z = precondition * r
        rz_next = np.sum(r * z, axis=1)
        beta = np.divide(rz_next, rz, out=np.zeros_like(rz), where=rz > 0)
        p = z + beta[:, None] * p
        rz = rz_next
    return x[:, :-1], x[:, -1]


def _regularised_gram(stats: LayerStats, ridge: float, index: np.ndarray) -> np.ndarray:
    """The Gram matrix on ``index`` with ridge · mean(diag) added to every weight feature (not the bias)."""
    features = stats.features
    g = stats.gram[np.ix_(index, index)].copy()
    g[np.arange(features), np.arange(features)] += ridge * float(np.mean(np.diag(stats.gram)[:features]))
    return g


def solve_dense_with_inverse(stats: LayerStats, ridge: float = DEFAULT_RIDGE
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The dense refit (weights, bias) and the diagonal of the inverse regularised Gram matrix (bias
    feature last), the quantity Optimal Brain Surgeon saliencies divide by."""
    g = _regularised_gram(stats, ridge, np.arange(stats.features + 1))
    try:
        inverse = np.linalg.inv(g)
    except np.linalg.LinAlgError:
        weights, bias = _solve_dense(stats, ridge, True)
        return weights, bias, 1.0 / np.maximum(np.diag(g), 1e-30)
    solution = inverse @ stats.cross
    return solution[:-1].T, solution[-1], np.maximum(np.diag(inverse), 1e-30)


def _solve_dense(stats: LayerStats, ridge: float, fit_bias: bool) -> tuple[np.ndarray, np.ndarray]:
    """Every row on the full support: one system with Cout right-hand sides."""
    features = stats.features
    index = np.arange(features + 1 if fit_bias else features)
    g = _regularised_gram(stats, ridge, index)
    try:
        solution = np.linalg.solve(g, stats.cross[index])
    except np.linalg.LinAlgError:
        solution = np.linalg.lstsq(g, stats.cross[index], rcond=None)[0]
    weights = solution[:features].T
    bias = solution[features] if fit_bias else np.zeros(stats.cross.shape[1])
    return weights, bias


def _solve_batched(a: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(a, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.stack([np.linalg.lstsq(ai, bi, rcond=None)[0] for ai, bi in zip(a, rhs, strict=True)])


def relative_error(stats: LayerStats, weights: np.ndarray, bias: np.ndarray) -> float:
    """Σ_o ‖w_o x_c + b_o − y_o‖² / Σ_o ‖y_o‖² on the calibration patches."""
    full = np.hstack([weights, bias[:, None]])
    quad = float(np.sum((full @ stats.gram) * full))
    linear = float(np.sum(full * stats.cross.T))
    total = float(stats.target_energy.sum())
    return max(0.0, quad - 2 * linear + total) / max(total, 1e-30)


BATCH = 64  # samples per run when capture runs a batch-1 export on batches


def capture(model: onnx.ModelProto, names: list[str], feeds: list[dict[str, np.ndarray]],
            batched: bool = False) -> dict[str, np.ndarray]:
    """The values of tensors ``names`` over every feed, concatenated along the batch axis. ``batched``: the
    single-input model computes the same per sample on a batch (``compiler.sessions.runs_batched``), so the
    feeds run 64 at a time."""
    from .sessions import free_batch, make_session

    given = {k for feed in feeds for k in feed}
    wanted = [n for n in dict.fromkeys(names) if n not in given]
    probe = _with_outputs(model, wanted)
    if batched and all(len(feed) == 1 for feed in feeds):
        probe = free_batch(probe)
        key = next(iter(feeds[0]))
        stacked = np.concatenate([feed[key] for feed in feeds])
        feeds = [{key: stacked[i:i + BATCH]} for i in range(0, len(stacked), BATCH)]
    session = make_session(probe, spinning=False)
    inputs = {i.name for i in session.get_inputs()}
    out_names = [o.name for o in session.get_outputs()]
    collected: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feed in feeds:
        values = dict(zip(out_names, session.run(None, {k: v for k, v in feed.items() if k in inputs}), strict=True))
        values.update(feed)
        for n in names:
            collected[n].append(np.asarray(values[n]))
    return {n: np.concatenate(v, axis=0) for n, v in collected.items()}


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    types = {v.name: v for v in probe.graph.value_info}
    for name in names:
        if name in present:
            continue
        if name in types:
            probe.graph.output.append(types[name])
        else:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    return probe
