"""ESCALATE: a kernel-decomposition sparse CNN accelerator with the Basis-First dataflow (MICRO 2021).

What is modelled
================
Every decomposed layer (a depthwise *basis* conv annotated ``role="basis"`` and a 1×1 *coefficient*
conv annotated ``role="coefficient"``, paired by their ``layer`` annotation) runs on two pipelined units:

* the **basis unit**, an ``Rb × Cb`` MAC array, convolves a tile of ``Tc = Cb`` input channels with
  that layer's ``m`` basis kernels (``m`` = basis outputs per input channel, ``d`` in PENNI);
* the **coefficient unit**, an ``Rc × Cc`` array of zero-skipping lanes (rows = output channels,
  columns = output pixels), combines the streamed ``Tc·m`` intermediate maps with the non-zero
  coefficients only; each lane walks the index list of its output channel.

Basis-First order: ``for spatial tile s: for channel tile t: basis(s,t) → coefficient(s,t)``. The
intermediate map of one (s, t) tile lives in a double-buffered stream buffer and never goes off-chip;
the partial sums of all ``Cout`` channels of spatial tile ``s`` stay in the output buffer until every
channel tile is done. Every other Conv / Gemm / MatMul (1×1 convs, depthwise convs, the classifier,
layers the decompose pass skipped) takes the **dense path** on a dense ``R × C`` array.

Other compute layers on the dense path. Conv1d is a record with H = 1; Conv3d folds the depth into the
height axis (rows = D·H, kh = kd·kh, so the pixel count and the MACs are exact). Grouped and dilated
convs use their G and dilation below. MatMul/Gemm are 1×1 convs over P = their output rows; a MatMul
of two activations streams its second operand as the "weights" (no zeros to skip). **ConvTranspose**
is costed in its scatter form: a grouped 1×1 conv over the B·H·W *input* pixels with (Cout/G)·kh·kw
outputs per group (``workload.scatter_record``), i.e. MACs = B·Cin·H·W·(Cout/G)·kh·kw, whose partial
products are overlap-added in the output buffer. The equivalent conv over the zero-inserted input would
multiply (s² − 1)/s² inserted zeros for stride s on a dense array, and no unit here skips zero
activations; the scatter form does only the real MACs, so it is the form a compiler would choose.

Notation: ``B`` batch, ``Cin``/``Cout`` channels, ``G`` groups, ``Cg = Cin/G``, ``Kg = Cout/G``,
``k² = kh·kw``, output ``OH × OW``, ``P = B·OH·OW`` output pixels, ``nT = ceil(Cin/Tc)`` channel
tiles, ``nnz[t, o]`` the non-zero coefficients of output channel ``o`` in channel tile ``t``,
``⌈x⌉`` the ceiling, ``f`` the clock.

Every cost equation below is written once, with ``backends/pointwise.py``'s ``vmax`` / ``vmin`` / ``select``
in place of ``max`` / ``min`` / ``if``: it takes one hardware point (the report) or numpy arrays of points
(``escalate_batch.cost_many``, the sweep's cost-only chunks).

Cost equations (per layer)
==========================
Basis stage (one channel tile, whole image; the cheaper of two spatial unrollings):
    b = min( ⌈m/Rb⌉ · k² · P ,  ⌈OW/Rb⌉ · m · k² · B·OH )          (rows = basis kernels | rows = pixels)
    MACs_basis = P · Cin · m · k²                                    (PENNI's op count, docs/sources.md)
Coefficient stage (channel tile t; row group g = Rc consecutive output channels):
    c_t = Σ_g [max_{o∈g} nnz[t,o] > 0] · (max_{o∈g} nnz[t,o] + i) · ⌈OW/Cc⌉ · B·OH
    MACs_coef = P · nnz(C);  i = index_overhead_cycles (decode bubble per list restart)
Two-stage pipeline over the S spatial tiles × nT channel tiles (tiles of equal size 1/S):
    L_compute = ( b + S · Σ_t max(b, c_t) − max(b, c_nT) + c_nT ) / S
    basis_cycles = nT·b, coefficient_cycles = Σ_t c_t,
    stall_cycles = L_compute − min(basis_cycles, coefficient_cycles)   (the faster stage waits),
    fill_cycles  = L_compute − max(basis_cycles, coefficient_cycles)   (pipeline fill/drain)
Spatial tiles S: the smallest count such that every per-tile working set fits its buffer:
    intermediate: 2 · Tc·m · (P/S) · bits_int   ≤ intermediate buffer    (double buffered)
    output:           Cout · (P/S) · bits_psum  ≤ output buffer
    input:        2 · Tc · rows_in(S) · W · bits_act ≤ input buffer       (with the kh−1 halo)
Occupancy (bits) of each buffer is the left-hand side at the chosen S (basis: stored basis bits,
coefficients: nnz·bits_coef + index bits, capped by their buffer).
Dense path (and the dense baseline), the cheaper of:
    weight-stationary (rows = Kg, cols = Cg, one group at a time): G·⌈Kg/R⌉·⌈Cg/C⌉·k²·P
    output-stationary (rows = Cout, cols = OW):                  ⌈Cout/R⌉·⌈OW/C⌉·B·OH·Cg·k²
    For a perfectly tiled layer (R | Kg, C | Cg) both reduce to MACs / (R·C).
Sparse baseline (zero-skipping on the dense weights W = Σ_j coef_j · basis_j, R × C lanes), the cheaper of:
    rows = Cout, cols = OW:       Σ_g (max_{o∈g} nnz_o + i) · ⌈OW/C⌉ · B·OH
    rows = Cout, cols split nnz:  Σ_g (⌈max_{o∈g} nnz_o / C⌉ + i) · P
Memory bound: DRAM_cycles = DRAM bits / (bandwidth / f); cycles = max(L_compute, DRAM_cycles)
(double-buffered transfers overlap compute).

Traffic (bits). On-chip buffer accesses:
    basis:  input reads = MACs_basis / r (an input word serves several basis kernels: r = min(m, Rb)
            spatially with rows = kernels, r = m in a register with rows = pixels),
            intermediate writes = P·Cin·m
    coef:   intermediate reads = P·Cin·m · n_groups (broadcast once per row-group pass),
            coefficient+index reads = Σ_t nnz_t · ⌈OW/Cc⌉·B·OH, psum read+write = 2·Cout·P·nT,
            output writes = Cout·P (bits_act)
    dense (weight-stationary): weights = params · S_w, inputs = MACs/min(Kg,R), psum r+w = 2·MACs/min(Cg,C)
    dense (output-stationary): weights = MACs/min(OW,C), inputs = MACs/min(Kg,R), outputs = Cout·P
Off-chip (DRAM): inputs B·Cin·H·W·bits_act·halo, outputs B·Cout·OH·OW·bits_act, weights once
(re-fetched per spatial tile when they do not fit their buffer). halo = 1 when the rows of one spatial
tile for all Cin channels fit the input buffer (the kh−1 overlap rows stay on chip), else input rows
fetched / H. The intermediate map has no off-chip term. Dense and sparse: inputs are re-fetched per
row pass when the input map does not fit the input buffer. Layers run one after another and every
map goes through DRAM unless ``onchip_activations`` keeps maps that fit the input buffer on chip.

Energy (J) = Σ components:
    mac   = MACs · (E_mul8 · bw·ba/64 + E_add32 · bits_acc/32)            (multiplier ∝ bit product)
    sram  = Σ_buffers accesses · bits · E_sram(size)/64                   (per buffer, by its size)
    dram  = DRAM bits · E_dram/64
    index = index bits read · E_sram(coef buffer)/64 + nnz fetched · E_add32 · bits_index/32
E_sram(size) interpolates log-log between Horowitz's 8 KB, 32 KB and 1 MB points (extrapolated
with the 8→32 KB slope below 8 KB). Leakage and control are not modelled.

Activation zeros (``activation_skipping``, an assumption: ESCALATE's abstract says nothing about them).
The ``activation-sparsity`` pass measures, on ``--data``, each layer input's non-zero fraction d (and d_c per
channel); a layer without the measurement is costed dense. With skipping on:
    basis stage:  b_t = b · max_{c ∈ tile t} d_c      each basis column walks its own channel's non-zero inputs
                                                      in scatter form and the tile waits for its slowest column
    MAC energy:   MACs · d (basis, dense path, sparse baseline; the coefficient stage uses the measured d of
                  its own input, the intermediate map): a MAC with a zero activation is gated off (Eyeriss,
                  Chen et al., JSSC 2017: zero data gating)
    input map:    on-chip input reads × min(1, d + 1/bits_act): zero-value compression, non-zero values plus
                  a 1-bit presence mask per element (the format of SparTen / Eyeriss v2)
    input fetch:  off-chip input bits × min(1, max(d_s, d) + 1/bits_act), d_s the measured density of the map
                  STORED off chip (``input_stored_zero_fraction``): when the layer's input is a threshold gate
                  (feature-reg) on a map that other layers also read (a residual Add, a shortcut conv's own
                  gate), one ungated map is stored and the gate runs as it is fetched into the input buffer,
                  so the fetch is at d_s and only the on-chip terms see d; otherwise d_s = d. A model
                  without gates (the dense twin) always has d_s = d: no asymmetric credit
    output map:   off-chip output bits × min(1, d_out + 1/bits_act), d_out the measured density of the map
                  after the layer's Relu (``output_zero_fraction``); uncompressed when not measured
    cycles of the dense path, the coefficient unit and the sparse baseline are unchanged: their columns are
    output pixels in lockstep, which skip a step only when every pixel's input is zero (not modelled).
    partial sums (output buffer) are unchanged too: an update of psum[o, p] is skippable only when every input
    summed into it in that step is zero, i.e. all Tc·k² inputs of a channel tile's window (coefficient stage:
    the whole intermediate tile at p is zero) or all C inputs of a weight-stationary column group. The pass's
    all-zero chunk fractions bound this: for the feature-reg ResNet-20 on digits (70 % unstructured zeros)
    at most 0.1 % of aligned 128-input im2col chunks are all zero, so the saving is not modelled.
The dense baseline never skips (it is the dense machine). The report's ``activation_skipping`` section gives
cycles and energy with and without skipping for the same compiled model.

Baselines (what the seed paper compares, docs/sources.md: a dense accelerator runs the dense model, a sparse
accelerator a model pruned by its own algorithm). ``compiler/baselines.py`` costs them on the INPUT model
(after the exact fold-constants / eliminate-identity / fold-batchnorm only), or on the model named by
``--baseline-model dense=FILE`` / ``sparse=FILE`` (e.g. the exporter's ``--dense-output``):
    dense   every layer of that model on the dense path above (``dense_rows × dense_cols``, same buffers
            and DRAM; the weight buffer = coefficient + intermediate + basis buffers)
    sparse  every layer of that model on the zero-skipping equations above, on its own zeros
The backend itself reports the same two machines on the compiled model's own shapes, under
``dense_same_shape`` / ``sparse_same_shape``: they isolate the Basis-First dataflow from the compression.
The dense view of a pair (for the same-shape baselines) has W[o,c] = Σ_j coef[o,c,j]·basis[c,j]; its zero
structure is the support of that sum (a weight is zero when every contributing coefficient or basis
entry is zero; exact numerical cancellation is not looked for).

Throughput: the report's ``throughput_gops`` / ``tops_per_w`` count 2 ops per dense MAC of the input model
(compiler/target.py ``count_input_ops``); ``executed_gops`` / ``executed_tops_per_w`` count 2 per MAC the
arrays perform (basis MACs + non-zero coefficient MACs of decomposed layers, every dense-path MAC).

Compression: storage bits before (dense weights, no index) and after (basis + non-zero coefficients
+ the cheaper of coordinate / bitmap indices; dense-path layers keep dense weights), at the layer's
bit widths; also against float32. Bit widths: ``weight_bits`` / ``act_bits`` annotations of the nodes
(the basis and coefficient nodes carry their own: hybrid quantization; a coefficient node's
``act_bits`` is the intermediate map's precision; a per-block ``bits`` map gives the mean width),
otherwise the config. Baselines use the dense layer's own bits, else ``weight_bits``.

Sources of default numbers
==========================
ESCALATE's array sizes, buffers, clock, process and bit widths are **unknown** (docs/sources.md): every
such default below is an assumption. Energies are the 45 nm figures of M. Horowitz, "Computing's
energy problem (and what we can do about it)", ISSCC 2014: 8 b mult 0.2 pJ, 32 b add 0.1 pJ,
64-bit SRAM read 10 pJ (8 KB), 20 pJ (32 KB), 100 pJ (1 MB), DRAM 1.3–2.6 nJ per 64 bits.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from ..compiler.errors import PimcError
from ..compiler.target import (
    BaselinePlan,
    CostReport,
    HardwareConfig,
    Target,
    hw_field,
    register_target,
    skipping_summary,
)
from ..compiler.workload import LayerRecord, Workload, extract_workload, scatter_record
from .pointwise import any_true, as_float, ceil_div, log, per_tile, per_value, select, vmax, vmin

KB_BITS = 8 * 1024


@dataclass
class EscalateConfig(HardwareConfig):
    clock_mhz: float = hw_field(1000.0, "MHz", "assumption: ESCALATE's clock is unknown (docs/sources.md)")
    basis_rows: int = hw_field(8, "MACs", "assumption: basis-unit rows (basis kernels; PENNI uses d = 5)")
    basis_cols: int = hw_field(16, "MACs", "assumption: basis-unit columns = input channels per tile")
    coef_rows: int = hw_field(16, "lanes", "assumption: coefficient-unit rows (output channels)")
    coef_cols: int = hw_field(8, "lanes", "assumption: coefficient-unit columns (output pixels)")
    dense_rows: int = hw_field(16, "MACs", "assumption: dense array = basis + coefficient MACs (256)")
    dense_cols: int = hw_field(16, "MACs", "assumption: dense array = basis + coefficient MACs (256)")
    input_buffer_kb: float = hw_field(64.0, "KiB", "assumption: input activation buffer")
    intermediate_buffer_kb: float = hw_field(16.0, "KiB", "assumption: intermediate-map stream buffer")
    output_buffer_kb: float = hw_field(64.0, "KiB", "assumption: partial-sum / output buffer")
    coef_buffer_kb: float = hw_field(64.0, "KiB", "assumption: coefficient + index buffer")
    basis_buffer_kb: float = hw_field(1.0, "KiB", "assumption: basis register file")
    dram_gbps: float = hw_field(25.6, "GB/s", "assumption: one 64-bit LPDDR4-3200 channel pair (25.6 GB/s)")
    act_bits: int = hw_field(8, "bit", "assumption: activation width when no act_bits annotation")
    weight_bits: int = hw_field(8, "bit", "assumption: dense weight width when no weight_bits annotation")
    basis_bits: int = hw_field(8, "bit", "assumption: basis width when the basis node has no weight_bits")
    coef_bits: int = hw_field(8, "bit", "assumption: coefficient width when the node has no weight_bits")
    intermediate_bits: int = hw_field(16, "bit", "assumption: intermediate map kept at 16 b (no requantization)")
    psum_bits: int = hw_field(32, "bit", "assumption: partial-sum accumulator width")
    onchip_activations: bool = hw_field(
        False, "", "assumption: layer by layer, every map goes through DRAM (as per-layer SCALE-Sim/ZigZag "
                   "runs); true keeps a map on chip when it fits the input buffer")
    index_overhead_cycles: int = hw_field(1, "cycles", "assumption: decode bubble per index-list restart")
    activation_skipping: bool = hw_field(
        True, "", "assumption: ESCALATE's abstract says nothing about activations; true lets its units and the "
                  "sparse baseline skip MEASURED zero inputs (activation-sparsity pass) as in the header")
    mult_8b_pj: float = hw_field(0.2, "pJ", "Horowitz ISSCC'14, 45 nm: 8-bit integer multiply")
    add_32b_pj: float = hw_field(0.1, "pJ", "Horowitz ISSCC'14, 45 nm: 32-bit integer add")
    sram_8kb_pj: float = hw_field(10.0, "pJ/64b", "Horowitz ISSCC'14, 45 nm: 8 KB SRAM, 64-bit read")
    sram_32kb_pj: float = hw_field(20.0, "pJ/64b", "Horowitz ISSCC'14, 45 nm: 32 KB SRAM, 64-bit read")
    sram_1mb_pj: float = hw_field(100.0, "pJ/64b", "Horowitz ISSCC'14, 45 nm: 1 MB SRAM, 64-bit read")
    dram_pj: float = hw_field(1950.0, "pJ/64b", "Horowitz ISSCC'14: DRAM 1.3-2.6 nJ per 64 bits (midpoint)")

    def validate(self) -> None:
        super().validate()
        positive = ("clock_mhz", "basis_rows", "basis_cols", "coef_rows", "coef_cols", "dense_rows",
                    "dense_cols", "dram_gbps", "act_bits", "weight_bits", "basis_bits", "coef_bits",
                    "intermediate_bits", "psum_bits")
        for name in positive:
            if getattr(self, name) <= 0:
                raise PimcError(f"hardware parameter '{name}' must be positive (got {getattr(self, name)})")

    @property
    def dense_weight_buffer_kb(self) -> float:
        """The dense accelerators get ESCALATE's weight-side memories as one weight buffer."""
        return self.coef_buffer_kb + self.intermediate_buffer_kb + self.basis_buffer_kb


