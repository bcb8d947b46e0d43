"""The cim target's hardware description (equations and sources: the package docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...compiler.errors import PimcError
from ...compiler.target import (
    HardwareConfig,
    hw_field,
)
from ..horowitz import horowitz_field

MACRO_BITS = 8


@dataclass
class CimConfig(HardwareConfig):
    """One or more SRAM charge-domain CiM macros with buffers and a digital accumulator."""

    rows: int = hw_field(64, "rows", "assumption: N = 64 (docs/sources.md: 2·N·f = 51.2 GOPS allows 64@400 MHz, 128@200 MHz, ...)")
    columns: int = hw_field(16, "weight vectors per macro",
                            "assumption: 16 resident 64×8b weight vectors (8 kb of SRAM cells) per macro")
    macros: int = hw_field(1, "macros", "paper: one macro gives 51.2 GOPS / 10.3 TOPS/W")
    clock_mhz: float = hw_field(400.0, "MHz", "assumption paired with rows: 2·64·400 MHz = 51.2 GOPS (docs/sources.md)")
    array_energy_per_row_fj: float = hw_field(
        116.5, "fJ per row per cycle",
        "derived: 60 % (assumption) of 12.427 pJ/cycle = 64 × 194.2 fJ/MAC (51.2 GOPS / 10.3 TOPS/W, docs/sources.md)")
    adc_energy_pj: float = hw_field(
        4.971, "pJ per full conversion", "derived: 40 % (assumption) of the 12.427 pJ cycle energy (docs/sources.md)")
    adc_bits: int = hw_field(8, "bits", "assumption: 8b ADC output (unknown in the paper; matches 8b activations)")
    relu_fusion: bool = hw_field(
        True, "flag", "paper: MAC + ReLU in one conversion; energy model E_ADC·[(1−p)+p/B] is an assumption (docs/sources.md)")
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
    digital_mult_8b_pj: float = horowitz_field("mult_8b", "digital baseline")
    digital_add_32b_pj: float = horowitz_field("add_32b", "digital MAC accumulate")
    digital_sram_8kb_pj: float = horowitz_field("sram_8kb")
    digital_sram_32kb_pj: float = horowitz_field("sram_32kb")
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

