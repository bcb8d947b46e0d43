"""The CiM target: an SRAM charge-domain compute-in-memory macro (Yin et al., arXiv 2212.04320, 65 nm).

The macro (docs/sources.md, confirmed): signed 8b activations × signed 8b weights summed in a fully parallel
analog adder network; ONE A/D conversion per CiM cycle yields the MAC (and ReLU) of two 8b vectors of
length N. 51.2 GOPS and 10.3 TOPS/W for one macro. Rows N, clock, energies and the ADC are unknown;
every default below says where it comes from or that it is an assumption.

Mapping (lowering)
------------------
A Conv (per group) or Gemm/MatMul is an im2col matrix product Y[P, Cout] = X[P, K] · W[K, Cout] with
K = (Cin/groups)·kh·kw and P = batch·outH·outW output positions. The macro stores ``columns`` weight
vectors of N 8b weights each and evaluates one of them per cycle (single ADC):

* **column-tiles.** Output channel c needs T_c = ceil(K_c / N) weight vectors ("column-tiles"); dense
  layers have K_c = K and row tile t covers im2col rows [tN, (t+1)N) in (cin, ky, kx) order.
* **pattern packing.** A pattern-pruned layer (map ``pattern`` [Cout, Cin], -1 = pruned kernel, node
  annotation ``pattern_library``) packs each column's kept weights densely: K_c = Σ_cin |pattern(c, cin)|
  (pruned kernels contribute 0), in (cin, position) order. Only one column is evaluated per cycle, so the
  input drivers can present a different gathered input vector every cycle (an input-gather unit reading
  the activations named by the column's pattern ids); a 4-of-9 pattern needs 4/9 of the rows and cycles.
  A filter whose kernels are all pruned has T_c = 0: no cycle, no conversion (its output is the bias).
* **blocks and rounds.** A block is one macro load of ``columns`` column-tiles (N rows each). With M
  macros, blocks run M at a time ("rounds"); each round writes its blocks (weight-stationary reload),
  then streams all P positions: round cycles = ceil(P / r) · max(column-tiles of its blocks), where
  r = floor(M / blocks) replicates a small layer over idle macros (r = 1 when it does not fit). If the
  whole network's blocks fit in the M macros the weights are resident and never rewritten per inference.
* **partial sums.** K_c > N gives T_c partial sums, each converted by the ADC and accumulated digitally
  (T_c − 1 adds per output, partial sums written to and read back from the output buffer). ReLU fuses only
  into the LAST conversion of each output (assumption: the digitally accumulated partial sum is injected
  as an offset into that conversion, so its sign is the sign of the total).
* **bits.** The macro is signed 8b×8b, bit-parallel. ``weight_bits``/``act_bits`` ≤ 8 (values on an
  n-bit grid inside int8, as the quantize pass stores them) are sign-extended into the 8b cells and
  drivers: cycles and energies are those of 8b — the macro gains nothing from fewer bits. Wider operands
  (> 8b) take ceil(wb/8)·ceil(ab/8) passes (bit slices) with digital shift-add. Unannotated layers
  (no quantize pass) are costed as 8b and flagged ``bits_assumed``.
* MatMul/Gemm without a constant weight (activation × activation) cannot be weight-stationary: it is
  listed in ``cost.skipped``. Pooling, residual adds and other element-wise ops are not costed.
* Conv1d is a record with H = 1; Conv3d folds the depth into the rows (K = Cin/G·kd·kh·kw, P =
  B·outD·outH·outW); grouped convs map group by group, dilation changes only which inputs are gathered.
* **ConvTranspose** is costed in its scatter form (``workload.scatter_record``): per group the GEMM
  Y[B·H·W, (Cout/G)·kh·kw] = X[B·H·W, Cin/G] · W[Cin/G, (Cout/G)·kh·kw] over the *input* pixels, whose
  partial products are overlap-added digitally (counted as the per-output digital adds below). MACs =
  B·Cin·H·W·(Cout/G)·kh·kw. The zero-inserted-input conv would spend cycles and conversions on the
  (s² − 1)/s² inserted zeros for stride s (the macro cannot skip zero inputs), so the scatter form is
  the one a mapper would pick; it also needs only K = Cin/G rows per column. Its ReLU is never fused
  (the overlap-add follows the conversions; fuse-relu marks Conv/Gemm/MatMul only).

Cost equations (per layer; s = bit passes, E_adc = ``adc_energy_pj``, B = ``adc_bits``)
------------------------------------------------------------------------------------------
* cycles = s · Σ_rounds ceil(P/r)·maxcol(round) + rounds · write_cycles_per_block (no overlap; 0 if resident)
* conversions = s · P · Σ_c T_c;  last conversions L = s · P · #{c : T_c > 0}
* E_array = conversions · N · ``array_energy_per_row_fj`` (the whole adder network switches every cycle)
* E_ADC = (conversions − L) · E_adc + L · E_adc · [(1 − p_neg) + p_neg / B] for ReLU-fused layers
  (docs/sources.md; sign resolved first, the remaining B−1 steps skipped for negative outputs), with p_neg the
  MEASURED ``neg_fraction`` of the fuse-relu pass; E_adc per conversion otherwise.
* E_digital = (conversions − L + P·Cout) · ``digital_add_energy_pj`` (partial-sum adds + bias/requant)
* E_buffers = input drives · rows · act_bits · ``input_buffer_pj_per_bit``
  + (P·Cout·8 + 2·(conversions − L)·``psum_bits``) · ``output_buffer_pj_per_bit``
  + weight bits written · ``weight_buffer_pj_per_bit``
* E_weight_writes = weight bits written · ``weight_write_energy_fj_per_bit``

Activation zeros (``activation_skipping``; an assumption, the paper says nothing about them). On the zeros
the ``activation-sparsity`` pass MEASURED on ``--data`` (a layer without the measurement is costed dense):
* a row tile (N im2col rows of one position, the aligned chunk the pass measures) whose inputs are all zero
  is detected by an OR of its N inputs and costs no cycle and no conversion: cycles, conversions and
  last conversions × (1 − z_N), z_N = the measured all-zero fraction of N-row chunks (the next larger
  measured size when N is not one; pattern-packed layers gather scattered inputs and skip nothing);
* a zero input leaves its row's capacitors uncharged: E_array × d_rows / (1 − z_N), d_rows the measured
  non-zero fraction of the im2col rows (padding included), over the evaluated tiles; the ADC costs the same;
* the input map is read compressed: input buffer bits × min(1, d + 1/act_bits) (non-zero values + a 1-bit
  mask per element). The ``digital`` baseline gets the same tile skipping and gates its MACs on zero inputs.
The report's ``activation_skipping`` section gives cycles and energy with and without.

Peak figures (one fully used macro, p_neg = 0, macro energy only):
  peak_gops = 2·N·f·M;  peak_tops_per_w = 2·N / (N·e_row + E_adc).
Defaults: 2·N·f = 2·64·400 MHz = 51.2 GOPS (ANCHORS: N·f fixed by 51.2 GOPS, N = 64 at 400 MHz chosen).
Power = 51.2 GOPS / 10.3 TOPS/W = 4.97 mW, i.e. 12.427 pJ per cycle = 194.2 fJ per 8b MAC (N = 64). The
split between array and ADC is an assumption: ADC 4.971 pJ per conversion (40 %), array 116.5 fJ per row
(60 %, 7.456 pJ per cycle) → 128 ops / 12.427 pJ = 10.30 TOPS/W.
Throughput: the report's ``throughput_gops`` / ``tops_per_w`` count 2 ops per dense MAC of the input
model (compiler/target.py ``count_input_ops``); ``executed_gops`` / ``executed_tops_per_w`` count 2 ops per
MAC the macro evaluates (stored weights × positions, zero weights included, unused rows excluded), over
the whole latency / energy including buffers, digital accumulation and weight writes.

Baselines (``compiler/baselines.py``; costed on the INPUT model after the exact normalisations only, or on
``--baseline-model NAME=FILE``)
------------------------------------------------------------------------------------------------
* ``input``: this macro, same hardware description, running the input model as loaded: no fuse-relu
  marks (no ADC saving), 8b assumed where there are no bit annotations.
* ``digital``: a digital 8-bit MAC array at the same node (65 nm), at **equal peak throughput**: N = ``rows``
  8b×8b multipliers with an adder tree and accumulator per macro at the same clock, 2·N·f·M = 51.2 GOPS.
  It gets the macro's own storage (``rows × columns × 8b`` SRAM per macro, 1 KiB), mapping, cycles, buffers,
  partial-sum adds and weight writes; the analog adder network and the ADC are replaced by reading each
  evaluated column's 8b weights out of that SRAM and by N digital MACs:
      E_mac   = MACs · s · (E_mult8 + E_add32)           (one 8b multiply + one 32b accumulate per MAC)
      E_wread = MACs · 8 · s · e_sram(1 KiB)             (the weight of every MAC read from the SRAM)
      MACs    = bit passes · positions · Σ_column-tiles rows used; latency = the macro's cycles
  E_mult8 = 0.2 pJ, E_add32 = 0.1 pJ, 8 KB / 32 KB SRAM 64-bit reads 10 / 20 pJ: Horowitz, ISSCC 2014,
  45 nm, 0.9 V. e_sram(size) extrapolates below 8 KB along the 8→32 KB log-log slope (as the escalate
  target does): 1 KiB → 10·(1/8)^0.5 = 3.54 pJ per 64 bits. Node scaling 45 → 65 nm: s = (65/45)·(1.0/0.9)²
  = 1.783 (classical E ∝ C·V², C ∝ L; 1.0 V at 65 nm is an assumption, the macro's VDD is unknown).
  Per MAC: 1.783·(0.3 + 8·3.54/64) = 1.32 pJ → peak 1.51 TOPS/W (macro only, no buffers) vs 10.3.
"""