# ---------------------------------------------------------------------------------------------------
# energy primitives


def sram_pj_per_bit(hw: EscalateConfig, size_kb: float) -> float:
    """Horowitz's 64-bit read energy at 8 KB / 32 KB / 1 MB, log-log interpolated, per bit."""
    size = vmax(size_kb, 1e-3)
    small = size <= 32.0
    s0, s1 = select(small, 8.0, 32.0), select(small, 32.0, 1024.0)
    e0 = select(small, hw.sram_8kb_pj, hw.sram_32kb_pj)
    e1 = select(small, hw.sram_32kb_pj, hw.sram_1mb_pj)
    known = (e0 > 0) & (e1 > 0)
    slope = select(known, log(select(known, e1, 1.0) / select(known, e0, 1.0)) / log(s1 / s0), 0.0)
    return e0 * (size / s0) ** slope / 64.0


def mac_pj(hw: EscalateConfig, wbits: float, abits: float, acc_bits: float) -> float:
    return hw.mult_8b_pj * wbits * abits / 64.0 + hw.add_32b_pj * acc_bits / 32.0


# ---------------------------------------------------------------------------------------------------
# schedule (lower)


@dataclass
class Geometry:
    batch: int
    cin: int
    cout: int
    h: int
    w: int
    oh: int
    ow: int
    kh: int
    kw: int
    stride: int
    dilation: int
    groups: int

    @property
    def pixels(self) -> int:
        return self.batch * self.oh * self.ow

    @property
    def k2(self) -> int:
        return self.kh * self.kw

    @property
    def macs(self) -> int:
        return self.pixels * self.cout * (self.cin // self.groups) * self.k2


@dataclass
class WeightStats:
    """Zero structure of a dense weight (the dense path or the baselines' view of a layer)."""

    params: int
    nnz: int
    row_nnz: np.ndarray
    bits: float
    pattern_index_bits: float | None = None


@dataclass
class LayerPlan:
    name: str
    kind: str
    geometry: Geometry
    dense: WeightStats
    act_bits: float
    members: list[str] = field(default_factory=list)
    rank: int = 0
    basis_bits: float = 0.0
    coef_bits: float = 0.0
    intermediate_bits: float = 0.0
    basis_storage_bits: float = 0.0
    coef_nnz: int = 0
    coef_params: int = 0
    tile_nnz: np.ndarray | None = None
    tile_group_max: np.ndarray | None = None
    coef_index_bits: float = 0.0
    coef_index_bits_per_nnz: int = 0
    lowered_from: str | None = None
    input_density: float | None = None
    stored_density: float | None = None
    output_density: float | None = None
    channel_density: np.ndarray | None = None
    coef_input_density: float | None = None


@dataclass
class Schedule:
    layers: list[LayerPlan]
    skipped: list[dict[str, str]] = field(default_factory=list)


def _geometry(rec: LayerRecord, cin: int | None = None, cout: int | None = None,
              groups: int | None = None) -> Geometry:
    return Geometry(
        batch=max(rec.batch, 1), cin=cin or rec.cin, cout=cout or rec.cout, h=rec.h, w=rec.w,
        oh=rec.out_h, ow=rec.out_w, kh=rec.kernel[0], kw=rec.kernel[1], stride=max(rec.stride[0], 1),
        dilation=max(rec.dilation[0], 1), groups=groups or max(rec.groups, 1),
    )


def _mean_bits(rec: LayerRecord, default: float) -> float:
    if "bits" in rec.maps:
        mean = rec.annotations.get("mean_bits")
        return float(mean) if mean else float(np.mean(rec.maps["bits"]))
    return float(rec.weight_bits) if rec.weight_bits else float(default)


def _pattern_index_bits(rec: LayerRecord) -> float | None:
    pattern = rec.maps.get("pattern")
    library = rec.annotations.get("pattern_library")
    if pattern is None or not library:
        return None
    return float(pattern.size * math.ceil(math.log2(len(library) + 1)))


def _weight_stats(weight: np.ndarray | None, cout: int, params: int, bits: float,
                  nnz: int | None = None) -> WeightStats:
    if weight is None:
        return WeightStats(params, params, np.full(cout, params // max(cout, 1)), bits)
    nnz = int(np.count_nonzero(weight)) if nnz is None else nnz
    if nnz == weight.size:
        return WeightStats(nnz, nnz, np.full(cout, nnz // max(cout, 1)), bits)
    rows = weight.reshape(cout, -1) if weight.ndim == 4 else weight.T.reshape(cout, -1)
    row_nnz = np.count_nonzero(rows, axis=1)
    return WeightStats(int(weight.size), nnz, row_nnz, bits)


def _dense_plan(rec: LayerRecord, hw: EscalateConfig) -> LayerPlan:
    geo = _geometry(rec)
    params = rec.params or geo.cout * (geo.cin // geo.groups) * geo.k2
    nnz = rec.nonzero if rec.weight is not None and rec.params == rec.weight.size else None
    stats = _weight_stats(rec.weight, geo.cout, params, _mean_bits(rec, hw.weight_bits), nnz)
    stats.pattern_index_bits = _pattern_index_bits(rec)
    return LayerPlan(rec.name, "dense", geo, stats, float(rec.act_bits or hw.act_bits), [rec.name],
                     lowered_from=rec.annotations.get("lowered_from"), input_density=rec.input_density,
                     stored_density=rec.input_stored_density,
                     output_density=rec.output_density,
                     channel_density=_channel_density(rec, geo.cin))


def _channel_density(rec: LayerRecord, cin: int) -> np.ndarray | None:
    values = rec.annotations.get("input_channel_density")
    if values is None or len(values) != cin:
        return None
    return np.asarray(values, dtype=float)


def _pair_reason(basis: LayerRecord, coef: LayerRecord) -> str | None:
    if basis.op != "Conv" or coef.op != "Conv":
        return "basis/coefficient node is not a Conv"
    if basis.weight is None or coef.weight is None:
        return "basis or coefficient weights are not constant"
    if basis.groups != basis.cin or basis.cout % basis.cin:
        return "basis node is not a depthwise conv with a channel multiplier"
    if coef.kernel != (1, 1) or coef.groups != 1 or coef.cin != basis.cout:
        return "coefficient node is not a 1x1 conv over the basis outputs"
    if (coef.h, coef.w) != (basis.out_h, basis.out_w):
        return "coefficient input does not match the basis output"
    return None


def _decomposed_plan(basis: LayerRecord, coef: LayerRecord, hw: EscalateConfig) -> LayerPlan:
    cin, m = basis.cin, basis.cout // basis.cin
    kh, kw = basis.kernel
    geo = _geometry(basis, cin=cin, cout=coef.cout, groups=1)
    bw = basis.weight.reshape(cin, m, kh * kw)
    cw = coef.weight.reshape(coef.cout, cin, m)
    shared = bool(np.all(bw == bw[:1]))
    if coef.params == cw.size and coef.nonzero == coef.params:
        per_kernel = np.full((coef.cout, cin), m, dtype=np.uint8)
    else:
        per_kernel = _kernel_nnz(cw)
    basis_bits = _mean_bits(basis, hw.basis_bits)
    plan = LayerPlan(
        name=str(coef.annotations.get("layer") or basis.annotations.get("layer") or coef.name),
        kind="decomposed", geometry=geo, dense=_dense_view(cw, bw, per_kernel, float(hw.weight_bits)),
        act_bits=float(basis.act_bits or hw.act_bits), members=[basis.name, coef.name], rank=m,
        basis_bits=basis_bits, coef_bits=_mean_bits(coef, hw.coef_bits),
        intermediate_bits=float(coef.act_bits or hw.intermediate_bits),
        basis_storage_bits=(m if shared else cin * m) * kh * kw * basis_bits,
        input_density=basis.input_density, stored_density=basis.input_stored_density,
        channel_density=_channel_density(basis, cin),
        coef_input_density=coef.input_density, output_density=coef.output_density,
    )
    _coefficient_tiles(plan, per_kernel, cw.size, hw)
    return plan


def _kernel_nnz(cw: np.ndarray) -> np.ndarray:
    """Non-zero coefficients of every (output, input) kernel: uint8 [Cout, Cin]."""
    mask = cw != 0
    counts = mask[..., 0].astype(np.uint8)
    for j in range(1, cw.shape[2]):
        counts += mask[..., j]
    return counts


def _dense_view(cw: np.ndarray, bw: np.ndarray, per_kernel: np.ndarray, bits: float) -> WeightStats:
    """Zero structure of W = Σ_j coef_j · basis_j (exact cancellations aside: support of the sum)."""
    cout, cin, m = cw.shape
    k2 = bw.shape[2]
    support = bw != 0
    if support.all():
        row_nnz = k2 * np.count_nonzero(per_kernel, axis=1)
    elif k2 <= 63:
        masks = (support.astype(np.uint64) << np.arange(k2, dtype=np.uint64)).sum(axis=2, dtype=np.uint64)
        union = np.zeros((cout, cin), dtype=np.uint64)
        for j in range(m):
            union |= np.where(cw[..., j] != 0, masks[:, j][None, :], np.uint64(0))
        row_nnz = np.bitwise_count(union).sum(axis=1, dtype=np.int64)
    else:
        dense = np.stack([np.dot(cw[:, c], bw[c]) for c in range(cin)], axis=1)
        row_nnz = np.count_nonzero(dense.reshape(cout, -1), axis=1)
    return WeightStats(cout * cin * k2, int(row_nnz.sum()), row_nnz, bits)


def _coefficient_tiles(plan: LayerPlan, per_kernel: np.ndarray, coef_params: int, hw: EscalateConfig) -> None:
    """Per (channel tile, output channel) non-zero counts, the per-row-group maxima and index size."""
    cout, cin = per_kernel.shape
    m = plan.rank
    tc = hw.basis_cols
    n_tiles = math.ceil(cin / tc)
    padded = np.zeros((cout, n_tiles * tc), dtype=np.int32)
    padded[:, :cin] = per_kernel
    tile_nnz = padded.reshape(cout, n_tiles, tc).sum(axis=2).T
    n_groups = math.ceil(cout / hw.coef_rows)
    grouped = np.zeros((n_tiles, n_groups * hw.coef_rows), dtype=np.int64)
    grouped[:, :cout] = tile_nnz
    plan.tile_nnz = tile_nnz.sum(axis=1)
    plan.tile_group_max = grouped.reshape(n_tiles, n_groups, hw.coef_rows).max(axis=2)
    plan.coef_nnz = int(plan.tile_nnz.sum())
    plan.coef_params = coef_params
    per_nnz = max(1, math.ceil(math.log2(tc * m)))
    coordinate = plan.coef_nnz * per_nnz + cout * n_tiles * math.ceil(math.log2(tc * m + 1))
    plan.coef_index_bits = float(min(coordinate, coef_params))
    plan.coef_index_bits_per_nnz = per_nnz


def lower_workload(workload: Workload, hw: EscalateConfig) -> Schedule:
    """Pair basis/coefficient records by their ``layer`` annotation; everything else is dense
    (ConvTranspose in its scatter form)."""
    records = [scatter_record(rec) for rec in workload.layers]
    by_layer: dict[str, dict[str, LayerRecord]] = {}
    for rec in records:
        if rec.role in ("basis", "coefficient") and rec.annotations.get("layer"):
            by_layer.setdefault(str(rec.annotations["layer"]), {})[rec.role] = rec
    paired: dict[str, LayerPlan] = {}
    skipped: list[dict[str, str]] = []
    for layer, pair in by_layer.items():
        if len(pair) != 2:
            skipped.append({"layer": layer, "reason": "basis or coefficient node missing; dense path"})
            continue
        reason = _pair_reason(pair["basis"], pair["coefficient"])
        if reason:
            skipped.append({"layer": layer, "reason": reason + "; dense path"})
            continue
        plan = _decomposed_plan(pair["basis"], pair["coefficient"], hw)
        paired[pair["basis"].name] = plan
        paired[pair["coefficient"].name] = plan
    plans: list[LayerPlan] = []
    seen: set[int] = set()
    for rec in records:
        plan = paired.get(rec.name)
        if plan is None:
            plans.append(_dense_plan(rec, hw))
        elif id(plan) not in seen:
            seen.add(id(plan))
            plans.append(plan)
    return Schedule(plans, skipped)


# ---------------------------------------------------------------------------------------------------
# cost


def _ceil(a: float, b: float) -> int:
    return ceil_div(a, b)


@dataclass
class Tally:
    """Accumulates cycles, on-chip / off-chip bits and energy (pJ) per component of one layer."""

    energy_pj: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("mac", "input_buffer", "weight_buffer", "intermediate_buffer", "output_buffer", "dram", "index"), 0.0))
    onchip_bits: dict[str, float] = field(default_factory=dict)
    offchip_bits: dict[str, float] = field(default_factory=dict)

    def sram(self, buffer: str, bits: float, pj_per_bit: float, component: str | None = None) -> None:
        self.onchip_bits[buffer] = self.onchip_bits.get(buffer, 0.0) + bits
        self.energy_pj[component or buffer] += bits * pj_per_bit

    def dram(self, what: str, bits: float, hw: EscalateConfig) -> None:
        self.offchip_bits[what] = self.offchip_bits.get(what, 0.0) + bits
        self.energy_pj["dram"] += bits * hw.dram_pj / 64.0

    @property
    def dram_bits(self) -> float:
        return sum(self.offchip_bits.values())


def _dram_cycles(bits: float, hw: EscalateConfig) -> float:
    return bits / (hw.dram_gbps * 8e9 / (hw.clock_mhz * 1e6))


def _input_rows(geo: Geometry, tiles: int) -> tuple[int, float]:
    """Input rows one spatial tile needs (with halo) and the input re-fetch factor of ``tiles`` tiles."""
    out_rows = vmax(1, _ceil(geo.batch * geo.oh, tiles))
    rows = vmin(geo.h, (out_rows - 1) * geo.stride + (geo.kh - 1) * geo.dilation + 1)
    n_row_tiles = _ceil(geo.batch * geo.oh, out_rows)
    return rows, vmax(1.0, n_row_tiles * rows / (geo.batch * geo.h))


def _spatial_tiles(geo: Geometry, per_pixel_bits: list[tuple[float, float]], in_bits: float,
                   in_buffer_bits: float) -> int:
    tiles = 1
    for bits_per_pixel, capacity in per_pixel_bits:
        tiles = vmax(tiles, _ceil(geo.pixels * bits_per_pixel, vmax(capacity, 1.0)))
    tiles = vmin(tiles, geo.pixels)
    limit = geo.batch * geo.oh

    def too_big(tiles):  # the tile's input rows overflow the input buffer, and rows can still be split
        return (tiles < limit) & (_input_rows(geo, tiles)[0] * geo.w * in_bits > in_buffer_bits)

    grow = too_big(tiles)
    while any_true(grow):
        tiles = select(grow, vmin(limit, tiles * 2), tiles)
        grow = too_big(tiles)
    return tiles


def _activation_bits(bits: float, hw: EscalateConfig) -> float:
    """Off-chip bits of an activation map: none when it may stay on chip and fits the input buffer."""
    return select(hw.onchip_activations and bits <= hw.input_buffer_kb * KB_BITS, 0.0, bits)


def _weight_dram_bits(total_bits: float, capacity_bits: float, tiles: int) -> float:
    return select(total_bits <= capacity_bits, total_bits, total_bits * tiles)


@dataclass(frozen=True)
class ActivationZeros:
    """What a layer's measured input zeros change (all 1.0 when not skipping or nothing was measured)."""

    gate: float = 1.0  # share of MACs whose activation operand is non-zero (the others are gated off)
    storage: float = 1.0  # compressed / plain bits of the input map: non-zero values + a 1-bit mask
    applied: bool = False
    fetched: float = 1.0  # compressed / plain bits of the map stored off chip (before an on-the-way-in gate)


def activation_zeros(density: float | None, bits: float, enabled: bool,
                     stored: float | None = None) -> ActivationZeros:
    """``density`` the measured non-zero fraction of the input, ``stored`` that of the map stored off chip
    (None: the input itself)."""
    if not enabled or density is None:
        return ActivationZeros()
    storage = min(1.0, density + 1.0 / max(bits, 1.0))
    fetched = storage if stored is None else min(1.0, max(stored, density) + 1.0 / max(bits, 1.0))
    return ActivationZeros(gate=density, storage=storage, applied=True, fetched=fetched)


def _tile_density(plan: LayerPlan, tc: int, n_tiles: int, enabled: bool) -> np.ndarray:
    """Per channel tile, the largest measured channel density: the tile's columns walk their own channel's
    non-zero inputs and the tile waits for the slowest (1.0 when not skipping or not measured)."""
    if not enabled or plan.channel_density is None:
        return np.ones(n_tiles)
    padded = np.zeros(n_tiles * tc)
    padded[: len(plan.channel_density)] = plan.channel_density
    return padded.reshape(n_tiles, tc).max(axis=1)


def decomposed_cost(plan: LayerPlan, hw: EscalateConfig) -> dict[str, Any]:
    geo, m = plan.geometry, plan.rank
    tc, n_tiles = hw.basis_cols, len(plan.tile_nnz)
    rows_out = geo.batch * geo.oh
    col_passes = _ceil(geo.ow, hw.coef_cols) * rows_out
    b_kernels = _ceil(m, hw.basis_rows) * geo.k2 * geo.pixels
    b_pixels = _ceil(geo.ow, hw.basis_rows) * m * geo.k2 * rows_out
    b = as_float(vmin(b_kernels, b_pixels))
    basis_share = select(b_kernels <= b_pixels, vmin(m, hw.basis_rows), m)
    group_max = plan.tile_group_max
    lists = per_tile(group_max.sum(axis=1), col_passes) + per_tile((group_max > 0).sum(axis=1), col_passes) \
        * hw.index_overhead_cycles
    c = (lists * col_passes).astype(float)

    in_buf, int_buf = hw.input_buffer_kb * KB_BITS, hw.intermediate_buffer_kb * KB_BITS
    out_buf, coef_buf = hw.output_buffer_kb * KB_BITS, hw.coef_buffer_kb * KB_BITS
    in_bits = 2 * min(tc, geo.cin) * plan.act_bits
    tiles = _spatial_tiles(geo, [(2 * min(tc, geo.cin) * m * plan.intermediate_bits, int_buf),
                                 (geo.cout * hw.psum_bits, out_buf)], in_bits, in_buf)
    zeros = activation_zeros(plan.input_density, plan.act_bits, hw.activation_skipping, plan.stored_density)
    inter = activation_zeros(plan.coef_input_density, plan.intermediate_bits, hw.activation_skipping)
    out_storage = activation_zeros(plan.output_density, plan.act_bits, hw.activation_skipping).storage
    bt = b * per_tile(_tile_density(plan, tc, n_tiles, hw.activation_skipping), b)
    compute = (bt[0] + tiles * as_float(np.maximum(bt, c).sum(axis=0)) - vmax(bt[-1], c[-1]) + c[-1]) / tiles
    basis_cycles, coef_cycles = as_float(bt.sum(axis=0)), as_float(c.sum(axis=0))

    t = Tally()
    basis_macs = geo.pixels * geo.cin * m * geo.k2
    coef_macs = geo.pixels * plan.coef_nnz
    t.energy_pj["mac"] += basis_macs * zeros.gate * mac_pj(hw, plan.basis_bits, plan.act_bits, plan.intermediate_bits)
    t.energy_pj["mac"] += coef_macs * inter.gate * mac_pj(hw, plan.coef_bits, plan.intermediate_bits, hw.psum_bits)
    e_in, e_int = sram_pj_per_bit(hw, hw.input_buffer_kb), sram_pj_per_bit(hw, hw.intermediate_buffer_kb)
    e_out, e_coef = sram_pj_per_bit(hw, hw.output_buffer_kb), sram_pj_per_bit(hw, hw.coef_buffer_kb)
    e_basis = sram_pj_per_bit(hw, hw.basis_buffer_kb)
    intermediate_words = geo.pixels * geo.cin * m
    n_groups = group_max.shape[1]
    coef_fetches = plan.coef_nnz * col_passes
    t.sram("input", basis_macs / basis_share * plan.act_bits * zeros.storage, e_in, "input_buffer")
    t.sram("basis", plan.basis_storage_bits, e_basis, "weight_buffer")
    t.sram("intermediate", intermediate_words * plan.intermediate_bits * (1 + n_groups), e_int,
           "intermediate_buffer")
    t.sram("coefficient", coef_fetches * plan.coef_bits, e_coef, "weight_buffer")
    t.sram("index", coef_fetches * plan.coef_index_bits_per_nnz, e_coef, "index")
    t.energy_pj["index"] += coef_fetches * hw.add_32b_pj * plan.coef_index_bits_per_nnz / 32.0
    t.sram("output", geo.cout * geo.pixels * (2 * n_tiles * hw.psum_bits + plan.act_bits), e_out,
           "output_buffer")

    in_rows, halo = _input_rows(geo, tiles)
    halo = select(geo.cin * in_rows * geo.w * plan.act_bits <= in_buf, 1.0, halo)
    weight_bits = plan.basis_storage_bits + plan.coef_nnz * plan.coef_bits + plan.coef_index_bits
    input_bits = geo.batch * geo.cin * geo.h * geo.w * plan.act_bits * zeros.fetched
    t.dram("input", _activation_bits(input_bits, hw) * halo, hw)
    t.dram("output", _activation_bits(geo.pixels * geo.cout * plan.act_bits * out_storage, hw), hw)
    t.dram("weights", _weight_dram_bits(weight_bits, coef_buf + hw.basis_buffer_kb * KB_BITS, tiles), hw)
    dram = _dram_cycles(t.dram_bits, hw)
    occupancy = {
        "input": vmin(in_buf, geo.cin * in_rows * geo.w * plan.act_bits),
        "intermediate": vmin(int_buf, _ceil(geo.pixels, tiles) * 2 * min(tc, geo.cin) * m * plan.intermediate_bits),
        "output": vmin(out_buf, _ceil(geo.pixels, tiles) * geo.cout * hw.psum_bits),
        "coefficient": vmin(coef_buf, plan.coef_nnz * plan.coef_bits + plan.coef_index_bits),
        "basis": vmin(hw.basis_buffer_kb * KB_BITS, plan.basis_storage_bits),
    }
    capacity = {"input": in_buf, "intermediate": int_buf, "output": out_buf, "coefficient": coef_buf,
                "basis": hw.basis_buffer_kb * KB_BITS}
    cycles = vmax(compute, dram)
    return {
        "name": plan.name, "kind": "decomposed", "members": plan.members, "rank": m,
        "cycles": cycles, "compute_cycles": compute, "dram_cycles": dram,
        "bound": select(dram > compute, "memory", "compute"),
        "basis_cycles": basis_cycles, "coefficient_cycles": coef_cycles,
        "stall_cycles": compute - vmin(basis_cycles, coef_cycles),
        "fill_cycles": compute - vmax(basis_cycles, coef_cycles),
        "bottleneck": select(basis_cycles >= coef_cycles, "basis", "coefficient"),
        "channel_tiles": n_tiles, "spatial_tiles": tiles,
        "macs": geo.macs, "basis_macs": basis_macs, "coefficient_macs": coef_macs,
        **_activation_fields(plan.input_density, zeros),
        "utilization": (basis_macs + coef_macs) / (cycles * (hw.basis_rows * hw.basis_cols
                                                             + hw.coef_rows * hw.coef_cols)),
        "coefficient_density": plan.coef_nnz / max(plan.coef_params, 1),
        "bits": {"act": plan.act_bits, "basis": plan.basis_bits, "coefficient": plan.coef_bits,
                 "intermediate": plan.intermediate_bits, "index_per_nnz": plan.coef_index_bits_per_nnz},
        "buffer_occupancy_bits": occupancy,
        "buffer_occupancy": {k: v / capacity[k] for k, v in occupancy.items()},
        **_finish(t),
    }


def _dense_cycles(geo: Geometry, rows: int, cols: int) -> tuple[int, int, str]:
    kg, cg = geo.cout // geo.groups, geo.cin // geo.groups
    ws = geo.groups * _ceil(kg, rows) * _ceil(cg, cols) * geo.k2 * geo.pixels
    os_ = _ceil(geo.cout, rows) * _ceil(geo.ow, cols) * geo.batch * geo.oh * cg * geo.k2
    first = ws <= os_
    return select(first, ws, os_), select(first, os_, ws), select(first, "weight-stationary", "output-stationary")


def _activation_fields(density: float | None, zeros: ActivationZeros) -> dict[str, Any]:
    return {"input_density": density, "activation_skipping": zeros.applied}


def dense_cost(plan: LayerPlan, hw: EscalateConfig, name: str | None = None,
               skip_activations: bool = False) -> dict[str, Any]:
    """The dense path: every weight (zero or not) is multiplied; same cost for the dense baseline, which never
    skips activations (``skip_activations`` is ESCALATE's own dense path: zero inputs gated and compressed)."""
    geo, w = plan.geometry, plan.dense
    zeros = activation_zeros(plan.input_density, plan.act_bits, skip_activations and hw.activation_skipping,
                             plan.stored_density)
    out_storage = activation_zeros(plan.output_density, plan.act_bits, skip_activations and hw.activation_skipping).storage
    rows, cols = hw.dense_rows, hw.dense_cols
    compute, _, mapping = _dense_cycles(geo, rows, cols)
    kg, cg = geo.cout // geo.groups, geo.cin // geo.groups
    macs = geo.macs
    out_buf, in_buf = hw.output_buffer_kb * KB_BITS, hw.input_buffer_kb * KB_BITS
    w_buf = hw.dense_weight_buffer_kb * KB_BITS
    e_in, e_out = sram_pj_per_bit(hw, hw.input_buffer_kb), sram_pj_per_bit(hw, hw.output_buffer_kb)
    e_w = sram_pj_per_bit(hw, hw.dense_weight_buffer_kb)
    t = Tally()
    t.energy_pj["mac"] += macs * zeros.gate * mac_pj(hw, w.bits, plan.act_bits, hw.psum_bits)
    t.sram("input", macs / vmin(kg, rows) * plan.act_bits * zeros.storage, e_in, "input_buffer")
    pixel_tiles = vmax(1, _ceil(geo.pixels * vmin(geo.cout, rows) * hw.psum_bits, out_buf))
    ws = mapping == "weight-stationary"
    t.sram("weight", select(ws, w.params * w.bits * pixel_tiles, macs / vmin(geo.ow, cols) * w.bits), e_w,
           "weight_buffer")
    t.sram("output", select(ws, 2 * macs / vmin(cg, cols) * hw.psum_bits, geo.pixels * geo.cout * plan.act_bits),
           e_out, "output_buffer")
    input_bits = geo.batch * geo.cin * geo.h * geo.w * plan.act_bits
    passes = select(input_bits * zeros.storage <= in_buf, 1, _ceil(geo.cout, rows))
    t.dram("input", _activation_bits(input_bits * zeros.fetched, hw) * passes, hw)
    t.dram("output", _activation_bits(geo.pixels * geo.cout * plan.act_bits * out_storage, hw), hw)
    t.dram("weights", _weight_dram_bits(w.params * w.bits, w_buf, pixel_tiles), hw)
    dram = _dram_cycles(t.dram_bits, hw)
    cycles = vmax(compute, dram)
    return {
        "name": name or plan.name, "kind": "dense", "members": plan.members, "mapping": mapping,
        "lowered_from": plan.lowered_from,
        "cycles": cycles, "compute_cycles": as_float(compute), "dram_cycles": dram,
        "bound": select(dram > compute, "memory", "compute"), "stall_cycles": 0.0,
        "macs": macs, "utilization": macs / (cycles * rows * cols),
        **_activation_fields(plan.input_density, zeros),
        "bits": {"act": plan.act_bits, "weight": w.bits},
        "buffer_occupancy_bits": {
            "input": vmin(in_buf, input_bits), "weight": vmin(w_buf, w.params * w.bits),
            "output": vmin(out_buf, _ceil(geo.pixels, pixel_tiles) * vmin(geo.cout, rows) * hw.psum_bits)},
        **_finish(t),
    }


def sparse_index_bits(w: WeightStats, cin_k2: int) -> tuple[float, int]:
    """The cheaper of coordinate (per non-zero + row pointers), bitmap, or pattern-id indices."""
    per_nnz = max(1, math.ceil(math.log2(max(cin_k2, 2))))
    coordinate = w.nnz * per_nnz + len(w.row_nnz) * math.ceil(math.log2(cin_k2 + 1))
    options = [coordinate, w.params]
    if w.pattern_index_bits is not None:
        options.append(w.pattern_index_bits)
    return float(min(options)), per_nnz


def sparse_cost(plan: LayerPlan, hw: EscalateConfig) -> dict[str, Any]:
    """Zero-skipping on the dense weights (each row walks its non-zeros), with index overhead."""
    geo, w = plan.geometry, plan.dense
    rows, cols, extra = hw.dense_rows, hw.dense_cols, hw.index_overhead_cycles
    n_groups = _ceil(geo.cout, rows)
    padded = np.zeros(n_groups * rows, dtype=np.int64)
    padded[: len(w.row_nnz)] = w.row_nnz
    gmax = padded.reshape(n_groups, rows).max(axis=1)
    active = gmax > 0
    restarts = extra * active.sum()  # one index-list restart per active row group and pass

    def split_walk(cols):  # Σ over active row groups of ⌈max nnz / C⌉, once per distinct C
        return (-(-per_tile(gmax, cols) // cols) * per_tile(active, cols)).sum(axis=0)

    by_pixels = as_float(gmax.sum() + restarts) * _ceil(geo.ow, cols) * geo.batch * geo.oh
    by_split = as_float(per_value(split_walk, cols) + restarts) * geo.pixels
    compute = vmin(by_pixels, by_split)
    passes = select(by_pixels <= by_split, _ceil(geo.ow, cols) * geo.batch * geo.oh, geo.pixels)
    cg = geo.cin // geo.groups
    index_bits, per_nnz = sparse_index_bits(w, cg * geo.k2)
    eff = geo.pixels * w.nnz
    zeros = activation_zeros(plan.input_density, plan.act_bits, hw.activation_skipping, plan.stored_density)
    out_storage = activation_zeros(plan.output_density, plan.act_bits, hw.activation_skipping).storage
    e_in, e_out = sram_pj_per_bit(hw, hw.input_buffer_kb), sram_pj_per_bit(hw, hw.output_buffer_kb)
    e_w = sram_pj_per_bit(hw, hw.dense_weight_buffer_kb)
    t = Tally()
    t.energy_pj["mac"] += eff * zeros.gate * mac_pj(hw, w.bits, plan.act_bits, hw.psum_bits)
    t.sram("input", geo.pixels * cg * geo.k2 * int(active.sum()) * plan.act_bits * zeros.storage, e_in,
           "input_buffer")
    t.sram("weight", w.nnz * passes * w.bits, e_w, "weight_buffer")
    t.sram("index", w.nnz * passes * per_nnz, e_w, "index")
    t.energy_pj["index"] += w.nnz * passes * hw.add_32b_pj * per_nnz / 32.0
    t.sram("output", geo.pixels * geo.cout * plan.act_bits, e_out, "output_buffer")
    input_bits = geo.batch * geo.cin * geo.h * geo.w * plan.act_bits
    in_passes = select(input_bits * zeros.storage <= hw.input_buffer_kb * KB_BITS, 1, n_groups)
    t.dram("input", _activation_bits(input_bits * zeros.fetched, hw) * in_passes, hw)
    t.dram("output", _activation_bits(geo.pixels * geo.cout * plan.act_bits * out_storage, hw), hw)
    stored = w.nnz * w.bits + index_bits
    tiles = vmax(1, _ceil(geo.pixels * vmin(geo.cout, rows) * hw.psum_bits, hw.output_buffer_kb * KB_BITS))
    t.dram("weights", _weight_dram_bits(stored, hw.dense_weight_buffer_kb * KB_BITS, tiles), hw)
    dram = _dram_cycles(t.dram_bits, hw)
    cycles = vmax(compute, dram)
    return {"name": plan.name, "cycles": cycles, "compute_cycles": compute, "dram_cycles": dram,
            "macs": eff, "index_bits": index_bits, **_activation_fields(plan.input_density, zeros), **_finish(t)}


def _finish(t: Tally) -> dict[str, Any]:
    energy = {k: v * 1e-12 for k, v in t.energy_pj.items()}
    return {
        "energy_j": sum(energy.values()), "energy_breakdown_j": energy,
        "onchip_traffic_bits": dict(t.onchip_bits), "offchip_traffic_bits": dict(t.offchip_bits),
        "onchip_bits": sum(t.onchip_bits.values()), "offchip_bits": t.dram_bits,
    }


def storage_bits(plan: LayerPlan) -> dict[str, float]:
    """Weight + index storage of a layer: dense (before), ESCALATE (after), sparse baseline, float32."""
    w = plan.dense
    dense = w.params * w.bits
    sparse_idx, _ = sparse_index_bits(w, (plan.geometry.cin // plan.geometry.groups) * plan.geometry.k2)
    if plan.kind == "decomposed":
        after = plan.basis_storage_bits + plan.coef_nnz * plan.coef_bits + plan.coef_index_bits
    else:
        after = dense
    return {"dense": dense, "escalate": after, "sparse": w.nnz * w.bits + sparse_idx, "fp32": w.params * 32.0}


def layer_cost(plan: LayerPlan, hw: EscalateConfig) -> dict[str, Any]:
    main = decomposed_cost(plan, hw) if plan.kind == "decomposed" else dense_cost(plan, hw, skip_activations=True)
    base_dense = dense_cost(plan, hw)
    base_sparse = sparse_cost(plan, hw)
    main["baselines"] = {
        "dense_same_shape": {"cycles": base_dense["cycles"], "energy_j": base_dense["energy_j"]},
        "sparse_same_shape": {"cycles": base_sparse["cycles"], "energy_j": base_sparse["energy_j"]},
    }
    main["storage_bits"] = storage_bits(plan)
    main["_dense_same_shape_detail"] = base_dense
    main["_sparse_same_shape_detail"] = base_sparse
    return main


SAME_SHAPE = {
    "dense_same_shape": "the dense accelerator on the compiled model's shapes (W = coefficients x basis for "
                        "decomposed pairs): isolates the dataflow's effect",
    "sparse_same_shape": "the zero-skipping accelerator on the compiled model's shapes and zeros: isolates "
                         "the dataflow's effect",
}


def _executed_macs(layer: dict[str, Any]) -> float:
    if layer["kind"] == "decomposed":
        return float(layer["basis_macs"] + layer["coefficient_macs"])
    return float(layer["macs"])


def _sum_details(details: list[dict[str, Any]], seconds_per_cycle: float) -> dict[str, Any]:
    """Latency, energy and breakdown of a list of per-layer cost records run one after another."""
    cycles = sum(d["cycles"] for d in details)
    breakdown: dict[str, float] = {}
    for d in details:
        for key, value in d["energy_breakdown_j"].items():
            breakdown[key] = breakdown.get(key, 0.0) + value
    return {
        "latency_cycles": cycles, "latency_s": cycles * seconds_per_cycle,
        "energy_j": sum(d["energy_j"] for d in details), "energy_breakdown_j": breakdown,
        "offchip_bits": sum(d["offchip_bits"] for d in details),
        "onchip_bits": sum(d["onchip_bits"] for d in details),
    }


def schedule_totals(schedule: Schedule, hw: EscalateConfig) -> tuple[list[dict[str, Any]], dict[str, Any],
                                                                     dict[str, dict[str, Any]]]:
    """Per-layer costs, their totals (``_sum_details``) and the same-shape baselines' totals of a schedule,
    at one hardware point or at arrays of points."""
    layers = [layer_cost(plan, hw) for plan in schedule.layers]
    seconds_per_cycle = 1.0 / (hw.clock_mhz * 1e6)
    baselines = {}
    for name, what in SAME_SHAPE.items():
        details = [layer.pop(f"_{name}_detail") for layer in layers]
        baselines[name] = {**_sum_details(details, seconds_per_cycle), "model": "output", "what": what}
    return layers, _sum_details(layers, seconds_per_cycle), baselines


def cost_schedule(schedule: Schedule, hw: EscalateConfig, counterpart: bool = True) -> CostReport:
    """The compiled model's cost; with ``counterpart`` the report also carries the totals of the other
    ``activation_skipping`` setting (``activation_skipping`` section) when any layer's zeros were measured."""
    layers, total, baselines = schedule_totals(schedule, hw)
    cycles, latency, energy = total["latency_cycles"], total["latency_s"], total["energy_j"]
    breakdown = total["energy_breakdown_j"]
    dense_macs = sum(layer["macs"] for layer in layers)
    executed = 2 * sum(_executed_macs(layer) for layer in layers)
    extra = _extra(schedule, layers, hw)
    if counterpart:
        extra["activation_skipping"] = _skipping_summary(schedule, hw, cycles, energy)
    return CostReport(
        latency_cycles=cycles, latency_s=latency, energy_j=energy, energy_breakdown_j=breakdown,
        throughput_gops=2 * dense_macs / latency / 1e9 if latency else 0.0,
        tops_per_w=2 * dense_macs / energy / 1e12 if energy else 0.0,
        layers=layers, baselines=baselines, extra=extra, executed_ops=executed,
        executed_note="2 ops per MAC the arrays perform (basis MACs + non-zero coefficient MACs of "
                      "decomposed layers, every MAC of dense-path layers)",
    )


def _skipping_summary(schedule: Schedule, hw: EscalateConfig, cycles: float, energy: float) -> dict[str, Any]:
    """Cycles and energy with and without activation skipping (the other setting costed on the same schedule)."""
    def other() -> tuple[float, float]:
        report = cost_schedule(schedule, hw.replace(activation_skipping=not hw.activation_skipping), counterpart=False)
        return report.latency_cycles, report.energy_j

    measured = sum(1 for plan in schedule.layers if plan.input_density is not None)
    return skipping_summary(hw.activation_skipping, measured, len(schedule.layers), (cycles, energy), other)


def lower_dense(workload: Workload, hw: EscalateConfig) -> Schedule:
    """Every layer as it is (no basis/coefficient pairing): what the dense / sparse baselines run."""
    return Schedule([_dense_plan(rec, hw) for rec in workload.layers])


def accelerator_cost(model: onnx.ModelProto, hw: HardwareConfig | None, kind: str) -> CostReport:
    """The dense (``dense_cost``) or zero-skipping (``sparse_cost``) accelerator running ``model``'s
    layers one after another on the same hardware description (the dense array, buffers and DRAM)."""
    cfg = _config(hw)
    details, total = accelerator_totals(lower_dense(extract_workload(model), cfg), cfg, kind)
    macs = sum(d["macs"] for d in details)
    latency, energy = total["latency_s"], total["energy_j"]
    return CostReport(
        latency_cycles=total["latency_cycles"], latency_s=latency, energy_j=energy,
        energy_breakdown_j=total["energy_breakdown_j"],
        throughput_gops=2 * macs / latency / 1e9 if latency else 0.0,
        tops_per_w=2 * macs / energy / 1e12 if energy else 0.0, layers=details,
    )


def accelerator_totals(schedule: Schedule, hw: EscalateConfig, kind: str) -> tuple[list[dict[str, Any]],
                                                                              dict[str, Any]]:
    """Per-layer costs and totals of the dense or zero-skipping accelerator running a ``lower_dense``
    schedule, at one hardware point or at arrays of points."""
    details = [dense_cost(plan, hw) if kind == "dense" else sparse_cost(plan, hw) for plan in schedule.layers]
    return details, _sum_details(details, 1.0 / (hw.clock_mhz * 1e6))


def _extra(schedule: Schedule, layers: list[dict[str, Any]], hw: EscalateConfig) -> dict[str, Any]:
    store = {k: sum(layer["storage_bits"][k] for layer in layers) for k in ("dense", "escalate", "sparse", "fp32")}
    peak_macs = hw.basis_rows * hw.basis_cols + hw.coef_rows * hw.coef_cols
    occupancy: dict[str, float] = {}
    for layer in layers:
        for key, value in layer["buffer_occupancy_bits"].items():
            occupancy[key] = max(occupancy.get(key, 0.0), value)
    seconds_per_cycle = 1.0 / (hw.clock_mhz * 1e6)
    return {
        "compression": {
            "weight_index_bits_before": store["dense"], "weight_index_bits_after": store["escalate"],
            "ratio": store["dense"] / store["escalate"] if store["escalate"] else float("inf"),
            "ratio_vs_fp32": store["fp32"] / store["escalate"] if store["escalate"] else float("inf"),
            "sparse_baseline_bits": store["sparse"],
            "note": "before = the dense weights of the compiled model's layers (W = coefficients x basis for "
                    "decomposed pairs) at the dense weight width, no index",
        },
        "decomposed_layers": sum(1 for p in schedule.layers if p.kind == "decomposed"),
        "dense_layers": sum(1 for p in schedule.layers if p.kind == "dense"),
        "skipped": schedule.skipped,
        "peak": {
            "macs_per_cycle": peak_macs, "gops": 2 * peak_macs * hw.clock_mhz / 1e3,
            "dense_gops": 2 * hw.dense_rows * hw.dense_cols * hw.clock_mhz / 1e3,
            "buffer_occupancy_bits": occupancy,
            "dram_gbps_needed": max((layer["offchip_bits"] / 8 / (layer["compute_cycles"] * seconds_per_cycle) / 1e9
                                     for layer in layers if layer["compute_cycles"] > 0), default=0.0),
            "layer_energy_j": max((layer["energy_j"] for layer in layers), default=0.0),
        },
        "offchip_bits": sum(layer["offchip_bits"] for layer in layers),
        "onchip_bits": sum(layer["onchip_bits"] for layer in layers),
    }


#: The baselines on the input model (``baseline_plans``): accelerator kind → what it is.
ACCELERATORS = {
    "dense": "the dense accelerator (dense_rows x dense_cols array, same buffers and DRAM)",
    "sparse": "the zero-skipping accelerator (dense_rows x dense_cols lanes with index overhead) on the model's "
              "own zeros",
}


@register_target
class EscalateTarget(Target):
    name = "escalate"
    summary = "ESCALATE kernel-decomposition accelerator (Basis-First dataflow) with dense and sparse baselines"
    config_cls = EscalateConfig

    def default_pipeline(self) -> list[tuple[str, dict[str, Any]]]:
        """Post-training decomposition chooses each layer's rank and coefficient sparsity under the accuracy
        budget, refitting the coefficients to the original outputs (``decompose`` without ``rank``); without
        labelled data it changes nothing lossy. Pairs exported by ``pimc export decompose`` (PENNI) are
        recognised and kept."""
        return [
            ("fold-constants", {}), ("eliminate-identity", {}), ("fold-batchnorm", {}),
            ("fuse-relu", {"measure": False}), ("decompose", {}), ("shrink", {}), ("cleanup", {}),
            ("activation-sparsity", {}),
        ]

    def lower(self, model: onnx.ModelProto, hw: HardwareConfig | None) -> Schedule:
        return lower_workload(extract_workload(model), _config(hw))

    def cost(self, schedule: Schedule, hw: HardwareConfig | None) -> CostReport:
        return cost_schedule(schedule, _config(hw))

    def break_even(self, model: onnx.ModelProto, hw: HardwareConfig | None) -> list[dict[str, Any]]:
        """Every layer on the sparse baseline's zero-skipping lanes against the dense array."""
        return break_even_layers(model, _config(hw))

    def baseline_plans(self) -> list[BaselinePlan]:
        return [BaselinePlan(kind, what, functools.partial(accelerator_cost, kind=kind), reference=kind == "dense")
                for kind, what in ACCELERATORS.items()]

    def cost_many(self, model: onnx.ModelProto, baseline_model: onnx.ModelProto,
                  values: dict[str, list[Any]]) -> dict[str, Any]:
        """Cost and baselines at N hardware points at once (``escalate_batch.cost_many``); ``values`` maps
        hardware parameters to N values each, the others keep their defaults."""
        from .escalate_batch import cost_many

        return cost_many(extract_workload(model), extract_workload(baseline_model), values)


BREAK_EVEN_STEPS = 1000


def break_even_sparsity(plan: LayerPlan, hw: EscalateConfig) -> float | None:
    """The lowest sparsity s (on a 1/1000 grid) at which ``sparse_cost`` ≤ ``dense_cost`` in cycles, with the
    non-zeros spread evenly over the output rows (nnz_o = round((1 − s)·Cg·k²)); None if even one non-zero
    per row is slower. Cycles fall monotonically with s, so the boundary is found by bisection."""
    geo = plan.geometry
    per_row = (geo.cin // geo.groups) * geo.k2
    dense = dense_cost(plan, hw)["cycles"]

    def sparse_ok(step: int) -> bool:
        kept = max(1, int(round((1 - step / BREAK_EVEN_STEPS) * per_row)))
        rows = np.full(geo.cout, kept, dtype=np.int64)
        trial = LayerPlan(plan.name, "dense", geo, WeightStats(plan.dense.params, int(rows.sum()), rows,
                                                                plan.dense.bits), plan.act_bits, plan.members)
        return sparse_cost(trial, hw)["cycles"] <= dense

    lo, hi = 0, BREAK_EVEN_STEPS
    if not sparse_ok(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if sparse_ok(mid) else (mid + 1, hi)
    return hi / BREAK_EVEN_STEPS


def break_even_layers(model: onnx.ModelProto, hw: EscalateConfig) -> list[dict[str, Any]]:
    out = []
    for plan in lower_dense(extract_workload(model), hw).layers:
        s = break_even_sparsity(plan, hw)
        density = 1.0 - plan.dense.nnz / max(plan.dense.params, 1)
        out.append({"layer": plan.name, "break_even_sparsity": s,
                    "break_even_ratio": None if s is None else round(1.0 / max(1.0 - s, 1e-9), 3),
                    "sparsity": round(density, 4), "sparse_pays": s is not None and density >= s})
    return out


def _config(hw: HardwareConfig | None) -> EscalateConfig:
    if hw is None:
        return EscalateConfig()
    if not isinstance(hw, EscalateConfig):
        raise PimcError("the escalate target needs an escalate hardware config")
    return hw
