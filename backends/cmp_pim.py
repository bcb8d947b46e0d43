"""CMP-PIM target: comparator-based CNNs on parallel computational SOT-MRAM sub-arrays (DAC 2018 model).

**What the sources give.** CMP-PIM (Rakin, He, Angizi, Fan, DAC 2018; only its abstract is public here,
docs/sources.md): CMPNET replaces the multiplications of the convolution layers by comparison and addition
(local-binary-pattern style, with depthwise-separable convs), runs on parallel computational SOT-MRAM
sub-arrays, and on SVHN reaches ≈94× / 3× the energy efficiency of a CNN / an LBCNN and 4.3× the speed of
the CNN with the same network configuration. The abstract states neither the sub-array size, the
per-operation energy or latency, nor the precision or execution of the baselines; the same group's
papers whose abstracts are public (IMCE ASP-DAC 2018, DIMA 2018, MRIMA, ISQED 2019 "AND-accumulation")
describe bit-line computing in SOT-MRAM sub-arrays with modified sense amplifiers but give no per-op figures
in what is public. Sub-array size and bank come from the ISVLSI 2019 proxy (docs/sources.md); the bit-serial
cycle counts from Neural Cache (Eckert et al., ISCA 2018); every energy is an assumption. LBCNN (Juefei-Xu
et al., CVPR 2017; docs/sources.md): the sparse ternary anchor conv needs additions and subtractions only.

**Substrate.** One bank of ``subarrays`` computational SOT-MRAM sub-arrays of R × C cells (256 × 256 and
a 32 Mb bank, i.e. 512 sub-arrays). Computation is bit-serial and column-parallel: an operand of b bits
lies vertically in one column; one in-memory operation activates two rows, the modified sense amplifiers
of all C columns resolve the bitwise function (AND, XOR3/majority for a full-adder step, or the sign
read of a comparison) at once and write the result bit back into a row. One operation takes one cycle
1/f and costs, per column, E_col = E_sense + E_write. Weights are programmed once (non-volatile); feature
maps are moved between sub-arrays over the bank's shared bus of ``bus_bits`` bits per cycle, costing
E_mv per bit (source read + H-tree + SOT write).

**Operation sequences (cycles of one column).**

    add(n)        = n + 1                           ripple add, one cycle per bit + carry-out (Neural Cache)
    mult(w, a)    = p·(q + 5) − 2,  p = min(w, a), q = max(w, a)
                                                    p tag-predicated shift-add steps; for w = a = n this is
                                                    n² + 5n − 2, the bit-serial multiply of Neural Cache;
                                                    the mixed-width form is our assumption
    mac(w, a, K)  = mult(w, a) + add(acc)           product, then accumulate; acc = w + a + ⌈log2 K⌉
    mac(w, 1, K)  = 1 + add(acc)                    one-bit input (comparator bit): Neural Cache multiplies
                                                    by one tag-predicated add per multiplier bit, so a 1-bit
                                                    multiplier is one tag load plus the predicated add of
                                                    the weight straight into the accumulator (no product is
                                                    formed: "comparison and addition", CMP-PIM abstract)
    tadd(a, K)    = add(a + ⌈log2 K⌉)               ± accumulate of a ternary (±1) anchor weight; 0s skipped;
                                                    the signs are fixed, so no tag is loaded
    cmp_relu(a)   = 1 + a                           sense the sign bit, then mask the a-bit value (ReLU)
    cmp_bit       = 1                               sense the sign bit and write it (binary comparator)

Bits come from a node's ``weight_bits``/``act_bits`` annotations, else from the config.

**Lowering.** anchor Conv (``role=anchor``) → ternary additions/subtractions, tadd per non-zero weight;
its output → one comparison per element (ReLU or binary bit, read from the 1×1 node's ``comparator``);
1×1 Conv (``role=lbc_pointwise``) and every other Conv/Gemm/MatMul → in-memory MAC per non-zero weight.
Conv1d has H = 1, Conv3d folds the depth into the rows (exact MACs); grouped and dilated convs count
their own K = Cin/G·kh·kw. A MatMul of two activations is costed like one with weights (its second
operand written into the sub-arrays is not counted). **ConvTranspose** is costed in its scatter form
(``workload.scatter_record``): a grouped 1×1 conv over the B·H·W input pixels giving (Cout/G)·kh·kw
partial products per pixel and group, MACs = B·Cin·H·W·(Cout/G)·kh·kw; the zero-inserted-input conv
would add (s² − 1)/s² multiplications by inserted zeros for stride s. The overlap-add of the partial
products into the output is not costed.

**Per op group (a layer's adds, compares or MACs):** with O output elements, K operations per output,
c cycles per operation and P = subarrays · C columns,

    work      W = O · K · c                         column-cycles
    compute   T_c = ⌈O / P⌉ · K · c                 if O ≥ P (waves of whole dot products)
              T_c = ⌈K / s⌉ · c + ⌈log2 s⌉ · (add(acc) + 1),  s = min(K, ⌊P / O⌋)   otherwise (split dot products, tree reduce)
    movement  M = N_in · b_in · (kh·kw)/(sh·sw)     bits written into the computing sub-arrays (im2col copies;
                                                    a comparator reads its anchor's result in place: M = 0)
    latency   T = T_c + ⌈M / bus_bits⌉              cycles (no overlap of transfer and compute)
    energy    E = W · (E_sense + E_write) + M · E_mv + P_static · T / f

**Activation zeros** (``activation_skipping``, an assumption; the abstract says nothing about them). The
sub-arrays run bit-serial SIMD in lockstep, so a zero operand saves no cycle; but a column whose activation
operand is zero has nothing to add (its tag bits are all 0 in a multiply, its ternary add adds 0) and is
predicated off. With the ``activation-sparsity`` pass's MEASURED non-zero fraction d of a layer's input:
    E_compute = W · d · (E_sense + E_write)      for MAC and anchor-add groups (comparisons unchanged)
Movement is unchanged (maps are moved uncompressed). The report's ``activation_skipping`` section gives
the energy with and without.

**Baselines** on the same substrate, costed by ``compiler/baselines.py`` on the INPUT model (after the
exact normalisations only; ``--baseline-model cnn=FILE`` / ``lbcnn=FILE`` replace it), never on the
compiled model:

* ``cnn``: the input network with ordinary convs. Every LBC block of the input (anchor + comparator +
  1×1, grouped by the ``layer`` annotation) becomes the original k×k conv recorded on the 1×1 node
  (``original_cin``, ``original_cout``, ``kernel``, ``original_groups``), executed as dense in-memory MACs
  with ``baseline_bits`` weights and activations; every other layer is costed as the target costs it.
* ``lbcnn``: a genuine LBCNN of the same network, without the comparator mapping. An LBC block of the
  input keeps its anchors; every other eligible conv (Conv, groups 1, constant weight, kernel ≥ 2 — the
  comparator-conv pass's rule) becomes LBCNN's block: a dense sparse-ternary anchor conv Cin → m
  (``lbcnn_anchors``, 0 = m = Cout) with ``lbcnn_density`` non-zeros, a ReLU (cmp_relu) and a 1×1 conv
  m → Cout multiplying ``act_bits`` activations. The anchor conv is additions/subtractions as in CMPNET
  (LBCNN's own premise).

Unannotated zoo exports: ``pimc models export cmpnet`` writes the annotation contract of its LBC blocks
(``passes/comparator/exporter.annotate_lbc_blocks``), so a CMPNET as exported is lowered as LBC blocks.

Throughput: ``throughput_gops`` / ``tops_per_w`` in the report count 2 ops per dense MAC of the input
model; ``executed_gops`` / ``executed_tops_per_w`` count what the sub-arrays execute: 2 per non-zero-weight
MAC, 1 per ternary addition and 1 per comparison.

**What drives the ratios** (per LBC layer with Cin inputs, q anchors per input channel, k² = 9, density d):

    E_cnn / E_cmpnet   ≈ Cin·k²·mac(8, 8, Cin·k²) / (q·d·k²·tadd + q·mac(8, 1, q·Cin))  per output pixel
                         and output channel; for Cin = 16, q = 8: 9·127 / (8·18) ≈ 8 on the 1×1 term alone,
                         diluted by the anchor adds (q·d·k²·13 cycles), the fc layer and the feature-map
                         movement common to both. Were the CMPNET MACs free, the anchor adds and movement
                         alone would still bound the gain near 25× with 8-bit baselines; the gain grows
                         with ``baseline_bits`` as mult(b, b) = b² + 5b − 2.
    E_lbcnn / E_cmpnet ≈ mac(8, 8, q·Cin) / mac(8, 1, q·Cin) ≈ 126 / 18 on the 1×1 term, diluted by the
                         anchor adds both networks share
    T_cnn / T_cmpnet   compute is spread over P columns while feature maps cross one shared bus, so
                         ⌈M / bus_bits⌉, nearly equal for both networks, bounds the speed-up far below
                         the energy gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import onnx

from ..compiler.errors import PimcError
from ..compiler.target import (
    NORMALIZE,
    BaselinePlan,
    CostReport,
    HardwareConfig,
    Target,
    hw_field,
    skipping_summary,
)
from ..compiler.workload import LayerRecord, extract_workload, scatter_record

_PROXY = "ISVLSI 2019 proxy of CMP-PIM (docs/sources.md): NVSim/CACTI, 256×256 sub-arrays, 32 Mb bank"


@dataclass
class CmpPimConfig(HardwareConfig):
    rows: int = hw_field(256, "cells", _PROXY)
    cols: int = hw_field(256, "cells", _PROXY)
    subarrays: int = hw_field(512, "sub-arrays", "derived: 32 Mb bank / (256 × 256 cells) (" + _PROXY + ")")
    clock_hz: float = hw_field(
        500e6, "Hz", "assumption: one in-memory op (2-row read, sense, SOT write-back) per 2 ns")
    e_sense_fj: float = hw_field(
        10.0, "fJ/column/op", "assumption: bit-line + modified sense amplifier of a 256-row 1T1MTJ column, NVSim-style")
    e_write_fj: float = hw_field(
        100.0, "fJ/bit", "assumption: SOT switching ≈ 100 µA × 1 V × 1 ns per written result bit")
    e_move_fj_per_bit: float = hw_field(
        600.0, "fJ/bit", "assumption: source read 10 fJ + bank H-tree ≈ 0.5 pJ/bit (CACTI-style, mm wires) "
        "+ SOT write 100 fJ")
    bus_bits: int = hw_field(256, "bits/cycle", "assumption: one sub-array row per cycle on the bank bus")
    static_power_w: float = hw_field(
        0.005, "W", "assumption: CMOS periphery leakage of a 32 Mb bank (MRAM cells do not leak)")
    weight_bits: int = hw_field(8, "bits", "assumption: weight precision where no weight_bits annotation")
    act_bits: int = hw_field(8, "bits", "assumption: activation precision where no act_bits annotation")
    baseline_bits: int = hw_field(
        8, "bits", "assumption: weight and activation precision of the convs the cnn baseline restores from "
        "LBC blocks; the CMP-PIM abstract does not state it (same default as weight_bits/act_bits)")
    lbcnn_anchors: int = hw_field(
        0, "anchors", "assumption: anchors m of the lbcnn baseline's synthesized blocks; 0 = the conv's output "
        "channels (LBCNN's m is a free choice; its reference code uses 512, docs/sources.md)")
    lbcnn_density: float = hw_field(0.9, "fraction", "LBCNN default: fraction of non-zero anchor weights (docs/sources.md)")
    activation_skipping: bool = hw_field(
        True, "flag", "assumption (the abstract says nothing): columns whose activation operand is a MEASURED "
        "zero (activation-sparsity pass) are predicated off, saving their energy, not their cycles")

    def validate(self) -> None:
        super().validate()
        for name in ("rows", "cols", "subarrays", "bus_bits", "weight_bits", "act_bits", "baseline_bits"):
            if getattr(self, name) < 1:
                raise PimcError(f"hardware parameter '{name}' must be at least 1")
        if self.clock_hz <= 0:
            raise PimcError("hardware parameter 'clock_hz' must be positive")
        if not 0 < self.lbcnn_density <= 1:
            raise PimcError(f"hardware parameter 'lbcnn_density' must be in (0, 1] (got {self.lbcnn_density})")


def add_cycles(bits: int) -> int:
    return bits + 1


def mult_cycles(weight_bits: int, act_bits: int) -> int:
    p, q = min(weight_bits, act_bits), max(weight_bits, act_bits)
    return p * (q + 5) - 2


def acc_bits(weight_bits: int, act_bits: int, k: int) -> int:
    return weight_bits + act_bits + max(0, math.ceil(math.log2(max(k, 1))))


def mac_cycles(weight_bits: int, act_bits: int, k: int) -> int:
    accumulate = add_cycles(acc_bits(weight_bits, act_bits, k))
    if min(weight_bits, act_bits) == 1:
        return 1 + accumulate
    return mult_cycles(weight_bits, act_bits) + accumulate


def ternary_add_cycles(act_bits: int, k: int) -> int:
    return add_cycles(act_bits + max(0, math.ceil(math.log2(max(k, 1)))))


@dataclass
class OpGroup:
    """One layer's operations of one kind: O outputs, K ops each of c cycles, M bits moved in."""

    name: str
    kind: str
    outputs: int
    per_output: float
    cycles_per_op: int
    reduce_cycles: int
    move_bits: float
    ops: float
    active: float | None = None  # measured non-zero fraction of the activation operands (None: not measured)

    def work(self) -> float:
        return self.outputs * self.per_output * self.cycles_per_op


