"""Energy per operation and per memory access at 45 nm, 0.9 V, from M. Horowitz, "Computing's energy problem
(and what we can do about it)", ISSCC 2014 (``docs/sources.md``): the one place in pimc these published
figures are written. The targets' hardware configs declare their fields from them."""

from __future__ import annotations

from typing import Any

from ..compiler.target import hw_field

SOURCE = "Horowitz ISSCC'14, 45 nm 0.9 V"

ENERGY: dict[str, tuple[float, str, str]] = {  # name: (value, unit, what it is)
    "mult_8b": (0.2, "pJ", "8-bit integer multiply"),
    "add_32b": (0.1, "pJ", "32-bit integer add"),
    "sram_8kb": (10.0, "pJ/64b", "8 KB SRAM, 64-bit read"),
    "sram_32kb": (20.0, "pJ/64b", "32 KB SRAM, 64-bit read"),
    "sram_1mb": (100.0, "pJ/64b", "1 MB SRAM, 64-bit read"),
    "dram": (1950.0, "pJ/64b", "DRAM, 1.3-2.6 nJ per 64 bits (the midpoint)"),
}


def horowitz_field(name: str, use: str = "") -> Any:
    """A hardware field whose default is Horowitz's figure ``name``; ``use`` says what the target uses it for."""
    value, unit, what = ENERGY[name]
    return hw_field(value, unit, f"{SOURCE}: {what}" + (f" ({use})" if use else ""))
