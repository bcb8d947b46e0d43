"""Cycles, energy and storage of each layer plan, the schedule's totals, and the dense and sparse accelerators."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from ...compiler.target import (
    CostReport,
    HardwareConfig,
    skipping_summary,
)
from ...compiler.workload import extract_workload, next_larger_measured
from ..pointwise import any_true, as_float, ceil_div, per_tile, per_value, select, vmax, vmin

# ---------------------------------------------------------------------------------------------------
# cost
from .config import KB_BITS, EscalateConfig, mac_pj, sram_pj_per_bit
from .lower import Geometry, LayerPlan, Schedule, WeightStats, lower_dense


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


def zero_vector_fraction(table: tuple[np.ndarray, np.ndarray] | None, width, enabled: bool):
    """Measured all-zero fraction of the aligned ``width``-channel input vectors of one pixel
    (``next_larger_measured``; 0 when skipping is off). ``width`` may be an array of hardware points."""
    return next_larger_measured(table, width) if enabled else 0.0


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
    live_tiles = 1.0 - zero_vector_fraction(plan.coef_zero_vectors, min(tc, geo.cin) * m, hw.activation_skipping)
    t.sram("output", geo.cout * geo.pixels * (2 * n_tiles * live_tiles * hw.psum_bits + plan.act_bits), e_out,
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
        **_finish(t, hw),
    }


def _dense_cycles(geo: Geometry, rows: int, cols: int, zero_vectors=0.0) -> tuple[int, int, str]:
    """(cycles of the cheaper mapping, of the other, its name); a weight-stationary step whose input vector is
    all zero (``zero_vectors`` of them) is skipped."""
    kg, cg = geo.cout // geo.groups, geo.cin // geo.groups
    ws = geo.groups * _ceil(kg, rows) * _ceil(cg, cols) * geo.k2 * geo.pixels * (1.0 - zero_vectors)
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
    kg, cg = geo.cout // geo.groups, geo.cin // geo.groups
    zero_vectors = zero_vector_fraction(plan.zero_vectors, vmin(cg, cols), skip_activations and hw.activation_skipping)
    compute, _, mapping = _dense_cycles(geo, rows, cols, zero_vectors)
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
    t.sram("output", select(ws, 2 * macs / vmin(cg, cols) * hw.psum_bits * (1.0 - zero_vectors),
                            geo.pixels * geo.cout * plan.act_bits), e_out, "output_buffer")
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
        **_finish(t, hw),
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
            "macs": eff, "index_bits": index_bits, **_activation_fields(plan.input_density, zeros), **_finish(t, hw)}


# the same energy regrouped by the data it moves: (buffer components, DRAM streams) of each kind
ENERGY_KINDS = {
    "weights": (("weight_buffer",), ("weights",)),
    "activations_in": (("input_buffer",), ("input",)),
    "activations_out": ((), ("output",)),
    "partial_sums": (("output_buffer",), ()),  # partial-sum reads and writes, and the final output writes
    "intermediate": (("intermediate_buffer",), ()),
    "macs": (("mac",), ()),
    "index": (("index",), ()),
}


def _finish(t: Tally, hw: EscalateConfig) -> dict[str, Any]:
    energy = {k: v * 1e-12 for k, v in t.energy_pj.items()}
    dram = {what: bits * hw.dram_pj / 64.0 * 1e-12 for what, bits in t.offchip_bits.items()}
    by_kind = {kind: sum(energy[c] for c in components) + sum(dram.get(w, 0.0) for w in streams)
               for kind, (components, streams) in ENERGY_KINDS.items()}
    return {
        "energy_j": sum(energy.values()), "energy_breakdown_j": energy, "energy_by_kind_j": by_kind,
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
    by_kind: dict[str, float] = {}
    for d in details:
        for key, value in d["energy_breakdown_j"].items():
            breakdown[key] = breakdown.get(key, 0.0) + value
        for key, value in d.get("energy_by_kind_j", {}).items():
            by_kind[key] = by_kind.get(key, 0.0) + value
    return {
        "latency_cycles": cycles, "latency_s": cycles * seconds_per_cycle,
        "energy_j": sum(d["energy_j"] for d in details), "energy_breakdown_j": breakdown,
        "energy_by_kind_j": by_kind,
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
    extra["energy_by_kind_j"] = total["energy_by_kind_j"]
    if counterpart:
        opposite: dict[str, Any] = {}

        def recost(other: EscalateConfig) -> tuple[float, float]:
            report = cost_schedule(schedule, other, counterpart=False)
            opposite.update(report.extra["energy_by_kind_j"])
            return report.cycles_and_energy

        extra["activation_skipping"] = skipping_summary(
            hw, [plan.input_density for plan in schedule.layers], (cycles, energy), recost)
        if opposite:
            on, off = (total["energy_by_kind_j"], opposite) if hw.activation_skipping else (opposite,
                                                                                          total["energy_by_kind_j"])
            extra["activation_skipping"].update(energy_by_kind_with_j=on, energy_by_kind_without_j=off)
    return CostReport(
        latency_cycles=cycles, latency_s=latency, energy_j=energy, energy_breakdown_j=breakdown,
        throughput_gops=2 * dense_macs / latency / 1e9 if latency else 0.0,
        tops_per_w=2 * dense_macs / energy / 1e12 if energy else 0.0,
        layers=layers, baselines=baselines, extra=extra, executed_ops=executed,
        executed_note="2 ops per MAC the arrays perform (basis MACs + non-zero coefficient MACs of "
                      "decomposed layers, every MAC of dense-path layers)",
    )



def accelerator_cost(model: onnx.ModelProto, hw: HardwareConfig | None, kind: str) -> CostReport:
    """The dense (``dense_cost``) or zero-skipping (``sparse_cost``) accelerator running ``model``'s
    layers one after another on the same hardware description (the dense array, buffers and DRAM)."""
    cfg = EscalateConfig.of(hw)
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