@dataclass
class Schedule:
    cmpnet: list[OpGroup]
    cnn: list[OpGroup]
    lbcnn: list[OpGroup]
    lbc_blocks: list[str] = field(default_factory=list)


class CmpPimTarget(Target, name="cmp-pim"):
    """CMP-PIM: LBC/comparator CNNs on computational SOT-MRAM sub-arrays; cnn and lbcnn baselines."""

    config_cls = CmpPimConfig

    def default_pipeline(self) -> list[tuple[str, dict[str, Any]]]:
        return [*NORMALIZE, ("comparator-conv", {}), ("cleanup", {}), ("activation-sparsity", {})]

    def lower(self, model: onnx.ModelProto, hw: CmpPimConfig) -> Schedule:
        return lower_workload([scatter_record(r) for r in extract_workload(model).layers], CmpPimConfig.of(hw))

    def cost(self, schedule: Schedule, hw: CmpPimConfig) -> CostReport:
        cfg = CmpPimConfig.of(hw)
        report = groups_cost(schedule.cmpnet, cfg)
        report.extra["cmp_pim"]["lbc_blocks"] = schedule.lbc_blocks
        return report

    def break_even(self, model: onnx.ModelProto, hw: HardwareConfig | None) -> list[dict[str, Any]]:
        """In-memory MACs are counted per non-zero weight with no index cost (``effective_macs``), so any
        zero already pays: the break-even sparsity of every layer is 0."""
        return [{"layer": rec.name, "break_even_sparsity": 0.0, "break_even_ratio": 1.0,
                 "sparsity": round(1.0 - rec.density, 4), "sparse_pays": rec.density < 1.0}
                for rec in extract_workload(model).layers]

    def baseline_plans(self) -> list[BaselinePlan]:
        return [
            BaselinePlan("cnn", "the network with ordinary convs (LBC blocks restored to their k x k conv "
                         "at baseline_bits) as in-memory MACs", lambda m, hw: network_cost(m, hw, "cnn"),
                         reference=True),
            BaselinePlan("lbcnn", "an LBCNN of the network (eligible convs -> ternary anchors + ReLU + 1x1, "
                         "LBC blocks with ReLU), without the comparator mapping",
                         lambda m, hw: network_cost(m, hw, "lbcnn")),
        ]

    def estimate_energy(self, records: list[LayerRecord], hw: HardwareConfig | None) -> float:
        cfg = CmpPimConfig.of(hw)
        return evaluate(lower_workload(records, cfg).cmpnet, cfg)["energy_j"]



