"""activation-sparsity: measure how many inputs of every Conv / Gemm / MatMul are zero, and annotate the node.

Feature Regularization (docs/sources.md) makes hidden features sparse along the channel dimension at each pixel,
and the sparsity depends on the input; ReLU gives some zeros by itself. The targets can skip work on zero
activations, so they need the zeros *measured*, on real data (``--data``): random inputs say nothing about
a trained model's features, and the pass then changes nothing.

For the activation input X of a compute node (``[B, C, *spatial]`` for a conv, ``[..., K]`` for Gemm / MatMul,
whose "channel" is the reduction axis K and whose "pixels" are the rows), over the calibration samples:

    input_zero_fraction     z = #{x = 0} / #x                                       (exact zeros)
    input_channel_density   d_c = #{x[:, c, ...] ≠ 0} / #x[:, c, ...]               (convs, per channel c)
    input_pixel_density     histogram over pixels p of  #{c : x[c, p] ≠ 0} / C,     10 equal bins on [0, 1]
    input_zero_chunks       {G: fraction of all-zero aligned chunks of G consecutive elements of an
                            im2col row}, G = 1, 2, 4, ..., 512; a row is one output position's receptive
                            field in (c, ky, kx) order (the order a weight-stationary array reads it), padding
                            zeros included; at most ``positions`` output positions per sample (seeded) are
                            drawn for this statistic. For Gemm / MatMul a row is one K-vector.
    input_channel_chunks    convs: {G: fraction of all-zero aligned chunks of G consecutive channels of one
                            input pixel}, over every pixel (within a group for grouped convs): the input vector
                            one step of a weight-stationary array reads (``Cin/G`` channels at one pixel
                            and tap), and the structure Feature Regularization's per-pixel channel zeros have.
    input_samples           how many samples were measured, and ``input_sparsity_source`` the data spec.
    output_zero_fraction    the zero fraction of the map the node writes after its activation, when its
                            only reader is a Relu (the map a target stores compressed), else absent; a
                            gate on the Relu's output, Where(Greater(Abs(r), t), r, 0) or the top-k and
                            per-image gates' Where(GreaterOrEqual(Abs(r), kth), r, 0) (the ``feature-reg``
                            exporter's), counts as part of the activation.
    input_stored_zero_fraction  when X is the output of such a gate whose input r has other readers too (a
                            residual Add, another conv's gate): the zero fraction of r. One map r is stored
                            for all its readers and the gate is applied while it is read back, so off-chip
                            it is r, not X, that is fetched. Absent otherwise (the stored map is X itself:
                            a gate that is r's only reader is part of its producer's activation, above, however
                            many nodes read the gate's output: the feature-reg exporter's ``stream`` placement).

Aligned chunks nest, so the all-zero fraction falls (weakly) as G grows: a backend whose skipping unit is not a
measured size reads the next larger one, which never overstates the skipping. The graph computes exactly what it
did: only annotations change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from ...compiler import annotations as ann
from ...compiler.errors import PimcError
from ...compiler.graph import consumers, graph_output_names, initializer_map
from ...compiler.passbase import Option, Pass, PassContext, PassResult
from ...compiler.verify import session_for
from ...compiler.workload import LayerRecord, extract_workload

CHUNKS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
HIST_BINS = 10
MAX_CHANNEL_LIST = 4096


@dataclass
class ZeroStats:
    """Running counts for one node's activation input."""

    zeros: int = 0
    total: int = 0
    samples: int = 0
    channel_nonzero: np.ndarray | None = None
    channel_total: int = 0
    pixel_hist: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, dtype=np.int64))
    chunk_zero: dict[int, int] = field(default_factory=dict)
    chunk_total: dict[int, int] = field(default_factory=dict)
    vector_zero: dict[int, int] = field(default_factory=dict)
    vector_total: dict[int, int] = field(default_factory=dict)

    def annotations(self, conv: bool) -> dict[str, object]:
        notes: dict[str, object] = {
            "input_zero_fraction": round(self.zeros / max(self.total, 1), 6),
            "input_pixel_density": [round(float(v), 6) for v in self.pixel_hist / max(self.pixel_hist.sum(), 1)],
            "input_zero_chunks": _fractions(self.chunk_zero, self.chunk_total),
            "input_samples": self.samples,
        }
        if self.vector_total:
            notes["input_channel_chunks"] = _fractions(self.vector_zero, self.vector_total)
        if conv and self.channel_nonzero is not None and len(self.channel_nonzero) <= MAX_CHANNEL_LIST:
            density = self.channel_nonzero / max(self.channel_total, 1)
            notes["input_channel_density"] = [round(float(v), 4) for v in density]
        return notes


