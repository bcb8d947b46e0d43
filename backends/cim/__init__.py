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
Defaults: 2·N·f = 2·64·400 MHz = 51.2 GOPS (docs/sources.md: N·f fixed by 51.2 GOPS, N = 64 at 400 MHz chosen).
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

from .config import CimConfig
from .cost import schedule_cost
from .lower import lower_workload, pattern_row_mask, tile_assignment, weight_matrix
from .target import CimTarget

__all__ = ["CimConfig", "CimTarget", "lower_workload", "pattern_row_mask", "schedule_cost", "tile_assignment",
           "weight_matrix"]