from __future__ import annotations

import dataclasses
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
from ..compiler.workload import LayerRecord, extract_workload, scatter_record

MACRO_BITS = 8


@dataclass
class CimConfig(HardwareConfig):
    """One or more SRAM charge-domain CiM macros with buffers and a digital accumulator."""

    rows: int = hw_field(64, "rows", "assumption: N = 64 (ANCHORS: 2·N·f = 51.2 GOPS allows 64@400 MHz, 128@200 MHz, ...)")
    columns: int = hw_field(16, "weight vectors per macro",
                            "assumption: 16 resident 64×8b weight vectors (8 kb of SRAM cells) per macro")
    macros: int = hw_field(1, "macros", "paper: one macro gives 51.2 GOPS / 10.3 TOPS/W")
    clock_mhz: float = hw_field(400.0, "MHz", "assumption paired with rows: 2·64·400 MHz = 51.2 GOPS (ANCHORS)")
    array_energy_per_row_fj: float = hw_field(
        116.5, "fJ per row per cycle",
        "derived: 60 % (assumption) of 12.427 pJ/cycle = 64 × 194.2 fJ/MAC (51.2 GOPS / 10.3 TOPS/W, ANCHORS)")
    adc_energy_pj: float = hw_field(
        4.971, "pJ per full conversion", "derived: 40 % (assumption) of the 12.427 pJ cycle energy (ANCHORS)")
    adc_bits: int = hw_field(8, "bits", "assumption: 8b ADC output (unknown in the paper; matches 8b activations)")
    relu_fusion: bool = hw_field(
        True, "flag", "paper: MAC + ReLU in one conversion; energy model E_ADC·[(1−p)+p/B] is an assumption (ANCHORS)")
    digital_add_energy_pj: float = hw_field(
        0.1, "pJ per add", "assumption: ~24b integer add in 65 nm (Horowitz 45 nm: 32b add 0.1 pJ)")
    psum_bits: int = hw_field(16, "bits", "assumption: partial sums buffered at 16b")
    input_buffer_pj_per_bit: float = hw_field(0.05, "pJ/bit", "assumption: small 65 nm SRAM buffer read")
    output_buffer_pj_per_bit: float = hw_field(0.05, "pJ/bit", "assumption: small 65 nm SRAM buffer access")
    weight_buffer_pj_per_bit: float = hw_field(0.05, "pJ/bit", "assumption: weight buffer read feeding writes")
    weight_write_energy_fj_per_bit: float = hw_field(30.0, "fJ/bit", "assumption: 65 nm 6T SRAM cell write")
    weight_write_bits_per_cycle: int = hw_field(
        128, "bits/cycle", "assumption: one 16×8b macro row written per clock cycle")
    overlap_weight_writes: bool = hw_field(
        False, "flag", "assumption: a macro cannot compute while its weights are rewritten")
    replicate: bool = hw_field(True, "flag", "assumption: small layers are copied onto idle macros")
    activation_skipping: bool = hw_field(
        True, "flag", "assumption (the paper says nothing): an OR of a row tile's N inputs skips all-zero tiles; "
        "a zero input leaves its row uncharged; costed only on MEASURED zeros (activation-sparsity pass)")
    digital_mult_8b_pj: float = hw_field(0.2, "pJ", "Horowitz ISSCC'14, 45 nm 0.9 V: 8-bit multiply (digital baseline)")
    digital_add_32b_pj: float = hw_field(0.1, "pJ", "Horowitz ISSCC'14, 45 nm 0.9 V: 32-bit add (digital MAC accumulate)")
    digital_sram_8kb_pj: float = hw_field(10.0, "pJ/64b", "Horowitz ISSCC'14, 45 nm: 8 KB SRAM 64-bit read")
    digital_sram_32kb_pj: float = hw_field(20.0, "pJ/64b", "Horowitz ISSCC'14, 45 nm: 32 KB SRAM 64-bit read")
    digital_node_scale: float = hw_field(
        1.783, "x", "derived: 45 → 65 nm by E ∝ C·V², C ∝ L: (65/45)·(1.0 V/0.9 V)²; 0.9 V is Horowitz's "
        "supply, 1.0 V at 65 nm an assumption")

    def validate(self) -> None:
        super().validate()
        for name in ("rows", "columns", "macros", "adc_bits", "weight_write_bits_per_cycle", "psum_bits"):
            if getattr(self, name) < 1:
                raise PimcError(f"hardware parameter '{name}' must be at least 1 (got {getattr(self, name)})")
        if self.clock_mhz <= 0:
            raise PimcError("hardware parameter 'clock_mhz' must be positive")

    @property
    def clock_hz(self) -> float:
        return self.clock_mhz * 1e6

    @property
    def cycle_energy_j(self) -> float:
        """Macro energy of one full (unfused) CiM cycle: array + one A/D conversion."""
        return self.rows * self.array_energy_per_row_fj * 1e-15 + self.adc_energy_pj * 1e-12

    @property
    def peak_gops(self) -> float:
        return 2 * self.rows * self.clock_hz * self.macros / 1e9

    @property
    def peak_tops_per_w(self) -> float:
        return 2 * self.rows / self.cycle_energy_j / 1e12

    @property
    def digital_sram_pj_per_bit(self) -> float:
        """45 nm read energy per bit of the macro-sized weight SRAM (rows·columns·8b), log-log from 8/32 KB."""
        size_kb = self.rows * self.columns * MACRO_BITS / 8 / 1024
        e8, e32 = self.digital_sram_8kb_pj, self.digital_sram_32kb_pj
        slope = math.log(e32 / e8) / math.log(4.0) if e8 > 0 and e32 > 0 else 0.0
        return e8 * (max(size_kb, 1e-3) / 8.0) ** slope / 64.0

    @property
    def digital_pj_per_mac(self) -> dict[str, float]:
        """Digital baseline energy per 8b MAC at 65 nm: arithmetic and the weight read."""
        s = self.digital_node_scale
        return {"mac": s * (self.digital_mult_8b_pj + self.digital_add_32b_pj),
                "weight_read": s * MACRO_BITS * self.digital_sram_pj_per_bit}

    @property
    def write_cycles_per_block(self) -> int:
        return self.rows * math.ceil(self.columns * MACRO_BITS / self.weight_write_bits_per_cycle)