def _fractions(zero: dict[int, int], total: dict[int, int]) -> dict[str, float]:
    return {str(g): round(zero[g] / max(total[g], 1), 6) for g in sorted(zero) if total[g]}


class ActivationSparsity(Pass, name="activation-sparsity", exact=True):
    """Measure the zero fraction of every Conv/Gemm/MatMul input on --data and annotate it (annotation only)."""

    options = (
        Option("samples", int, 32, "calibration samples measured (zero fractions over every position of "
               "each: 32 images pin them to about a percent)", minimum=1),
        Option("positions", int, 64, "output positions per sample drawn for the im2col chunk statistic",
               minimum=1),
        Option("level", int, None, "a multi-level Feature Regularization file: the level to run, measure and cost "
               "(the default of its sparsity_level input); unset: the file's own default", minimum=0),
    )

    def is_exact(self) -> bool:
        return self.opts["level"] is None  # another level changes the outputs

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        relevelled = self.opts["level"] is not None
        if relevelled:
            select_level(model, self.opts["level"])
        if not ctx.has_real_data:
            return PassResult(model, relevelled,
                              {"skipped": "no --data: activation sparsity is measured on real data only"})
        records = _measurable(model)
        if not records:
            return PassResult(model, relevelled, {"skipped": "no Conv/Gemm/MatMul with an activation input"})
        feeds = ctx.calibration[: self.opts["samples"]]
        written = _activated_outputs(model, records)
        stored = _stored_inputs(model, records)
        tensors = {**written, **{f"stored:{k}": v for k, v in stored.items()}}
        stats, out_zeros = measure(model, records, feeds, self.opts["positions"], ctx.seed, tensors)
        nodes = {node.name: node for node in model.graph.node}
        summary: dict[str, float] = {}
        for rec in records:
            notes = stats[rec.name].annotations(rec.op in ("Conv", "ConvTranspose"))
            notes["input_sparsity_source"] = ctx.data_spec or "calibration data"
            if rec.name in written:
                notes["output_zero_fraction"] = round(out_zeros[written[rec.name]], 6)
            if rec.name in stored:
                notes["input_stored_zero_fraction"] = round(out_zeros[stored[rec.name]], 6)
            for key, value in notes.items():
                ann.set_node_annotation(nodes[rec.name], key, value)
            summary[rec.name] = notes["input_zero_fraction"]
        return PassResult(model, True, {"input_zero_fraction": summary, "samples": len(feeds)},
                          annotations_only=not relevelled)


def select_level(model: onnx.ModelProto, level: int) -> None:
    """Make ``level`` the default of a multi-level file's ``sparsity_level`` input (``feature_reg/config.py``)."""
    import json

    from onnx import numpy_helper

    from .config import LEVEL_INPUT, METADATA_KEY

    meta = {p.key: p.value for p in model.metadata_props}
    default = next((t for t in model.graph.initializer if t.name == LEVEL_INPUT), None)
    if default is None or METADATA_KEY not in meta:
        raise PimcError("activation-sparsity: level is set but the model is not a multi-level Feature "
                        f"Regularization file (no {LEVEL_INPUT} input)")
    levels = json.loads(meta[METADATA_KEY]).get("levels", [])
    if level >= len(levels):
        raise PimcError(f"activation-sparsity: level {level} does not exist (the file has {len(levels)} levels)")
    default.CopyFrom(numpy_helper.from_array(np.array(level, np.int64), LEVEL_INPUT))


def _measurable(model: onnx.ModelProto) -> list[LayerRecord]:
    """Compute records whose first input is an activation (not an initializer or a Constant)."""
    constants = set(initializer_map(model.graph))
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [rec for rec in extract_workload(model).layers if rec.input and rec.input not in constants]


