"""Lowering a workload to the escalate schedule: decomposed pairs and dense layers as layer plans."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...compiler.workload import LayerRecord, Workload, scatter_record

# ---------------------------------------------------------------------------------------------------
# schedule (lower)
from .config import EscalateConfig


@dataclass
class Geometry:
    batch: int
    cin: int
    cout: int
    h: int
    w: int
    oh: int
    ow: int
    kh: int
    kw: int
    stride: int
    dilation: int
    groups: int

    @property
    def pixels(self) -> int:
        return self.batch * self.oh * self.ow

    @property
    def k2(self) -> int:
        return self.kh * self.kw

    @property
    def macs(self) -> int:
        return self.pixels * self.cout * (self.cin // self.groups) * self.k2


@dataclass
class WeightStats:
    """Zero structure of a dense weight (the dense path or the baselines' view of a layer)."""

    params: int
    nnz: int
    row_nnz: np.ndarray
    bits: float
    pattern_index_bits: float | None = None


@dataclass
class LayerPlan:
    name: str
    kind: str
    geometry: Geometry
    dense: WeightStats
    act_bits: float
    members: list[str] = field(default_factory=list)
    rank: int = 0
    basis_bits: float = 0.0
    coef_bits: float = 0.0
    intermediate_bits: float = 0.0
    basis_storage_bits: float = 0.0
    coef_nnz: int = 0
    coef_params: int = 0
    tile_nnz: np.ndarray | None = None
    tile_group_max: np.ndarray | None = None
    coef_index_bits: float = 0.0
    coef_index_bits_per_nnz: int = 0
    lowered_from: str | None = None
    input_density: float | None = None
    stored_density: float | None = None
    output_density: float | None = None
    channel_density: np.ndarray | None = None
    coef_input_density: float | None = None
    zero_vectors: tuple[np.ndarray, np.ndarray] | None = None  # input_channel_chunks (sizes, all-zero fractions)
    coef_zero_vectors: tuple[np.ndarray, np.ndarray] | None = None  # the same, of the intermediate map


@dataclass
class Schedule:
    layers: list[LayerPlan]
    skipped: list[dict[str, str]] = field(default_factory=list)


def _geometry(rec: LayerRecord, cin: int | None = None, cout: int | None = None,
              groups: int | None = None) -> Geometry:
    return Geometry(
        batch=max(rec.batch, 1), cin=cin or rec.cin, cout=cout or rec.cout, h=rec.h, w=rec.w,
        oh=rec.out_h, ow=rec.out_w, kh=rec.kernel[0], kw=rec.kernel[1], stride=max(rec.stride[0], 1),
        dilation=max(rec.dilation[0], 1), groups=groups or max(rec.groups, 1),
    )


def _mean_bits(rec: LayerRecord, default: float) -> float:
    if "bits" in rec.maps:
        mean = rec.annotations.get("mean_bits")
        return float(mean) if mean else float(np.mean(rec.maps["bits"]))
    return float(rec.weight_bits) if rec.weight_bits else float(default)


def _pattern_index_bits(rec: LayerRecord) -> float | None:
    pattern = rec.maps.get("pattern")
    library = rec.annotations.get("pattern_library")
    if pattern is None or not library:
        return None
    return float(pattern.size * math.ceil(math.log2(len(library) + 1)))


def _weight_stats(weight: np.ndarray | None, cout: int, params: int, bits: float,
                  nnz: int | None = None) -> WeightStats:
    if weight is None:
        return WeightStats(params, params, np.full(cout, params // max(cout, 1)), bits)
    nnz = int(np.count_nonzero(weight)) if nnz is None else nnz
    if nnz == weight.size:
        return WeightStats(nnz, nnz, np.full(cout, nnz // max(cout, 1)), bits)
    rows = weight.reshape(cout, -1) if weight.ndim == 4 else weight.T.reshape(cout, -1)
    row_nnz = np.count_nonzero(rows, axis=1)
    return WeightStats(int(weight.size), nnz, row_nnz, bits)


def _dense_plan(rec: LayerRecord, hw: EscalateConfig) -> LayerPlan:
    geo = _geometry(rec)
    params = rec.params or geo.cout * (geo.cin // geo.groups) * geo.k2
    nnz = rec.nonzero if rec.weight is not None and rec.params == rec.weight.size else None
    stats = _weight_stats(rec.weight, geo.cout, params, _mean_bits(rec, hw.weight_bits), nnz)
    stats.pattern_index_bits = _pattern_index_bits(rec)
    return LayerPlan(rec.name, "dense", geo, stats, float(rec.act_bits or hw.act_bits), [rec.name],
                     lowered_from=rec.annotations.get("lowered_from"), input_density=rec.input_density,
                     stored_density=rec.input_stored_density,
                     output_density=rec.output_density,
                     channel_density=_channel_density(rec, geo.cin), zero_vectors=rec.channel_chunk_table())


def _channel_density(rec: LayerRecord, cin: int) -> np.ndarray | None:
    values = rec.annotations.get("input_channel_density")
    if values is None or len(values) != cin:
        return None
    return np.asarray(values, dtype=float)


def _pair_reason(basis: LayerRecord, coef: LayerRecord) -> str | None:
    if basis.op != "Conv" or coef.op != "Conv":
        return "basis/coefficient node is not a Conv"
    if basis.weight is None or coef.weight is None:
        return "basis or coefficient weights are not constant"
    if basis.groups != basis.cin or basis.cout % basis.cin:
        return "basis node is not a depthwise conv with a channel multiplier"
    if coef.kernel != (1, 1) or coef.groups != 1 or coef.cin != basis.cout:
        return "coefficient node is not a 1x1 conv over the basis outputs"
    if (coef.h, coef.w) != (basis.out_h, basis.out_w):
        return "coefficient input does not match the basis output"
    return None


def _decomposed_plan(basis: LayerRecord, coef: LayerRecord, hw: EscalateConfig) -> LayerPlan:
    cin, m = basis.cin, basis.cout // basis.cin
    kh, kw = basis.kernel
    geo = _geometry(basis, cin=cin, cout=coef.cout, groups=1)
    bw = basis.weight.reshape(cin, m, kh * kw)
    cw = coef.weight.reshape(coef.cout, cin, m)
    shared = bool(np.all(bw == bw[:1]))
    if coef.params == cw.size and coef.nonzero == coef.params:
        per_kernel = np.full((coef.cout, cin), m, dtype=np.uint8)
    else:
        per_kernel = _kernel_nnz(cw)
    basis_bits = _mean_bits(basis, hw.basis_bits)
    plan = LayerPlan(
        name=str(coef.annotations.get("layer") or basis.annotations.get("layer") or coef.name),
        kind="decomposed", geometry=geo, dense=_dense_view(cw, bw, per_kernel, float(hw.weight_bits)),
        act_bits=float(basis.act_bits or hw.act_bits), members=[basis.name, coef.name], rank=m,
        basis_bits=basis_bits, coef_bits=_mean_bits(coef, hw.coef_bits),
        intermediate_bits=float(coef.act_bits or hw.intermediate_bits),
        basis_storage_bits=(m if shared else cin * m) * kh * kw * basis_bits,
        input_density=basis.input_density, stored_density=basis.input_stored_density,
        channel_density=_channel_density(basis, cin),
        coef_input_density=coef.input_density, output_density=coef.output_density,
        zero_vectors=basis.channel_chunk_table(), coef_zero_vectors=coef.channel_chunk_table(),
    )
    _coefficient_tiles(plan, per_kernel, cw.size, hw)
    return plan


def _kernel_nnz(cw: np.ndarray) -> np.ndarray:
    """Non-zero coefficients of every (output, input) kernel: uint8 [Cout, Cin]."""
    mask = cw != 0
    counts = mask[..., 0].astype(np.uint8)
    for j in range(1, cw.shape[2]):
        counts += mask[..., j]
    return counts


def _dense_view(cw: np.ndarray, bw: np.ndarray, per_kernel: np.ndarray, bits: float) -> WeightStats:
    """Zero structure of W = Σ_j coef_j · basis_j (exact cancellations aside: support of the sum)."""
    cout, cin, m = cw.shape
    k2 = bw.shape[2]
    support = bw != 0
    if support.all():
        row_nnz = k2 * np.count_nonzero(per_kernel, axis=1)
    elif k2 <= 63:
        masks = (support.astype(np.uint64) << np.arange(k2, dtype=np.uint64)).sum(axis=2, dtype=np.uint64)
        union = np.zeros((cout, cin), dtype=np.uint64)
        for j in range(m):
            union |= np.where(cw[..., j] != 0, masks[:, j][None, :], np.uint64(0))
        row_nnz = np.bitwise_count(union).sum(axis=1, dtype=np.int64)
    else:
        dense = np.stack([np.dot(cw[:, c], bw[c]) for c in range(cin)], axis=1)
        row_nnz = np.count_nonzero(dense.reshape(cout, -1), axis=1)
    return WeightStats(cout * cin * k2, int(row_nnz.sum()), row_nnz, bits)


def _coefficient_tiles(plan: LayerPlan, per_kernel: np.ndarray, coef_params: int, hw: EscalateConfig) -> None:
    """Per (channel tile, output channel) non-zero counts, the per-row-group maxima and index size."""
    cout, cin = per_kernel.shape
    m = plan.rank
    tc = hw.basis_cols
    n_tiles = math.ceil(cin / tc)
    padded = np.zeros((cout, n_tiles * tc), dtype=np.int32)
    padded[:, :cin] = per_kernel
    tile_nnz = padded.reshape(cout, n_tiles, tc).sum(axis=2).T
    n_groups = math.ceil(cout / hw.coef_rows)
    grouped = np.zeros((n_tiles, n_groups * hw.coef_rows), dtype=np.int64)
    grouped[:, :cout] = tile_nnz
    plan.tile_nnz = tile_nnz.sum(axis=1)
    plan.tile_group_max = grouped.reshape(n_tiles, n_groups, hw.coef_rows).max(axis=2)
    plan.coef_nnz = int(plan.tile_nnz.sum())
    plan.coef_params = coef_params
    per_nnz = max(1, math.ceil(math.log2(tc * m)))
    coordinate = plan.coef_nnz * per_nnz + cout * n_tiles * math.ceil(math.log2(tc * m + 1))
    plan.coef_index_bits = float(min(coordinate, coef_params))
    plan.coef_index_bits_per_nnz = per_nnz


def lower_workload(workload: Workload, hw: EscalateConfig) -> Schedule:
    """Pair basis/coefficient records by their ``layer`` annotation; everything else is dense
    (ConvTranspose in its scatter form)."""
    records = [scatter_record(rec) for rec in workload.layers]
    by_layer: dict[str, dict[str, LayerRecord]] = {}
    for rec in records:
        if rec.role in ("basis", "coefficient") and rec.annotations.get("layer"):
            by_layer.setdefault(str(rec.annotations["layer"]), {})[rec.role] = rec
    paired: dict[str, LayerPlan] = {}
    skipped: list[dict[str, str]] = []
    for layer, pair in by_layer.items():
        if len(pair) != 2:
            skipped.append({"layer": layer, "reason": "basis or coefficient node missing; dense path"})
            continue
        reason = _pair_reason(pair["basis"], pair["coefficient"])
        if reason:
            skipped.append({"layer": layer, "reason": reason + "; dense path"})
            continue
        plan = _decomposed_plan(pair["basis"], pair["coefficient"], hw)
        paired[pair["basis"].name] = plan
        paired[pair["coefficient"].name] = plan
    plans: list[LayerPlan] = []
    seen: set[int] = set()
    for rec in records:
        plan = paired.get(rec.name)
        if plan is None:
            plans.append(_dense_plan(rec, hw))
        elif id(plan) not in seen:
            seen.add(id(plan))
            plans.append(plan)
    return Schedule(plans, skipped)



def lower_dense(workload: Workload, hw: EscalateConfig) -> Schedule:
    """Every layer as it is (no basis/coefficient pairing): what the dense / sparse baselines run."""
    return Schedule([_dense_plan(rec, hw) for rec in workload.layers])