@dataclass
class ColumnLayout:
    """Where each output channel's weights go: column-tiles and rows used, per group."""

    tiles: np.ndarray  # [groups, Cout_g] column-tiles per output channel
    tile_rows: np.ndarray  # rows used by each column-tile, in schedule order
    tile_keys: np.ndarray  # input-vector identity of each column-tile, in schedule order
    packed: bool
    index_bits: int = 0  # pattern-id bits read per position (input gather), packed layers only


@dataclass
class LayerPlan:
    name: str
    op: str
    positions: int
    cout: int
    k_rows: int
    groups: int
    layout: ColumnLayout
    blocks: int
    rounds: int
    replication: int
    compute_cycles: int
    write_cycles: int
    bit_passes: int
    conversions: int
    last_conversions: int
    input_bits_read: int
    weight_bits_written: int
    macs: int
    effective_macs: int
    weight_bits: int
    act_bits: int
    bits_assumed: bool
    relu_fused: bool
    neg_fraction: float
    neg_fraction_source: str | None
    notes: list[str] = field(default_factory=list)
    input_density: float | None = None  # measured non-zero fraction of the input map (None: not measured)
    tile_zero: float = 0.0  # measured all-zero fraction of the layer's row tiles (N im2col rows)
    row_density: float = 1.0  # measured non-zero fraction of the im2col rows (padding included)
    skipping: bool = False  # whether the measured zeros were applied (see ``apply_skipping``)

    @property
    def cycles(self) -> int:
        return self.compute_cycles + self.write_cycles

    @property
    def column_tiles(self) -> int:
        return int(self.layout.tiles.sum())