def _activated_outputs(model: onnx.ModelProto, records: list[LayerRecord]) -> dict[str, str]:
    """{record: the output of the Relu that is its only reader, or of the threshold gate on that Relu}."""
    readers = consumers(model.graph)
    out: dict[str, str] = {}
    for rec in records:
        users = readers.get(rec.output, [])
        if len(users) == 1 and users[0].op_type == "Relu":
            relu = users[0].output[0]
            out[rec.name] = _gate_output(relu, readers) or relu
    return out


def _stored_inputs(model: onnx.ModelProto, records: list[LayerRecord]) -> dict[str, str]:
    """{record: the gate input r} for records reading a threshold gate's output whose r has other readers."""
    readers = consumers(model.graph)
    made_by = {out: node for node in model.graph.node for out in node.output}
    out: dict[str, str] = {}
    for rec in records:
        where = made_by.get(rec.input)
        if where is None or where.op_type != "Where" or len(where.input) < 2:
            continue
        source = where.input[1]
        if _gate_output(source, readers) == rec.input:
            continue  # the gate is r's only use: part of r's producer's activation, stored gated
        if _is_gate(where, source, made_by):
            out[rec.name] = source
    return out


COMPARES = ("Greater", "GreaterOrEqual")  # the threshold gate's and the top-k / per-image gates' comparison
RANKING = ("TopK", "Shape", "Flatten", "Reshape")  # how the top-k and per-image gates rank the magnitudes


def _is_gate(where: onnx.NodeProto, source: str, made_by: dict[str, onnx.NodeProto]) -> bool:
    """Whether ``where`` is a Feature Regularization gate on ``source``: ``Where(Greater(Abs(source), t), source,
    0)`` (threshold) or ``Where(GreaterOrEqual(Abs(source), kth), source, 0)`` (top-k)."""
    compare = made_by.get(where.input[0])
    if compare is None or compare.op_type not in COMPARES:
        return False
    absolute = made_by.get(compare.input[0])
    return absolute is not None and absolute.op_type == "Abs" and absolute.input[0] == source


def _gate_output(tensor: str, readers: dict[str, list[onnx.NodeProto]]) -> str | None:
    """The output of the gate on ``tensor`` (see :func:`_is_gate`) when that gate is ``tensor``'s only use."""
    users = readers.get(tensor, [])
    ops = sorted(node.op_type for node in users)
    if ops != ["Abs", "Where"]:
        return None
    absolute = next(node for node in users if node.op_type == "Abs")
    where = next(node for node in users if node.op_type == "Where")
    uses = readers.get(absolute.output[0], [])
    compares = [n for n in uses if n.op_type in COMPARES and n.input[0] == absolute.output[0]]
    if len(compares) != 1 or any(n.op_type not in (*COMPARES, *RANKING) for n in uses):
        return None  # a top-k or per-image gate's Abs also feeds what finds the k-th largest magnitude
    if list(where.input[:2]) != [compares[0].output[0], tensor]:
        return None
    return where.output[0]


