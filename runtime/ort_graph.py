"""What onnxruntime makes of a model: its optimized graph, the kernels in it, and the MACs its convs execute.

onnxruntime rewrites every model before it runs it: Q/DQ pairs fuse into int8 kernels (QLinearConv,
QGemm, ...) at ``extended`` level, and at ``all`` level x86 convs move to the NCHWc layout. Two models run
the same kernels when their optimized graphs hold the same multiset of **kernel signatures**

    (op type, domain, shape and dtype of every constant input, attributes)

so their latencies can differ only by noise: this is how pimc's int8 graph is compared with
onnxruntime's own ``quantize_static`` without trusting a timing ratio inside its A/A spread.

**Executed conv MACs.** An NCHWc conv computes whole channel blocks (``MlasNchwcGetBlockSize()``: 8
with AVX2, 16 with AVX-512), and a conv whose input has fewer channels than a block runs its
NCHW-input kernel. onnxruntime's profiler reports every kernel's shapes as it ran them (padded weight,
padded output), so per image

    executed MACs = Σ_conv  (N · C_out' · H_out · W_out) · (C_in' / g) · k_h · k_w  /  N

with C' the channel counts as executed: prod(output shape) · prod(weight shape[1:]) / N. Against the
model's own MACs it shows how much of a channel cut the runtime can turn into speed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from ..compiler.sessions import ModelLike, open_session, quiet_onnxruntime, session_options

ort = quiet_onnxruntime()

LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
CONV_KERNELS = ("Conv", "FusedConv")
Signature = tuple[str, str, tuple, str]


def optimized_model(model: ModelLike, level: str = "extended") -> onnx.ModelProto:
    """The graph onnxruntime's CPU provider runs for ``model`` after its ``level`` optimizations."""
    options = session_options()
    options.graph_optimization_level = LEVELS[level]
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        open_session(model, options)
        return onnx.load(options.optimized_model_filepath)


def op_counts(model: onnx.ModelProto) -> Counter:
    """How many nodes of each op type a graph has."""
    return Counter(node.op_type for node in model.graph.node)


def kernel_signatures(model: onnx.ModelProto) -> Counter:
    """The multiset of kernel signatures (see the module docstring) of an optimized graph."""
    constants = {init.name: (tuple(init.dims), init.data_type) for init in model.graph.initializer}
    return Counter(_signature(node, constants) for node in model.graph.node)


def _signature(node: onnx.NodeProto, constants: dict[str, tuple]) -> Signature:
    inputs = tuple(constants[name] for name in node.input if name in constants)
    attributes = sorted((a.name, _attribute(a)) for a in node.attribute)
    return node.op_type, node.domain, inputs, repr(attributes)


def _attribute(attribute: onnx.AttributeProto) -> object:
    if attribute.type in (onnx.AttributeProto.TENSOR, onnx.AttributeProto.GRAPH):
        return onnx.AttributeProto.AttributeType.Name(attribute.type)
    value = helper.get_attribute_value(attribute)
    return value.decode() if isinstance(value, bytes) else value


def kernel_difference(a: onnx.ModelProto, b: onnx.ModelProto) -> tuple[list[Signature], list[Signature]]:
    """(signatures only in ``a``, only in ``b``), with multiplicity, of two optimized graphs."""
    left, right = kernel_signatures(a), kernel_signatures(b)
    return sorted((left - right).elements()), sorted((right - left).elements())


@dataclass(frozen=True)
class KernelTime:
    """One kernel as onnxruntime's profiler saw it: shapes as executed and mean time per run."""

    name: str
    op: str
    input_shapes: tuple[tuple[int, ...], ...]
    output_shapes: tuple[tuple[int, ...], ...]
    microseconds: float


def profile_kernels(model: ModelLike, x: np.ndarray, runs: int = 20, threads: int = 1,
                    level: str = "all") -> list[KernelTime]:
    """Every kernel of one session, timed by onnxruntime's profiler over ``runs`` runs on input ``x``."""
    options = session_options()
    options.graph_optimization_level = LEVELS[level]
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = open_session(model, options)
        name = session.get_inputs()[0].name
        for _ in range(runs):
            session.run(None, {name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    return _kernel_times(events, runs)


def _kernel_times(events: Sequence[dict], runs: int) -> list[KernelTime]:
    total: dict[str, float] = {}
    first: dict[str, dict] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        total[event["name"]] = total.get(event["name"], 0.0) + event["dur"]
        first.setdefault(event["name"], event["args"])
    return [KernelTime(name.removesuffix("_kernel_time"), args["op_name"], _shapes(args.get("input_type_shape")),
                       _shapes(args.get("output_type_shape")), total[name] / runs)
            for name, args in first.items()]


def _shapes(entries: Sequence[dict] | None) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(next(iter(entry.values()))) for entry in entries or ())


def executed_conv_macs(kernels: Sequence[KernelTime]) -> float:
    """MACs per image that the profiled float convs executed (see the module docstring)."""
    macs = 0.0
    for kernel in kernels:
        if kernel.op not in CONV_KERNELS or len(kernel.input_shapes) < 2 or not kernel.output_shapes:
            continue
        output, weight = kernel.output_shapes[0], kernel.input_shapes[1]
        macs += float(np.prod(output)) * float(np.prod(weight[1:])) / output[0]
    return macs


def time_by_op(kernels: Sequence[KernelTime]) -> dict[str, float]:
    """Microseconds per run spent in each op type, largest first."""
    spent = Counter()
    for kernel in kernels:
        spent[kernel.op] += kernel.microseconds
    return dict(spent.most_common())


def quantize_static_baseline(source: str | os.PathLike, target: str | os.PathLike, calibration: np.ndarray,
                             reduce_range: bool = False) -> None:
    """onnxruntime's own int8 quantizer, as its users run it (QDQ, per-channel s8 weights, u8 activations),
    calibrated one image at a time on ``calibration``: the baseline pimc's int8 is compared with."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    name = onnx.load(str(source)).graph.input[0].name

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{name: calibration[i : i + 1]} for i in range(len(calibration))])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    quantize_static(str(source), str(target), Images(), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