def groups_cost(groups: list[OpGroup], hw: CmpPimConfig) -> CostReport:
    """The cost report of one network's op groups."""
    result = evaluate(groups, hw)
    ops = sum(g.ops for g in groups)

    def recost(other: CmpPimConfig) -> tuple[float, float]:
        report = evaluate(groups, other)
        return report["latency_cycles"], report["energy_j"]

    skipping = skipping_summary(hw, [g.active for g in groups], (result["latency_cycles"], result["energy_j"]), recost)
    latency, energy = result["latency_s"], result["energy_j"]
    return CostReport(
        latency_cycles=result["latency_cycles"], latency_s=latency, energy_j=energy,
        energy_breakdown_j=result["breakdown"],
        throughput_gops=ops / latency / 1e9 if latency else 0.0,
        tops_per_w=ops / energy / 1e12 if energy else 0.0, layers=result["layers"],
        extra={"skipped": [], "cmp_pim": {
            "parallel_columns": hw.subarrays * hw.cols, "work_column_cycles": result["work"],
            "movement_bits": result["move_bits"], "compute_cycles": result["compute_cycles"],
            "movement_cycles": result["move_cycles"],
        }, "activation_skipping": skipping},
        executed_ops=ops,
        executed_note="2 ops per non-zero-weight MAC, 1 per ternary addition and 1 per comparison",
    )


