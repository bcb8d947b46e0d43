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
(``batch.cost_many``, the sweep's cost-only chunks).

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
The report also regroups the same energy by the data it moves (``energy_by_kind_j``): weights (weight
buffers + weight DRAM), activations in (input buffer + input DRAM), activations out (output DRAM), partial
sums (the output buffer: psum reads/writes and output writes), the intermediate map, MACs and index; with
measured activation zeros, ``activation_skipping`` gives it with and without skipping.

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
    zero input vectors: v_W, the measured all-zero fraction of aligned W-channel vectors at one input pixel
                  (``input_channel_chunks``; the next larger measured W when W was not measured). A
                  weight-stationary step reads the W = min(Cg, C) channels of one input pixel at one tap;
                  when that vector is all zero (its presence-mask bits, above, are all 0) the step is
                  skipped: its cycle, its MACs and the partial-sum updates of its rows, so
                  ws cycles · (1 − v_W) and ws psum reads + writes · (1 − v_W). The coefficient stage skips
                  the psum update of a channel tile at an output pixel whose Tc·m intermediate values there
                  are all zero: psum reads + writes · (1 − v_{Tc·m}), cycles unchanged (its columns are pixels
                  in lockstep). Padding pixels are counted as non-zero, which understates the skips. This is
                  the vector-granular form of skipping zero activations in the compressed domain (Eyeriss v2,
                  Chen et al., JETCAS 2019; SparTen, Gondimalla et al., MICRO 2019; docs/sources.md); the
                  structure Feature Regularization's per-pixel channel zeros have.
    cycles of the output-stationary dense path, the coefficient unit and the sparse baseline are otherwise
    unchanged: their columns are output pixels in lockstep, which skip a step only when every pixel's input
    is zero (not modelled).
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

from .config import EscalateConfig, sram_pj_per_bit
from .cost import cost_schedule
from .lower import lower_workload
from .target import EscalateTarget

__all__ = ["EscalateConfig", "EscalateTarget", "cost_schedule", "lower_workload", "sram_pj_per_bit"]
