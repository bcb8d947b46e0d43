"""Lowering layer records onto the macro: column layouts, tiles, passes and conversions per layer."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...compiler.errors import PimcError
from ...compiler.workload import LayerRecord, scatter_record
from .config import MACRO_BITS, CimConfig


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