def network_cost(model: onnx.ModelProto, hw: HardwareConfig | None, which: str) -> CostReport:
    """The ``cnn`` or ``lbcnn`` baseline network derived from ``model`` (see the header)."""
    cfg = CmpPimConfig.of(hw)
    schedule = lower_workload([scatter_record(r) for r in extract_workload(model).layers], cfg)
    return groups_cost(schedule.cnn if which == "cnn" else schedule.lbcnn, cfg)


def lower_workload(layers: list[LayerRecord], hw: CmpPimConfig) -> Schedule:
    """Op groups of the compiled network and of the cnn / lbcnn baselines."""
    blocks = _lbc_blocks(layers)
    cmpnet: list[OpGroup] = []
    cnn: list[OpGroup] = []
    lbcnn: list[OpGroup] = []
    for layer in layers:
        role = layer.role
        block = blocks.get(layer.annotations.get("layer")) if role in ("anchor", "lbc_pointwise") else None
        if block is None:
            groups = [_mac_group(layer, hw)]
            cmpnet += groups
            cnn += groups
            lbcnn += _lbcnn_groups(layer, hw) if _lbcnn_eligible(layer) else groups
            continue
        anchor, pointwise = block
        comparator = str(pointwise.annotations.get("comparator", "relu"))
        if role == "anchor":
            cmpnet += [_anchor_group(layer, hw), _compare_group(layer, comparator, hw)]
            lbcnn += [_anchor_group(layer, hw), _compare_group(layer, "relu", hw)]
            cnn.append(_original_conv_group(anchor, pointwise, hw))
        else:
            cmpnet.append(_mac_group(layer, hw))
            lbcnn.append(_mac_group(layer, hw, act_bits=_bits(anchor.act_bits, hw.act_bits)))
    return Schedule(cmpnet, cnn, lbcnn, sorted(blocks))


