"""Energy and cycles of a cim schedule, and the digital baseline."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import onnx

from ...compiler.target import (
    CostReport,
    HardwareConfig,
    skipping_summary,
)
from ...compiler.workload import extract_workload
from .config import MACRO_BITS, CimConfig
from .lower import CimSchedule, LayerPlan, _array_activity, apply_skipping, lower_workload


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
        extra["activation_skipping"] = skipping_summary(
            hw, [p.input_density for p in raw.plans], (cycles, total),
            lambda other: schedule_cost(raw, other, counterpart=False).cycles_and_energy)
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
    cfg = CimConfig.of(hw)
    return lower_workload(extract_workload(model).layers, cfg), cfg
