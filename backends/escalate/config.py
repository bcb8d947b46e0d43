"""The escalate target's hardware description and its energy primitives (equations and sources: the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from ...compiler.errors import PimcError
from ...compiler.target import (
    HardwareConfig,
    hw_field,
)
from ..horowitz import horowitz_field
from ..pointwise import log, select, vmax

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
    mult_8b_pj: float = horowitz_field("mult_8b")
    add_32b_pj: float = horowitz_field("add_32b")
    sram_8kb_pj: float = horowitz_field("sram_8kb")
    sram_32kb_pj: float = horowitz_field("sram_32kb")
    sram_1mb_pj: float = horowitz_field("sram_1mb")
    dram_pj: float = horowitz_field("dram")

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