@dataclass
class CimSchedule:
    plans: list[LayerPlan]
    skipped: list[dict[str, str]]
    weights_resident: bool
    total_blocks: int
    emulated: dict[str, Any] = field(default_factory=dict)


def weight_matrix(layer: LayerRecord) -> np.ndarray:
    """The layer's weights as [groups, Cout_g, K] in im2col (cin, ky, kx) row order."""
    w = np.asarray(layer.weight, dtype=np.float32)
    if layer.op == "Conv":
        g = max(layer.groups, 1)
        return w.reshape(g, w.shape[0] // g, -1)
    return w.T.reshape(1, w.shape[1], w.shape[0])


def pattern_row_mask(layer: LayerRecord) -> np.ndarray | None:
    """Kept (cin, position) rows per output channel from the ``pattern`` map: bool [Cout, Cin_g·kh·kw]."""
    ids = layer.maps.get("pattern")
    library = layer.annotations.get("pattern_library")
    if ids is None or library is None or layer.op != "Conv":
        return None
    kk = layer.kernel[0] * layer.kernel[1]
    table = np.zeros((len(library) + 1, kk), dtype=bool)
    for i, positions in enumerate(library):
        table[i, [int(p) for p in positions]] = True
    ids = np.asarray(ids, dtype=np.int64)
    if ids.shape != (layer.cout, layer.cin_per_group):
        raise PimcError(f"layer '{layer.name}': pattern map shape {ids.shape} does not match "
                        f"[{layer.cout}, {layer.cin_per_group}]")
    rows = table[np.where(ids < 0, len(library), ids)]
    return rows.reshape(layer.cout, -1)


def tile_assignment(w: np.ndarray, rows: int, mask: np.ndarray | None) -> np.ndarray:
    """Row tile of every weight in w [groups, Cout_g, K]: -1 where the weight is not stored.

    Dense: tile = k // N. Packed (``mask`` [Cout, K] of kept rows): a column's kept rows are numbered in
    order and tile = rank // N. The cim-emulate pass uses the same assignment.
    """
    g, cout_g, k = w.shape
    if mask is None:
        return np.broadcast_to(np.arange(k) // rows, w.shape).astype(np.int64)
    m = mask.reshape(g, cout_g, k)
    rank = np.cumsum(m, axis=2) - 1
    return np.where(m, rank // rows, -1).astype(np.int64)


def column_layout(layer: LayerRecord, hw: CimConfig) -> ColumnLayout:
    g = max(layer.groups, 1)
    k = layer.cin_per_group * layer.kernel[0] * layer.kernel[1] if layer.op == "Conv" else layer.cin
    cout_g = layer.cout // g
    n = hw.rows
    kept = _pattern_rows(layer)
    if kept is None:
        t = math.ceil(k / n)
        tiles = np.full((g, cout_g), t, dtype=np.int64)
        per_tile = np.minimum(n, k - n * np.arange(t))
        # schedule order: group, row tile, column → each (group, tile) input vector is driven once per block
        rows_seq = np.repeat(np.tile(per_tile, g), cout_g)
        keys = np.repeat(np.arange(g * t), cout_g)
        return ColumnLayout(tiles, rows_seq, keys, packed=False)
    kept = kept.reshape(g, cout_g)
    tiles = -(-kept // n)
    flat = tiles.reshape(-1)
    starts = np.repeat(np.cumsum(flat) - flat, flat)
    idx = np.arange(int(flat.sum())) - starts
    rows_seq = np.minimum(n, np.repeat(kept.reshape(-1), flat) - idx * n)
    keys = np.arange(len(rows_seq))
    library = layer.annotations.get("pattern_library") or []
    id_bits = max(1, math.ceil(math.log2(len(library) + 1)))
    kernels = int(np.count_nonzero(np.asarray(layer.maps["pattern"]) >= 0))
    return ColumnLayout(tiles, rows_seq, keys, packed=True, index_bits=kernels * id_bits)


def _pattern_rows(layer: LayerRecord) -> np.ndarray | None:
    """Kept rows per output channel of a pattern-pruned conv (Σ_cin |pattern|), None if it has no map."""
    ids = layer.maps.get("pattern")
    library = layer.annotations.get("pattern_library")
    if ids is None or library is None or layer.op != "Conv" or layer.weight is None:
        return None
    ids = np.asarray(ids)
    if ids.shape != (layer.cout, layer.cin_per_group):
        raise PimcError(f"layer '{layer.name}': pattern map shape {ids.shape} does not match "
                        f"[{layer.cout}, {layer.cin_per_group}]")
    sizes = {len(p) for p in library}
    if len(sizes) == 1:
        return np.count_nonzero(ids >= 0, axis=1).astype(np.int64) * sizes.pop()
    table = np.array([0] + [len(p) for p in library], dtype=np.int64)
    return table[ids.astype(np.int64) + 1].sum(axis=1)


def _input_drives(layout: ColumnLayout, columns: int) -> int:
    """Rows driven per position: one drive per distinct input vector within each block."""
    keys = layout.tile_keys
    if len(keys) == 0:
        return 0
    if layout.packed:
        return int(layout.tile_rows.sum())
    change = np.flatnonzero(np.diff(keys)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [len(keys)]))
    rows = layout.tile_rows[starts]
    pieces = 1 + (ends - 1) // columns - starts // columns
    return int(np.sum(pieces * rows))


def _bits(layer: LayerRecord) -> tuple[int, int, bool]:
    wb, ab = layer.weight_bits, layer.act_bits
    assumed = wb is None or ab is None
    return int(wb or MACRO_BITS), int(ab or MACRO_BITS), assumed


def _emulated_record(layer: LayerRecord) -> LayerRecord:
    """A cim-emulate stacked node (T tiles stacked on the output axis) seen as the original layer."""
    t = int(layer.annotations.get("cim_tiles", 1))
    if t <= 1 or layer.weight is None:
        return layer
    w = np.asarray(layer.weight)
    if layer.op == "Conv":
        g = max(layer.groups, 1)
        merged = w.reshape(g, t, w.shape[0] // (g * t), *w.shape[1:]).sum(axis=1).reshape(-1, *w.shape[1:])
    else:
        merged = w.reshape(w.shape[0], t, -1).sum(axis=1)
    return dataclasses.replace(layer, cout=layer.cout // t, weight=merged, params=int(merged.size),
                               nonzero=int(np.count_nonzero(merged)))


def plan_layer(layer: LayerRecord, hw: CimConfig, resident: bool, layout: ColumnLayout) -> LayerPlan:
    wb, ab, assumed = _bits(layer)
    passes = math.ceil(wb / MACRO_BITS) * math.ceil(ab / MACRO_BITS)
    positions = layer.batch * layer.out_h * layer.out_w
    col_tiles = int(layout.tiles.sum())
    blocks = math.ceil(col_tiles / hw.columns)
    m = hw.macros
    replication = 1
    if not resident and hw.replicate and 0 < blocks < m:
        replication = m // blocks
    rounds = math.ceil(blocks / m) if blocks else 0
    compute = 0
    if blocks:
        full_blocks = col_tiles // hw.columns
        last_max = hw.columns if full_blocks > (rounds - 1) * m else col_tiles - full_blocks * hw.columns
        compute = passes * math.ceil(positions / replication) * ((rounds - 1) * hw.columns + last_max)
    written = 0 if resident else blocks * replication * hw.rows * hw.columns * MACRO_BITS
    writes = 0 if resident or hw.overlap_weight_writes else rounds * hw.write_cycles_per_block
    active = int(np.count_nonzero(layout.tiles))
    conversions = passes * positions * col_tiles
    last = passes * positions * active
    fused = bool(hw.relu_fusion and layer.fused_activation == "Relu")
    notes = []
    p_neg = layer.annotations.get("neg_fraction")
    source = layer.annotations.get("neg_fraction_source")
    if fused and p_neg is None:
        notes.append("ReLU marked but neg_fraction not measured: no ADC saving counted")
    if fused and source == "random":
        notes.append("neg_fraction measured on random inputs (pass --data for a real one)")
    if layer.annotations.get("lowered_from") == "ConvTranspose":
        notes.append("ConvTranspose costed in its scatter form (1×1 GEMM over the input pixels)")
    drives = _input_drives(layout, hw.columns)
    input_bits = passes * positions * (drives * min(ab, MACRO_BITS) + layout.index_bits)
    k = layer.cin_per_group * layer.kernel[0] * layer.kernel[1] if layer.op == "Conv" else layer.cin
    density = layer.input_density
    measured = density is not None
    return LayerPlan(
        name=layer.name, op=layer.op, positions=positions, cout=layer.cout, k_rows=k, groups=max(layer.groups, 1),
        layout=layout, blocks=blocks, rounds=rounds, replication=replication, compute_cycles=compute,
        write_cycles=writes, bit_passes=passes, conversions=conversions, last_conversions=last,
        input_bits_read=input_bits, weight_bits_written=written, macs=layer.macs,
        effective_macs=layer.effective_macs, weight_bits=wb, act_bits=ab, bits_assumed=assumed,
        relu_fused=fused, neg_fraction=float(p_neg or 0.0) if fused else 0.0, neg_fraction_source=source,
        notes=notes, input_density=density,
        # packed layers gather scattered inputs per column: their all-zero vectors are not measured, no cycle skip
        tile_zero=layer.input_zero_chunk_fraction(min(hw.rows, k)) if measured and not layout.packed else 0.0,
        row_density=1.0 - layer.input_zero_chunk_fraction(1) if measured else 1.0,
    )


def apply_skipping(plan: LayerPlan, hw: CimConfig) -> LayerPlan:
    """The plan with its measured zero activations applied (unchanged when skipping is off or nothing was
    measured): row tiles whose N inputs are all zero cost no cycle and no conversion (z_N), the array
    switches only the rows of non-zero inputs, and the input map is read compressed (non-zero values + a
    1-bit mask per element)."""
    if not hw.activation_skipping or plan.input_density is None or plan.skipping:
        return plan
    keep = 1.0 - plan.tile_zero
    storage = min(1.0, plan.input_density + 1.0 / max(plan.act_bits, 1))
    return dataclasses.replace(
        plan, compute_cycles=int(round(plan.compute_cycles * keep)), conversions=int(round(plan.conversions * keep)),
        last_conversions=int(round(plan.last_conversions * keep)),
        input_bits_read=int(round(plan.input_bits_read * storage)), skipping=True)


def _array_activity(plan: LayerPlan) -> float:
    """Share of the driven rows of the evaluated tiles whose input is non-zero."""
    if not plan.skipping:
        return 1.0
    return min(1.0, plan.row_density / max(1.0 - plan.tile_zero, 1e-12))


def lower_workload(layers: list[LayerRecord], hw: CimConfig) -> CimSchedule:
    skipped, usable = [], []
    for layer in map(scatter_record, layers):
        if layer.weight is None:
            skipped.append({"node": layer.name, "reason": "no constant weight (activation × activation product)"})
            continue
        usable.append(_emulated_record(layer) if layer.role == "cim_emulation" else layer)
    layouts = [column_layout(layer, hw) for layer in usable]
    total_blocks = sum(math.ceil(int(layout.tiles.sum()) / hw.columns) for layout in layouts)
    resident = total_blocks <= hw.macros
    plans = [plan_layer(layer, hw, resident, layout) for layer, layout in zip(usable, layouts, strict=True)]
    emulated = {
        layer.name: {"rows": layer.annotations.get("cim_rows"), "sigma": layer.annotations.get("cim_sigma")}
        for layer in usable if layer.role == "cim_emulation"
    }
    return CimSchedule(plans, skipped, resident, total_blocks, emulated)


@dataclass
class LayerEnergy:
    array: float
    adc: float
    adc_unfused: float
    digital: float
    buffers: float
    weight_writes: float

    @property
    def total(self) -> float:
        return self.array + self.adc + self.digital + self.buffers + self.weight_writes


def layer_energy(plan: LayerPlan, hw: CimConfig) -> LayerEnergy:
    e_adc = hw.adc_energy_pj * 1e-12
    array = plan.conversions * hw.rows * hw.array_energy_per_row_fj * 1e-15 * _array_activity(plan)
    unfused = plan.conversions * e_adc
    adc = unfused
    if plan.relu_fused:
        p = plan.neg_fraction
        adc = (plan.conversions - plan.last_conversions) * e_adc
        adc += plan.last_conversions * e_adc * ((1 - p) + p / hw.adc_bits)
    psum_convs = plan.conversions - plan.last_conversions
    outputs = plan.positions * plan.cout
    digital = (psum_convs + outputs) * hw.digital_add_energy_pj * 1e-12
    buffers = (plan.input_bits_read * hw.input_buffer_pj_per_bit
               + (outputs * MACRO_BITS + 2 * psum_convs * hw.psum_bits) * hw.output_buffer_pj_per_bit
               + plan.weight_bits_written * hw.weight_buffer_pj_per_bit) * 1e-12
    writes = plan.weight_bits_written * hw.weight_write_energy_fj_per_bit * 1e-15
    return LayerEnergy(array, adc, unfused, digital, buffers, writes)


def _layer_row(plan: LayerPlan, energy: LayerEnergy, hw: CimConfig) -> dict[str, Any]:
    slots = plan.cycles * hw.rows * hw.macros
    tiles = plan.layout.tiles[plan.layout.tiles > 0]
    row_util = float(plan.layout.tile_rows.sum() / (hw.rows * len(plan.layout.tile_rows))) \
        if len(plan.layout.tile_rows) else 0.0
    return {
        "name": plan.name, "op": plan.op, "cycles": plan.cycles, "energy_j": energy.total,
        "utilization": plan.effective_macs / slots if slots else 0.0,
        "row_utilization": row_util,
        "compute_cycles": plan.compute_cycles, "write_cycles": plan.write_cycles,
        "positions": plan.positions, "k_rows": plan.k_rows, "cout": plan.cout, "groups": plan.groups,
        "row_tiles_max": int(tiles.max()) if len(tiles) else 0,
        "column_tiles": plan.column_tiles, "blocks": plan.blocks, "weight_loads": plan.rounds,
        "replication": plan.replication, "bit_passes": plan.bit_passes,
        "conversions": plan.conversions, "partial_sum_conversions": plan.conversions - plan.last_conversions,
        "packing": "pattern" if plan.layout.packed else "dense",
        "weight_bits": plan.weight_bits, "act_bits": plan.act_bits, "bits_assumed": plan.bits_assumed,
        "relu_fused": plan.relu_fused, "neg_fraction": plan.neg_fraction,
        "neg_fraction_source": plan.neg_fraction_source,
        "input_density": plan.input_density, "activation_skipping": plan.skipping,
        "zero_row_tile_fraction": plan.tile_zero if plan.skipping else 0.0,
        "macs": plan.macs, "effective_macs": plan.effective_macs,
        "energy_breakdown_j": {"array": energy.array, "adc": energy.adc, "digital": energy.digital,
                               "buffers": energy.buffers, "weight_writes": energy.weight_writes},
        "adc_saving_j": energy.adc_unfused - energy.adc,
        "notes": plan.notes,
    }


def schedule_cost(schedule: CimSchedule, hw: CimConfig, counterpart: bool = True) -> CostReport:
    """The schedule's cost; with ``counterpart`` the report also gives the totals of the other
    ``activation_skipping`` setting (``activation_skipping`` section)."""
    raw, schedule = schedule, dataclasses.replace(schedule, plans=[apply_skipping(p, hw) for p in schedule.plans])
    energies = [layer_energy(p, hw) for p in schedule.plans]
    cycles = sum(p.cycles for p in schedule.plans)
    latency = cycles / hw.clock_hz
    total = sum(e.total for e in energies)
    ops = 2 * sum(p.effective_macs for p in schedule.plans)
    executed = 2 * sum(executed_macs(p) for p in schedule.plans)
    breakdown = {
        "array": sum(e.array for e in energies), "adc": sum(e.adc for e in energies),
        "digital": sum(e.digital for e in energies), "buffers": sum(e.buffers for e in energies),
        "weight_writes": sum(e.weight_writes for e in energies),
    }
    unfused = sum(e.adc_unfused for e in energies)
    rows = [_layer_row(p, e, hw) for p, e in zip(schedule.plans, energies, strict=True)]
    no_fusion = total + unfused - breakdown["adc"]
    extra = {
        "peak_gops": hw.peak_gops, "peak_tops_per_w": hw.peak_tops_per_w,
        "utilization": ops / 2 / (cycles * hw.rows * hw.macros) if cycles else 0.0,
        "weights_resident": schedule.weights_resident, "total_blocks": schedule.total_blocks,
        "conversions": sum(p.conversions for p in schedule.plans),
        "relu_fusion": _fusion_summary(schedule.plans, energies, hw, unfused),
        "skipped": schedule.skipped,
        "digital_baseline": digital_summary(hw),
    }
    if counterpart:
        extra["activation_skipping"] = _skipping_summary(raw, hw, cycles, total)
    if schedule.emulated:
        extra["cim_emulation"] = schedule.emulated
        mismatched = sorted({v["rows"] for v in schedule.emulated.values() if v["rows"] not in (None, hw.rows)})
        if mismatched:
            extra["warnings"] = [f"cim-emulate used rows={mismatched} but the hardware has rows={hw.rows}"]
    return CostReport(
        latency_cycles=cycles, latency_s=latency, energy_j=total, energy_breakdown_j=breakdown,
        throughput_gops=ops / latency / 1e9 if latency else 0.0,
        tops_per_w=ops / total / 1e12 if total else 0.0, layers=rows,
        baselines={"no_relu_fusion": {
            "latency_s": latency, "latency_cycles": cycles, "energy_j": no_fusion, "model": "output",
            "what": "this macro on the compiled model without the ReLU-aware A/D conversion"}},
        extra=extra, executed_ops=float(executed),
        executed_note="2 ops per MAC the macro evaluates (stored weights x positions, zeros included)",
    )


def _skipping_summary(raw: CimSchedule, hw: CimConfig, cycles: float, energy: float) -> dict[str, Any]:
    """Cycles and energy with and without skipping; ``raw`` is the schedule before ``apply_skipping``."""
    def other() -> tuple[float, float]:
        report = schedule_cost(raw, hw.replace(activation_skipping=not hw.activation_skipping), counterpart=False)
        return report.latency_cycles, report.energy_j

    measured = sum(1 for p in raw.plans if p.input_density is not None)
    return skipping_summary(hw.activation_skipping, measured, len(raw.plans), (cycles, energy), other)


def _fusion_summary(plans: list[LayerPlan], energies: list[LayerEnergy], hw: CimConfig,
                    unfused: float) -> dict[str, Any]:
    """ADC saving of the fused ReLU; saving = Σ L·E_adc·p_neg·(1 − 1/B) over fused layers."""
    fused = [(p, e) for p, e in zip(plans, energies, strict=True) if p.relu_fused]
    saving = sum(e.adc_unfused - e.adc for _, e in fused)
    last = sum(p.last_conversions for p, _ in fused)
    weighted = sum(p.last_conversions * p.neg_fraction for p, _ in fused)
    return {
        "fused_layers": len(fused),
        "adc_energy_unfused_j": unfused,
        "adc_energy_j": unfused - saving,
        "adc_saving_j": saving,
        "adc_saving_fraction": saving / unfused if unfused else 0.0,
        "mean_neg_fraction": weighted / last if last else 0.0,
        "predicted_saving_fraction": (weighted * (1 - 1 / hw.adc_bits) * hw.adc_energy_pj * 1e-12 / unfused)
        if unfused else 0.0,
        "sources": sorted({str(p.neg_fraction_source) for p, _ in fused}),
    }


def executed_macs(plan: LayerPlan) -> int:
    """MACs the macro evaluates: stored rows of every column-tile × positions × bit passes (minus the
    skipped all-zero row tiles when skipping is applied)."""
    keep = 1.0 - plan.tile_zero if plan.skipping else 1.0
    return int(round(plan.bit_passes * plan.positions * int(plan.layout.tile_rows.sum()) * keep))


def digital_summary(hw: CimConfig) -> dict[str, Any]:
    """The digital baseline's array and peak figures (equal peak throughput, same node)."""
    per_mac = hw.digital_pj_per_mac
    pj = sum(per_mac.values())
    return {
        "equal": "peak throughput", "node_nm": 65, "macs_per_cycle": hw.rows * hw.macros,
        "clock_mhz": hw.clock_mhz, "peak_gops": hw.peak_gops, "pj_per_mac": pj, "pj_per_mac_breakdown": per_mac,
        "peak_tops_per_w": 2 / (pj * 1e-12) / 1e12 if pj else 0.0,
        "weight_sram_kib": hw.rows * hw.columns * MACRO_BITS / 8 / 1024,
    }


def digital_cost(schedule: CimSchedule, hw: CimConfig) -> CostReport:
    """The digital 8b MAC array (equal peak throughput) on the macro's mapping: see the header."""
    per_mac = hw.digital_pj_per_mac
    breakdown = dict.fromkeys(("mac", "weight_read", "digital", "buffers", "weight_writes"), 0.0)
    rows, macs, cycles = [], 0, 0
    for plan in schedule.plans:
        plan = apply_skipping(plan, hw)
        cycles += plan.cycles
        cim = layer_energy(plan, hw)
        n = executed_macs(plan)
        gated = n * _array_activity(plan)  # a MAC with a zero activation is gated off, as the macro's rows
        parts = {"mac": gated * per_mac["mac"] * 1e-12, "weight_read": n * per_mac["weight_read"] * 1e-12,
                 "digital": cim.digital, "buffers": cim.buffers, "weight_writes": cim.weight_writes}
        for key, value in parts.items():
            breakdown[key] += value
        macs += n
        rows.append({"name": plan.name, "cycles": plan.cycles, "energy_j": sum(parts.values()), "macs": n})
    latency, energy = cycles / hw.clock_hz, sum(breakdown.values())
    return CostReport(
        latency_cycles=cycles, latency_s=latency, energy_j=energy, energy_breakdown_j=breakdown,
        throughput_gops=2 * macs / latency / 1e9 if latency else 0.0,
        tops_per_w=2 * macs / energy / 1e12 if energy else 0.0, layers=rows, executed_ops=2.0 * macs,
    )


def _lower_model(model: onnx.ModelProto, hw: HardwareConfig | None) -> tuple[CimSchedule, CimConfig]:
    cfg = _config(hw)
    return lower_workload(extract_workload(model).layers, cfg), cfg


@register_target
class CimTarget(Target):
    name = "cim"
    summary = "SRAM charge-domain CiM macro (8b×8b, MAC+ReLU per A/D conversion; 51.2 GOPS, 10.3 TOPS/W)"
    config_cls = CimConfig

    def default_pipeline(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            ("fold-constants", {}), ("eliminate-identity", {}), ("fold-batchnorm", {}), ("fuse-relu", {}),
            ("quantize", {"bits": 8, "act_scheme": "symmetric"}), ("cleanup", {}),
            ("activation-sparsity", {}),
        ]

    def lower(self, model: onnx.ModelProto, hw: HardwareConfig | None) -> CimSchedule:
        return lower_workload(extract_workload(model).layers, _config(hw))

    def cost(self, schedule: CimSchedule, hw: HardwareConfig | None) -> CostReport:
        return schedule_cost(schedule, _config(hw))

    def baseline_plans(self) -> list[BaselinePlan]:
        return [
            BaselinePlan("input", "this macro (same hardware description) without pimc's passes: no ReLU "
                         "marks, 8b where unannotated", lambda m, hw: schedule_cost(*_lower_model(m, hw)),
                         reference=True),
            BaselinePlan("digital", "a digital 8b MAC array at 65 nm, equal peak throughput (rows MACs per "
                         "macro at the same clock), same SRAM, mapping and buffers",
                         lambda m, hw: digital_cost(*_lower_model(m, hw))),
        ]


def _config(hw: HardwareConfig | None) -> CimConfig:
    if hw is None:
        return CimConfig()
    if not isinstance(hw, CimConfig):
        raise PimcError(f"the cim target needs a CimConfig, got {type(hw).__name__}")
    return hw
