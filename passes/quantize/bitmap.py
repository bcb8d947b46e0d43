"""bitmap: a block-wise weight bit-width map after DYNASTY, executed by onnxruntime as QDQ.

**Blocks and map layout.** Each compute weight is viewed as ``W[o, i, k]``: ``o`` the output channel
(feature), ``i`` the input channel within its group (``Cin/groups``), ``k`` the flattened kernel position
(``kh·kw``; 1 for Gemm/MatMul, whose ``[K, N]`` weights are transposed to ``[N, K]`` first). A block is
``block_cout`` consecutive output channels × ``block_cin`` consecutive input channels × the whole kernel
(default 1 × 16 × kh·kw). The map of a node is ``pimc.map.bits.<node>`` (see compiler/annotations.py), **uint8
``[ceil(Cout / block_cout), ceil((Cin/groups) / block_cin)]``**: entry ``[r, c]`` is the bit width of
output channels ``r·block_cout …`` and input channels ``c·block_cin …`` (of the output channel's group),
all kernel positions; the last row/column blocks may be partial. ``block_cin`` is clipped to
``Cin/groups`` (depthwise layers have one input channel per block). A companion map
``pimc.map.step.<node>`` (uint8, same shape) holds each block's integer step multiplier ``m``.

**Quantization of a block.** Per output channel, the 8-bit base scale ``s_o = max|W_o| / 127``; a block
at ``b`` bits stores ``int8 = m · i`` with codes ``i ∈ [−(2^(b−1)−1), 2^(b−1)−1]`` and an integer
``m ∈ [1, ⌊127 / (2^(b−1)−1)⌋]``, so its values lie on a b-bit grid of step ``m·s_o`` and onnxruntime runs
it through one per-channel ``DequantizeLinear`` (int8 + per-channel scale; see :mod:`.qdq`). ``m`` is
searched over ``round(t · peak_B / (2^(b−1)−1))``, ``t ∈ [0.5, 1]`` (peak in base-code units), minimising
the block's expected output error ``D_B(b)`` defined below (the ADMM-NN level search, per block, with the
input statistics as the metric: plain weight MSE would clip large weights and shrink every block, an error
that post-ReLU inputs with non-zero mean add up coherently).

**Sensitivity estimator.** For a block ``B`` quantized to ``b`` bits with weight error ``E_B(b)`` (one row
``e_o ∈ R^{|B_in|·k}`` per output channel), the expected squared output error it adds at one output
position is ``D_B(b) = Σ_o e_o^T R_B e_o`` with ``R_B = E[p p^T]`` the second-moment matrix of the input
patches ``p`` (the im2col rows restricted to the block's input channels) measured on the calibration feeds
(at most ``max_rows`` random patches per layer). This is the layer-local Hessian of ``‖Y − Ŷ‖²``
restricted to the block (cross-block terms dropped). Layers are made comparable by a factor ``γ_l``:

* ``sensitivity=probe`` (default, "fast online sensitivity analytics"): quantize layer ``l`` alone
  uniformly to ``probe_bits`` (per channel), measure the mean squared change of the model outputs over the
  calibration feeds on onnxruntime, and divide by the predicted ``Σ_B D_B`` of that quantization, so
  ``γ_l · D_B(b)`` predicts the block's contribution to the output error;
* ``sensitivity=local``: ``γ_l = 1 / E[‖y_l‖²]`` per output position (the layer's noise-to-signal ratio).

``S_B(b) = γ_l · D_B(b)``.

**Bit allocation.** Minimise ``Σ_B S_B(b_B)`` subject to ``Σ_B n_B b_B ≤ mean_bits · Σ_B n_B`` (``n_B`` the
block's weight count), ``b_B`` from ``candidates`` (default 2,3,4,6,8). Every block starts at the smallest
candidate; upgrades are taken greedily in order of decreasing marginal gain ``ΔS / (n_B Δb)`` along each
block's lower convex hull of ``(b, S_B(b))`` — exact for the Lagrangian relaxation — and when the best
upgrade no longer fits, the largest affordable smaller upgrade of that block is tried instead.

Nodes with ``role="basis"`` / ``role="coefficient"`` (decompose) get ``basis_bits`` / ``coefficient_bits``
for every block when those options are set (hybrid bits, ESCALATE), and stay outside the budget.
Activations are quantized uniformly (``act_bits``) as in ``quantize``.

**Annotations.** The compute node gets ``pimc.weight_bits`` (the widest block: the datapath width),
``pimc.act_bits``, ``pimc.mean_bits`` (its weight-count-weighted mean), ``pimc.bitmap_block``
(``{"cout": block_cout, "cin": effective block_cin, "kernel": [kh, kw]}``) and the maps above; the weight
tensors are annotated ``dtype=INT<widest>``, ``bits=<widest>``, ``mean_bits``.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from ...compiler import annotations as ann
from ...compiler.errors import PimcError
from ...compiler.graph import attr, initializer_map, set_initializer
from ...compiler.passbase import Option, Pass, PassContext, PassResult
from ...compiler.verify import run_model
from .qdq import QuantPlan, WeightQuant, apply_plan, collect_tensors, ensure_qdq_opset, qmax, weight_axis
from .quantize import ACT_OPTIONS, BITS, calibration, plan_activations, refind, select_nodes, summary_stats

_RATIOS = np.linspace(0.5, 1.0, 11)


@dataclass
class Layout:
    """How one node's weight is cut into blocks."""

    op: str
    shape: tuple[int, ...]
    transposed: bool
    cout: int
    cin_g: int
    groups: int
    kernel: tuple[int, int]
    bco: int
    bci: int

    @property
    def k(self) -> int:
        return self.kernel[0] * self.kernel[1]

    @property
    def grid(self) -> tuple[int, int]:
        return math.ceil(self.cout / self.bco), math.ceil(self.cin_g / self.bci)

    def canonical(self, w: np.ndarray) -> np.ndarray:
        """``[Cout, Cin/groups, kh·kw]``."""
        w = w.T if self.transposed else w
        return np.asarray(w, np.float32).reshape(self.cout, self.cin_g, self.k)

    def to_blocks(self, c: np.ndarray) -> np.ndarray:
        """``[Cout, Cin_g, K]`` → zero-padded ``[rows, cols, bco, bci·K]``."""
        nbo, nbi = self.grid
        pad = np.zeros((nbo * self.bco, nbi * self.bci, self.k), c.dtype)
        pad[: self.cout, : self.cin_g] = c
        return pad.reshape(nbo, self.bco, nbi, self.bci, self.k).transpose(0, 2, 1, 3, 4).reshape(
            nbo, nbi, self.bco, self.bci * self.k)

    def from_blocks(self, b: np.ndarray) -> np.ndarray:
        nbo, nbi = self.grid
        c = b.reshape(nbo, nbi, self.bco, self.bci, self.k).transpose(0, 2, 1, 3, 4).reshape(
            nbo * self.bco, nbi * self.bci, self.k)[: self.cout, : self.cin_g]
        if self.op == "Conv":
            return c.reshape(self.shape)
        w = c.reshape(self.cout, self.cin_g)
        return w.T if self.transposed else w

    def sizes(self) -> np.ndarray:
        """Weights per block ``[rows, cols]``."""
        rows = np.minimum(self.bco, self.cout - np.arange(self.grid[0]) * self.bco)
        cols = np.minimum(self.bci, self.cin_g - np.arange(self.grid[1]) * self.bci)
        return np.outer(rows, cols) * self.k

    def channel_groups(self) -> np.ndarray:
        """Group of every (padded) output channel, ``[rows, bco]``."""
        nbo = self.grid[0]
        ch = np.minimum(np.arange(nbo * self.bco), self.cout - 1)
        return (ch // max(self.cout // self.groups, 1)).reshape(nbo, self.bco)


@dataclass
class NodeBlocks:
    name: str
    layout: Layout
    scale: np.ndarray
    tiles: np.ndarray
    codes: dict[int, np.ndarray] = field(default_factory=dict)
    steps: dict[int, np.ndarray] = field(default_factory=dict)
    sens: dict[int, np.ndarray] = field(default_factory=dict)
    fixed_bits: int | None = None
    gamma: float = 1.0


def make_layout(node: onnx.NodeProto, w: np.ndarray, bco: int, bci: int) -> Layout | None:
    if node.op_type == "Conv" and w.ndim == 4:
        groups = int(attr(node, "group", 1))
        kernel = (int(w.shape[2]), int(w.shape[3]))
        cout, cin_g, transposed = w.shape[0], w.shape[1], False
    elif node.op_type in ("Gemm", "MatMul") and w.ndim == 2:
        transposed = not (node.op_type == "Gemm" and attr(node, "transB", 0))
        cout, cin_g = (w.shape[1], w.shape[0]) if transposed else w.shape
        groups, kernel = 1, (1, 1)
    else:
        return None
    return Layout(node.op_type, tuple(w.shape), transposed, int(cout), int(cin_g), groups, kernel,
                  min(bco, int(cout)), min(bci, int(cin_g)))


def block_quantize(
    blocks: np.ndarray,
    scale: np.ndarray,
    bits: int,
    moments: np.ndarray | None = None,
    groups_of: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int8 values ``m·i`` per block (b-bit codes ``i``), step multipliers ``m`` and the block errors.

    ``m`` minimises ``Σ_o e_o^T R e_o`` when second moments are given (else the squared weight error),
    which is also the returned error ``[rows, cols]``.
    """
    u = blocks / scale
    limit = qmax(bits)
    peak = np.abs(u).max(axis=(2, 3))
    k0 = peak / limit
    kmax = 127 // limit
    best_err = np.full(peak.shape, np.inf)
    best_q = np.zeros_like(u)
    best_k = np.ones(peak.shape, np.int64)
    candidates = [np.clip(np.rint(k0 * t), 1, kmax) for t in _RATIOS] + [np.clip(np.ceil(k0), 1, kmax)]
    for k in candidates:
        kk = k[:, :, None, None]
        q = kk * np.clip(np.rint(u / kk), -limit, limit)
        e = (u - q) * scale
        if moments is None:
            err = (e**2).sum(axis=(2, 3))
        else:
            err = block_error_energy(e, moments, groups_of)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_q = np.where(better[:, :, None, None], q, best_q)
        best_k = np.where(better, k, best_k)
    return best_q.astype(np.int8), best_k.astype(np.uint8), best_err


def patch_moments(node: onnx.NodeProto, x: np.ndarray, layout: Layout, max_rows: int, seed: int) -> np.ndarray:
    """``R[g, col] = E[p p^T]`` over input patches, shape ``[groups, cols, bci·K, bci·K]``."""
    rows = _patches(node, x, layout, max_rows, seed)
    nbi = layout.grid[1]
    size = layout.bci * layout.k
    moments = np.zeros((layout.groups, nbi, size, size), np.float64)
    for g in range(layout.groups):
        for col in range(nbi):
            lo = g * layout.cin_g + col * layout.bci
            hi = g * layout.cin_g + min((col + 1) * layout.bci, layout.cin_g)
            p = rows[:, lo:hi].reshape(len(rows), -1).astype(np.float64)
            moments[g, col, : p.shape[1], : p.shape[1]] = p.T @ p / max(len(p), 1)
    return moments


def _explicit_pads(node: onnx.NodeProto, size: tuple[int, ...], kernel: tuple[int, int],
                   strides: tuple[int, int], dilations: tuple[int, int]) -> list[int]:
    """The Conv's pads [top, left, bottom, right]; auto_pad SAME_UPPER/SAME_LOWER/VALID made explicit."""
    mode = attr(node, "auto_pad", b"NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode == "NOTSET":
        return list(attr(node, "pads", [0, 0, 0, 0]))
    if mode == "VALID":
        return [0, 0, 0, 0]
    begins, ends = [], []
    for n, k, s, d in zip(size, kernel, strides, dilations, strict=True):
        total = max(0, (-(-n // s) - 1) * s + (k - 1) * d + 1 - n)
        begin = total - total // 2 if mode == "SAME_LOWER" else total // 2
        begins.append(begin)
        ends.append(total - begin)
    return begins + ends


def _patches(node: onnx.NodeProto, x: np.ndarray, layout: Layout, max_rows: int, seed: int) -> np.ndarray:
    """Input patches ``[rows, Cin, K]`` (random subset of at most ``max_rows``)."""
    rng = np.random.default_rng(seed)
    if layout.op != "Conv":
        if node.op_type == "Gemm" and attr(node, "transA", 0):
            x = np.swapaxes(x, -1, -2)
        flat = x.reshape(-1, x.shape[-1])
        if len(flat) > max_rows:
            flat = flat[rng.choice(len(flat), max_rows, replace=False)]
        return flat[:, :, None]
    kh, kw = layout.kernel
    sh, sw = attr(node, "strides", [1, 1])
    dh, dw = attr(node, "dilations", [1, 1])
    pads = _explicit_pads(node, x.shape[2:], (kh, kw), (sh, sw), (dh, dw))
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    total = x.shape[0] * oh * ow
    pick = rng.choice(total, max_rows, replace=False) if total > max_rows else np.arange(total)
    s, rest = np.divmod(pick, oh * ow)
    y0, x0 = np.divmod(rest, ow)
    out = np.empty((len(pick), x.shape[1], kh * kw), np.float32)
    for dy in range(kh):
        for dx in range(kw):
            out[:, :, dy * kw + dx] = xp[s, :, y0 * sh + dy * dh, x0 * sw + dx * dw]
    return out


def block_error_energy(err: np.ndarray, moments: np.ndarray, groups_of: np.ndarray) -> np.ndarray:
    """``Σ_o e_o^T R e_o`` per block, ``[rows, cols]``; ``err`` is ``[rows, cols, bco, L]``."""
    if moments.shape[0] == 1:
        return np.einsum("rcol,clm,rcom->rc", err, moments[0], err, optimize=True)
    r = moments[groups_of]  # [rows, bco, cols, L, L]
    return np.einsum("rcol,roclm,rcom->rc", err, r, err, optimize=True)


def allocate(sens: np.ndarray, sizes: np.ndarray, candidates: list[int], mean_bits: float) -> np.ndarray:
    """Candidate index per block minimising Σ S subject to the weighted mean-bits budget."""
    cands = np.asarray(candidates, np.float64)
    choice = np.zeros(len(sizes), np.int64)
    budget = mean_bits * sizes.sum() - cands[0] * sizes.sum()
    heap: list[tuple[float, int, int, int]] = []
    for b in range(len(sizes)):
        _push_next(heap, sens, sizes, cands, b, 0, budget)
    while heap:
        neg_eff, b, cur, nxt = heapq.heappop(heap)
        if choice[b] != cur:
            continue
        cost = (cands[nxt] - cands[cur]) * sizes[b]
        if cost <= budget + 1e-9:
            budget -= cost
            choice[b] = nxt
            _push_next(heap, sens, sizes, cands, b, nxt, np.inf)
        else:
            _push_next(heap, sens, sizes, cands, b, cur, budget)
    return choice


def _push_next(heap, sens, sizes, cands, b: int, cur: int, budget: float) -> None:
    """Push block ``b``'s best upgrade from ``cur`` (largest gain per bit) whose cost fits ``budget``."""
    best, best_eff = -1, 0.0
    for j in range(cur + 1, len(cands)):
        cost = (cands[j] - cands[cur]) * sizes[b]
        if cost > budget + 1e-9:
            break
        eff = (sens[b, cur] - sens[b, j]) / cost
        if eff > best_eff:
            best, best_eff = j, eff
    if best >= 0:
        heapq.heappush(heap, (-best_eff, b, cur, best))


class Bitmap(Pass, name="bitmap"):
    """DYNASTY-style block-wise weight bit-width map (sensitivity-driven, mean-bits budget), QDQ."""

    options = (
        Option("mean_bits", float, 4.0, "budget: weight-count-weighted mean weight bits", minimum=2.0, maximum=8.0),
        Option("candidates", list, ["2", "3", "4", "6", "8"], "candidate block bit widths"),
        Option("block_cin", int, 16, "input channels per block (whole kernel window)", minimum=1),
        Option("block_cout", int, 1, "output channels per block", minimum=1),
        Option("sensitivity", str, "probe", "layer weighting of the block estimator", choices=("probe", "local")),
        Option("probe_bits", int, 4, "uniform bits of the per-layer probe (sensitivity=probe)", **BITS),
        Option("max_rows", int, 4096, "input patches per layer for the second-moment matrices", minimum=16),
        Option("act_bits", int, 8, "activation bit width", **BITS),
        Option("basis_bits", int, None, "fixed weight bits of role=basis nodes (outside the budget)", **BITS),
        Option("coefficient_bits", int, None, "fixed weight bits of role=coefficient nodes", **BITS),
        *ACT_OPTIONS,
    )

    def candidate_bits(self) -> list[int]:
        try:
            bits = sorted({int(c) for c in self.opts["candidates"]})
        except ValueError:
            raise PimcError(f"bitmap.candidates: expected integers, got {self.opts['candidates']}") from None
        if not bits or bits[0] < 2 or bits[-1] > 8:
            raise PimcError("bitmap.candidates: give bit widths between 2 and 8")
        if self.opts["mean_bits"] < bits[0]:
            raise PimcError(f"bitmap.mean_bits={self.opts['mean_bits']} is below the smallest candidate {bits[0]}")
        return bits

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        cands = self.candidate_bits()
        selected, skipped = select_nodes(model, self.opts["exclude"])
        if not selected:
            return PassResult(model, False, {"skipped": skipped})
        feeds = calibration(model, ctx, self.opts["samples"])
        model, old_opset = ensure_qdq_opset(model, feeds)
        selected = refind(model, selected)
        blocks = self._prepare(selected, skipped)
        if not blocks:
            return PassResult(model, False, {"skipped": skipped})
        nodes = [n for n, _ in selected if n.name in blocks]
        values = collect_tensors(model, _probe_tensors(model, nodes, self.opts["sensitivity"]), feeds)
        self._sensitivities(model, nodes, blocks, values, feeds, cands, ctx.seed)
        choices = self._allocate(blocks, cands)
        plan = QuantPlan(quantize_bias=self.opts["quantize_bias"])
        maps = {name: self._node_quant(blocks[name], choices[name], cands, plan) for name in blocks}
        if self.opts["activations"]:
            plan_activations(model, plan, nodes, feeds, self.opts["act_bits"], self.opts, ctx.seed, values)
        apply_plan(model, plan)
        stats = summary_stats(plan, skipped, old_opset, ctx)
        stats.update(self._annotate(model, blocks, maps))
        return PassResult(model, True, stats)

    def _prepare(self, selected, skipped) -> dict[str, NodeBlocks]:
        blocks: dict[str, NodeBlocks] = {}
        for node, w in selected:
            layout = make_layout(node, w, self.opts["block_cout"], self.opts["block_cin"])
            if layout is None:
                skipped.append({"node": node.name, "reason": f"unsupported {node.op_type} weight rank {w.ndim}"})
                continue
            canon = layout.canonical(w)
            peak = np.abs(canon).max(axis=(1, 2))
            scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
            blocks[node.name] = NodeBlocks(node.name, layout, scale, layout.to_blocks(canon),
                                           fixed_bits=self._fixed_bits(node))
        return blocks

    def _fixed_bits(self, node: onnx.NodeProto) -> int | None:
        role = ann.get_node_annotation(node, "role")
        if role == "basis":
            return self.opts["basis_bits"]
        if role == "coefficient":
            return self.opts["coefficient_bits"]
        return None

    def _sensitivities(self, model, nodes, blocks, values, feeds, cands: list[int], seed: int) -> None:
        reference = run_model(model, feeds) if self.opts["sensitivity"] == "probe" else None
        for node in nodes:
            nb = blocks[node.name]
            layout = nb.layout
            x = np.concatenate(values[node.input[0]])
            moments = patch_moments(node, x, layout, self.opts["max_rows"], seed)
            groups_of = layout.channel_groups()
            for bits in [nb.fixed_bits] if nb.fixed_bits else cands:
                nb.codes[bits], nb.steps[bits], nb.sens[bits] = block_quantize(
                    nb.tiles, _tile_scale(nb), bits, moments, groups_of)
            if nb.fixed_bits:
                continue
            if reference is not None:
                nb.gamma = self._probe_gamma(model, node, nb, nb.tiles, moments, groups_of, reference, feeds)
            else:
                y = np.concatenate(values[node.output[0]])
                axis = 1 if layout.op == "Conv" else -1
                energy = float(np.mean(np.sum(np.moveaxis(y, axis, -1) ** 2, axis=-1)))
                nb.gamma = 1.0 / energy if energy > 0 else 0.0

    def _probe_gamma(self, model, node, nb, w, moments, groups_of, reference, feeds) -> float:
        from .qdq import quantize_symmetric

        weight = _weight(model, node)
        uniform = quantize_symmetric(weight, self.opts["probe_bits"], weight_axis(node, weight.ndim))
        deq = uniform.dequantized()
        err = w - nb.layout.to_blocks(nb.layout.canonical(deq))
        predicted = float(block_error_energy(err, moments, groups_of).sum())
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        set_initializer(probe.graph, node.input[1], deq.astype(_weight(model, node).dtype))
        measured = _output_mse(reference, run_model(probe, feeds))
        return measured / predicted if predicted > 0 else 0.0

    def _allocate(self, blocks: dict[str, NodeBlocks], cands: list[int]) -> dict[str, np.ndarray]:
        free = [nb for nb in blocks.values() if not nb.fixed_bits]
        choices = {nb.name: np.full(nb.layout.grid, nb.fixed_bits, np.int64) for nb in blocks.values()
                   if nb.fixed_bits}
        if not free:
            return choices
        sens = np.concatenate([np.stack([nb.gamma * nb.sens[b] for b in cands], -1).reshape(-1, len(cands))
                               for nb in free])
        sizes = np.concatenate([nb.layout.sizes().ravel() for nb in free]).astype(np.float64)
        picked = np.asarray(cands)[allocate(sens, sizes, cands, self.opts["mean_bits"])]
        start = 0
        for nb in free:
            count = nb.layout.grid[0] * nb.layout.grid[1]
            choices[nb.name] = picked[start : start + count].reshape(nb.layout.grid)
            start += count
        return choices

    def _node_quant(self, nb: NodeBlocks, bits_map: np.ndarray, cands: list[int], plan: QuantPlan):
        layout = nb.layout
        codes = np.zeros_like(next(iter(nb.codes.values())))
        steps = np.zeros(layout.grid, np.uint8)
        for bits in np.unique(bits_map):
            mask = bits_map == bits
            codes[mask] = nb.codes[int(bits)][mask]
            steps[mask] = nb.steps[int(bits)][mask]
        widest = int(bits_map.max())
        weights = layout.from_blocks(codes)
        axis = 0 if not layout.transposed else 1
        plan.weights[nb.name] = WeightQuant(weights.astype(np.int8), nb.scale, axis, widest)
        sizes = layout.sizes()
        mean = float((bits_map * sizes).sum() / sizes.sum())
        return bits_map.astype(np.uint8), steps, mean

    def _annotate(self, model: onnx.ModelProto, blocks: dict[str, NodeBlocks], maps) -> dict[str, Any]:
        by_name = {n.name: n for n in model.graph.node}
        total_bits = total = 0.0
        histogram: dict[str, int] = {}
        per_node = {}
        for name, (bits_map, steps, mean) in maps.items():
            node = by_name[name]
            layout = blocks[name].layout
            ann.set_node_map(model, node, "bits", bits_map)
            ann.set_node_map(model, node, "step", steps)
            ann.set_node_annotation(node, "mean_bits", round(mean, 4))
            ann.set_node_annotation(node, "bitmap_block", {"cout": layout.bco, "cin": layout.bci,
                                                           "kernel": list(layout.kernel)})
            for tensor in (node.input[1], _dq_source(model, node)):
                ann.set_tensor_annotation(model, tensor, "mean_bits", round(mean, 4))
            sizes = layout.sizes()
            total_bits += float((bits_map * sizes).sum())
            total += float(sizes.sum())
            for b, c in zip(*np.unique(bits_map, return_counts=True), strict=True):
                histogram[str(int(b))] = histogram.get(str(int(b)), 0) + int(c)
            per_node[name] = {"mean_bits": round(mean, 4), "gamma": blocks[name].gamma}
        return {"mean_bits": round(total_bits / max(total, 1.0), 4), "block_histogram": histogram,
                "nodes": per_node}


def _tile_scale(nb: NodeBlocks) -> np.ndarray:
    layout = nb.layout
    padded = np.ones(layout.grid[0] * layout.bco, np.float32)
    padded[: layout.cout] = nb.scale
    return padded.reshape(layout.grid[0], 1, layout.bco, 1)


def _weight(model: onnx.ModelProto, node: onnx.NodeProto) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(initializer_map(model.graph)[node.input[1]])


def _dq_source(model: onnx.ModelProto, node: onnx.NodeProto) -> str:
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.output[0] == node.input[1]:
            return n.input[0]
    return node.input[1]


def _probe_tensors(model: onnx.ModelProto, nodes: list[onnx.NodeProto], mode: str) -> list[str]:
    tensors: list[str] = []
    for node in nodes:
        wanted = [node.input[0]] + ([node.output[0]] if mode == "local" else [])
        tensors.extend(t for t in wanted if t not in tensors)
    return tensors


def _output_mse(reference: list[list[np.ndarray]], outputs: list[list[np.ndarray]]) -> float:
    """Mean over samples of the summed squared output change."""
    total = count = 0.0
    for ref_outs, new_outs in zip(reference, outputs, strict=True):
        for ref, new in zip(ref_outs, new_outs, strict=True):
            diff = (np.asarray(new, np.float64) - np.asarray(ref, np.float64)).reshape(len(ref), -1)
            total += float((diff**2).sum())
        count += len(ref_outs[0])
    return total / max(count, 1.0)