def measure(model: onnx.ModelProto, records: list[LayerRecord], feeds: list[dict[str, np.ndarray]],
            positions: int, seed: int, written: dict[str, str] | None = None,
            ) -> tuple[dict[str, ZeroStats], dict[str, float]]:
    """Stream the calibration feeds through the model once: the zeros of every record's input, and the zero
    fraction of every tensor in ``written`` (record → activated output)."""
    written = written or {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = graph_output_names(probe.graph)
    given = {name for feed in feeds for name in feed}
    for name in [rec.input for rec in records] + list(written.values()):
        if name not in present and name not in given:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
            present.add(name)
    names = [o.name for o in probe.graph.output]
    rng = np.random.default_rng(seed)
    stats = {rec.name: ZeroStats() for rec in records}
    zeros = dict.fromkeys(written.values(), 0)
    sizes = dict.fromkeys(written.values(), 0)
    session = session_for(probe)
    inputs = {i.name for i in session.get_inputs()}
    for feed in feeds:  # one sample at a time: the captured maps of a large model never pile up
        outs = _run(session, {k: v for k, v in feed.items() if k in inputs})
        values = {**dict(zip(names, outs, strict=True)), **feed}
        for rec in records:
            _accumulate(stats[rec.name], rec, np.asarray(values[rec.input]), positions, rng)
        for name in zeros:
            value = np.asarray(values[name])
            zeros[name] += int(value.size - np.count_nonzero(value))
            sizes[name] += int(value.size)
    return stats, {name: zeros[name] / max(sizes[name], 1) for name in zeros}


def _run(session, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return session.run(None, feed)
    except Exception as exc:
        raise PimcError(f"onnxruntime failed to run the model: {str(exc).strip().splitlines()[0]}") from exc


def _accumulate(s: ZeroStats, rec: LayerRecord, x: np.ndarray, positions: int, rng: np.random.Generator) -> None:
    nonzero = x != 0
    s.zeros += int(nonzero.size - np.count_nonzero(nonzero))
    s.total += int(nonzero.size)
    s.samples += int(x.shape[0]) if x.ndim else 1
    if rec.op in ("Conv", "ConvTranspose") and x.ndim >= 3:
        per_channel = np.moveaxis(nonzero, 1, 0).reshape(x.shape[1], -1)
        counts = per_channel.sum(axis=1)
        s.channel_nonzero = counts if s.channel_nonzero is None else s.channel_nonzero + counts
        s.channel_total += per_channel.shape[1]
        pixel_density = per_channel.mean(axis=0)
        groups = max(rec.groups, 1) if rec.op == "Conv" else 1
        _count_chunks(s.vector_zero, s.vector_total, per_channel.T.reshape(-1, x.shape[1] // groups))
        rows = _im2col_rows(nonzero, rec, positions, rng) if rec.op == "Conv" else per_channel.T
    else:
        rows = nonzero.reshape(-1, x.shape[-1]) if x.ndim else nonzero.reshape(1, 1)
        pixel_density = rows.mean(axis=1)
    s.pixel_hist += np.histogram(pixel_density, bins=HIST_BINS, range=(0.0, 1.0))[0]
    _count_chunks(s.chunk_zero, s.chunk_total, rows)


def _im2col_rows(nonzero: np.ndarray, rec: LayerRecord, positions: int, rng: np.random.Generator) -> np.ndarray:
    """Non-zero masks of up to ``positions`` im2col rows per group, ``[rows, Cin/G · kh · kw]``, padding = 0.

    3-D convs are measured on their (D·H, W) folding only when the tensor is 4-D; otherwise the rows are the
    per-pixel channel vectors (the chunk statistic then covers the channel axis only)."""
    if nonzero.ndim != 4:
        return np.moveaxis(nonzero, 1, -1).reshape(-1, nonzero.shape[1])
    b, c, h, w = nonzero.shape
    kh, kw = rec.kernel
    sh, sw = rec.stride
    dh, dw = rec.dilation
    top, left, bottom, right = rec.pads
    padded = np.zeros((b, c, h + top + bottom, w + left + right), dtype=bool)
    padded[:, :, top:top + h, left:left + w] = nonzero
    oh, ow = rec.out_h, rec.out_w
    count = b * oh * ow
    pick = np.arange(count) if count <= positions else np.sort(rng.choice(count, positions, replace=False))
    n, oy, ox = np.unravel_index(pick, (b, oh, ow))
    ky, kx = np.meshgrid(np.arange(kh) * dh, np.arange(kw) * dw, indexing="ij")
    ys = (oy * sh)[:, None, None] + ky[None]
    xs = (ox * sw)[:, None, None] + kx[None]
    patches = padded[n[:, None, None, None], np.arange(c)[None, :, None, None], ys[:, None], xs[:, None]]
    groups = max(rec.groups, 1)
    return patches.reshape(len(pick), groups, (c // groups) * kh * kw).reshape(len(pick) * groups, -1)


def _count_chunks(zero: dict[int, int], total: dict[int, int], rows: np.ndarray) -> None:
    """Add the all-zero aligned chunks of every size in ``CHUNKS`` that fits a row of the mask ``rows``."""
    width = rows.shape[1]
    for g in CHUNKS:
        if g > width:
            break
        usable = (width // g) * g
        chunks = rows[:, :usable].reshape(rows.shape[0], -1, g).any(axis=2)
        zero[g] = zero.get(g, 0) + int(chunks.size - np.count_nonzero(chunks))
        total[g] = total.get(g, 0) + int(chunks.size)