def _lbcnn_eligible(layer: LayerRecord) -> bool:
    """An ordinary conv LBCNN replaces: Conv, groups 1, constant weight, kernel ≥ 2, no pimc role."""
    return (layer.op == "Conv" and max(layer.groups, 1) == 1 and layer.weight is not None
            and min(layer.kernel) >= 2 and layer.role is None)


def _lbcnn_groups(layer: LayerRecord, hw: CmpPimConfig) -> list[OpGroup]:
    """LBCNN's block for an ordinary conv: dense ternary anchors Cin → m, ReLU, 1×1 m → Cout."""
    m = hw.lbcnn_anchors or layer.cout
    ab = _bits(layer.act_bits, hw.act_bits)
    wb = _bits(layer.weight_bits, hw.weight_bits)
    pixels = layer.batch * layer.out_h * layer.out_w
    k = layer.cin * layer.kernel[0] * layer.kernel[1]
    adds = k * hw.lbcnn_density
    anchor = OpGroup(f"{layer.name}:lbcnn_anchor", "add", pixels * m, adds, ternary_add_cycles(ab, k),
                     add_cycles(acc_bits(0, ab, k)), _input_elements(layer) * ab * _replication(layer),
                     float(pixels * m * adds))
    relu = OpGroup(f"{layer.name}:lbcnn_relu", "compare", pixels * m, 1.0, 1 + ab, 0, 0.0, float(pixels * m))
    acc = acc_bits(wb, ab, m)
    pointwise = OpGroup(f"{layer.name}:lbcnn_pointwise", "mac", pixels * layer.cout, float(m),
                        mac_cycles(wb, ab, m), add_cycles(acc), float(pixels * m * ab),
                        2.0 * pixels * layer.cout * m)
    return [anchor, relu, pointwise]


