"""Measured onnxruntime latency as ``channel-prune``'s objective, and the whole-model check of its result.

onnxruntime has no cost model, and its time does not follow the MACs: a layer that leaves the 8- or
16-channel block grid, or a thin layer whose time is mostly fixed overhead, saves less than its MACs say
(or nothing). So, on the onnxruntime target, the pass measures what narrowing each channel group saves,
the way ``quantize``'s ``kernels=measured`` does (``passes/quantize/kernel_choice.py``):

For every producer p and reader r of a group of width C, and every kept count k, a one-node *island* is
the layer alone with random weights at that width — p with k filters, r reading k channels — on an input of
the layer's own shape. All islands are timed interleaved in one process
(:func:`pimc.runtime.bench.interleaved_latency`); t(layer, k) is the geometric mean over ``batches`` of the
median milliseconds. The group's cost at k is

    T_g(k) = Σ_p t(p, k) + Σ_r t(r, k)          (T_g(C): the group as it is)

and a candidate's saving is (T_g(C) − T_g(k)) / Σ_g T_g(C), the share of the measured layer time it removes;
a candidate measured no faster than the group as it is saves nothing and is never chosen. Islands of the
same signature (operator, attributes, weight and input shape) are timed once.

Layers run one after another, so the sum over a group's layers is its share of the model's time, up to what
an island cannot see (the neighbouring groups' widths, caches shared with other layers). Therefore the
narrowed model and the model the pass was given are finally timed interleaved, whole, at every batch
(:func:`compare_whole`); unless the narrowed one is faster at every batch by ``margin``, the pass keeps its
input and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...compiler.graph import attr
from ...compiler.sessions import make_session
from ...runtime.bench import geometric_mean, interleaved_latency, timed_session
from ...runtime.session import batch_input, time_run
from ..shrink.analysis import ChannelLayer

REPEATS = 9
WHOLE_MODEL_SECONDS = 0.5  # the whole-model check's timing per batch size, at least REPEATS pairs of runs
MAX_WHOLE_REPEATS = 400


@dataclass(frozen=True)
class _Signature:
    """What an island's time depends on."""

    op: str
    attributes: tuple[bytes, ...]  # serialised, by name
    weight: tuple[int, ...]
    input: tuple[int, ...]  # without the batch dimension
    bias: bool


def island_signature(layer: ChannelLayer, shapes: dict[str, list], width: int, kept: int,
                     producer: bool) -> _Signature | None:
    """The island of ``layer`` with ``kept`` of its ``width`` group channels, or None when it cannot be built
    (a grouped conv, an unknown input shape, a MatMul). A depthwise reader keeps ``kept`` channels and groups."""
    node = layer.node
    depthwise = layer.kind == "depthwise" and not producer  # reads channel c into channel c: group = kept
    if not (layer.kind in ("conv", "gemm") or depthwise) or (
            layer.kind == "conv" and int(attr(node, "group", 1)) != 1):
        return None
    dims = shapes.get(node.input[0]) or []
    if len(dims) < 2 or any(not isinstance(d, int) or d <= 0 for d in dims[1:]):
        return None
    weight = list(layer.weight.shape)
    if node.op_type == "Gemm":  # an [out, in] matrix; its input may be a flattened map of ``in/C`` columns each
        columns = int(np.prod(weight[1:]))
        per_channel = columns // weight[1] if weight[1] else 1
        out, cin = (kept, columns) if producer else (weight[0], kept * per_channel)
        shape, inp = (out, cin), (cin,)
    elif depthwise:
        shape, inp = (kept, *weight[1:]), (kept, *dims[2:])
    else:
        shape = tuple([kept, *weight[1:]] if producer else [weight[0], kept, *weight[2:]])
        inp = tuple([dims[1], *dims[2:]] if producer else [kept, *dims[2:]])
    kept_attrs = [a for a in node.attribute if a.name not in ("transA", "transB", "group")]
    if depthwise:
        kept_attrs.append(helper.make_attribute("group", kept))
    packed = tuple(a.SerializeToString() for a in sorted(kept_attrs, key=lambda a: a.name))
    return _Signature(node.op_type, packed, tuple(int(d) for d in shape), tuple(int(d) for d in inp),
                      len(node.input) > 2 and bool(node.input[2]))


def _island(sig: _Signature, opset: list[onnx.OperatorSetIdProto], rows: int) -> tuple[onnx.ModelProto, np.ndarray]:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal(sig.weight).astype(np.float32) * 0.1
    inits = [numpy_helper.from_array(weight, "w")]
    inputs = ["x", "w"]
    if sig.bias:
        inits.append(numpy_helper.from_array(np.zeros(sig.weight[0], np.float32), "b"))
        inputs.append("b")
    node = helper.make_node(sig.op, inputs, ["y"])
    node.attribute.extend(onnx.AttributeProto.FromString(a) for a in sig.attributes)
    if sig.op == "Gemm":
        node.attribute.append(helper.make_attribute("transB", 1))
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", *sig.input])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([node], "island", [x], [y], inits), opset_imports=opset)
    sample = rng.standard_normal((rows, *sig.input)).astype(np.float32)
    return model, sample


def time_islands(signatures: set[_Signature], opset: list[onnx.OperatorSetIdProto], batches: list[int],
                 threads: int | None) -> dict[_Signature, float]:
    """Milliseconds of every island: the geometric mean over ``batches`` of its interleaved median."""
    if not signatures:
        return {}
    ordered = sorted(signatures, key=repr)
    built = [_island(sig, opset, max(batches)) for sig in ordered]
    sessions = [make_session(model, threads, spinning=False) for model, _ in built]
    times = interleaved_latency(sessions, [sample for _, sample in built], batches, REPEATS)
    return {sig: geometric_mean([t[b] for b in batches]) for sig, t in zip(ordered, times, strict=True)}


def compare_whole(before: onnx.ModelProto, after: onnx.ModelProto, x: np.ndarray, batches: list[int],
                  threads: int | None) -> dict[str, float]:
    """The two models timed interleaved, whole: milliseconds and speed-up (> 1: ``after`` faster) per batch.
    A fast model gets more repeats (``WHOLE_MODEL_SECONDS`` per batch), so that a tenth of a millisecond is
    not judged on a handful of runs."""
    sessions = [timed_session(m, x, threads) for m in (before, after)]
    report: dict[str, float] = {}
    for b in batches:
        chunk = batch_input(sessions[0], x, b)
        one = (time_run(sessions[0], chunk) + time_run(sessions[1], batch_input(sessions[1], x, b))) / 1e3
        repeats = int(min(MAX_WHOLE_REPEATS, max(REPEATS, WHOLE_MODEL_SECONDS / max(one, 1e-6))))
        t_before, t_after = interleaved_latency(sessions, [x, x], [b], repeats)
        report.update({f"input_ms_b{b}": round(t_before[b], 5), f"output_ms_b{b}": round(t_after[b], 5),
                       f"speedup_b{b}": round(t_before[b] / t_after[b], 4), f"repeats_b{b}": repeats})
    return report