def _lbc_blocks(layers: list[LayerRecord]) -> dict[str, tuple[LayerRecord, LayerRecord]]:
    """``layer`` → (anchor, pointwise) for every complete LBC block."""
    anchors = {r.annotations.get("layer"): r for r in layers if r.role == "anchor"}
    pointwise = {r.annotations.get("layer"): r for r in layers if r.role == "lbc_pointwise"}
    return {name: (anchors[name], pointwise[name]) for name in anchors if name in pointwise and name is not None}


def _bits(value: Any, default: int) -> int:
    return int(value) if value else default


def _outputs(layer: LayerRecord) -> int:
    return layer.batch * layer.out_h * layer.out_w * layer.cout


def _replication(layer: LayerRecord) -> float:
    kh, kw = layer.kernel
    sh, sw = layer.stride
    return kh * kw / (sh * sw) if layer.op == "Conv" else 1.0


def _input_elements(layer: LayerRecord) -> int:
    return layer.batch * layer.cin * layer.h * layer.w


def _mac_group(layer: LayerRecord, hw: CmpPimConfig, weight_bits: int | None = None,
               act_bits: int | None = None) -> OpGroup:
    wb = weight_bits or _bits(layer.weight_bits, hw.weight_bits)
    ab = act_bits or _bits(layer.act_bits, hw.act_bits)
    outputs = _outputs(layer)
    k = layer.macs / outputs if outputs else 0
    per_output = layer.effective_macs / outputs if outputs else 0
    acc = acc_bits(wb, ab, int(k))
    return OpGroup(layer.name, "mac", outputs, per_output, mac_cycles(wb, ab, int(k)), add_cycles(acc),
                   _input_elements(layer) * ab * _replication(layer), 2.0 * layer.effective_macs,
                   layer.input_density)


def _anchor_group(layer: LayerRecord, hw: CmpPimConfig) -> OpGroup:
    ab = _bits(layer.act_bits, hw.act_bits)
    outputs = _outputs(layer)
    k = int(layer.macs / outputs) if outputs else 0
    per_output = layer.effective_macs / outputs if outputs else 0
    return OpGroup(layer.name, "add", outputs, per_output, ternary_add_cycles(ab, k),
                   add_cycles(acc_bits(0, ab, k)), _input_elements(layer) * ab * _replication(layer),
                   float(layer.effective_macs), layer.input_density)


def _compare_group(layer: LayerRecord, comparator: str, hw: CmpPimConfig) -> OpGroup:
    ab = _bits(layer.act_bits, hw.act_bits)
    cycles = 1 if comparator == "binary" else 1 + ab
    outputs = _outputs(layer)
    return OpGroup(f"{layer.name}:compare", "compare", outputs, 1.0, cycles, 0, 0.0, float(outputs))


def _original_conv_group(anchor: LayerRecord, pointwise: LayerRecord, hw: CmpPimConfig) -> OpGroup:
    notes = pointwise.annotations
    kernel = tuple(notes.get("kernel") or anchor.kernel)
    original = LayerRecord(
        name=str(notes.get("layer", pointwise.name)), op="Conv", batch=anchor.batch,
        cin=int(notes.get("original_cin", anchor.cin)), cout=int(notes.get("original_cout", pointwise.cout)),
        h=anchor.h, w=anchor.w, out_h=pointwise.out_h, out_w=pointwise.out_w, kernel=kernel,
        stride=anchor.stride, groups=int(notes.get("original_groups", 1)),
    )
    return _mac_group(original, hw, weight_bits=hw.baseline_bits, act_bits=hw.baseline_bits)


def group_cycles(group: OpGroup, hw: CmpPimConfig) -> tuple[float, float]:
    """(compute cycles, movement cycles) of one op group."""
    columns = hw.subarrays * hw.cols
    k = group.per_output
    if group.outputs == 0 or k == 0:
        compute = 0.0
    elif group.outputs >= columns:
        compute = math.ceil(group.outputs / columns) * k * group.cycles_per_op
    else:
        split = max(1, min(int(math.ceil(k)), columns // group.outputs))
        compute = math.ceil(k / split) * group.cycles_per_op
        if split > 1:
            compute += math.ceil(math.log2(split)) * (group.reduce_cycles + 1)
    return compute, math.ceil(group.move_bits / hw.bus_bits)


def evaluate(groups: list[OpGroup], hw: CmpPimConfig) -> dict[str, Any]:
    """Latency, energy, breakdown and per-group rows of a list of op groups."""
    e_col = (hw.e_sense_fj + hw.e_write_fj) * 1e-15
    breakdown = {"add": 0.0, "compare": 0.0, "mac": 0.0, "movement": 0.0, "static": 0.0}
    rows = []
    total_compute = total_move = work = move_bits = 0.0
    for group in groups:
        compute, move = group_cycles(group, hw)
        gate = group.active if hw.activation_skipping and group.active is not None else 1.0
        energy_compute = group.work() * gate * e_col
        energy_move = group.move_bits * hw.e_move_fj_per_bit * 1e-15
        energy_static = hw.static_power_w * (compute + move) / hw.clock_hz
        breakdown[group.kind] += energy_compute
        breakdown["movement"] += energy_move
        breakdown["static"] += energy_static
        total_compute += compute
        total_move += move
        work += group.work()
        move_bits += group.move_bits
        rows.append({
            "name": group.name, "kind": group.kind, "cycles": compute + move, "compute_cycles": compute,
            "movement_cycles": move, "energy_j": energy_compute + energy_move + energy_static,
            "ops": group.ops, "outputs": group.outputs, "ops_per_output": group.per_output,
            "cycles_per_op": group.cycles_per_op, "movement_bits": group.move_bits,
            "input_density": group.active, "activation_skipping": hw.activation_skipping and group.active is not None,
        })
    cycles = total_compute + total_move
    return {
        "latency_cycles": cycles, "latency_s": cycles / hw.clock_hz, "energy_j": sum(breakdown.values()),
        "breakdown": breakdown, "layers": rows, "work": work, "move_bits": move_bits,
        "compute_cycles": total_compute, "move_cycles": total_move,
    }
