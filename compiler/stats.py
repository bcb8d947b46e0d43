"""Model statistics recorded around every pass: op counts, parameters and MACs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from .annotations import MAP_PREFIX
from .graph import subgraph_reads
from .workload import extract_workload

_QDQ = {"QuantizeLinear", "DequantizeLinear"}
_COUNTED_TYPES = {
    onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16,
    onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4, onnx.TensorProto.UINT4,
}


@dataclass
class ModelStats:
    nodes: dict[str, int]
    params: int
    nonzero_params: int
    macs: int
    effective_macs: int

    @property
    def node_count(self) -> int:
        return sum(self.nodes.values())


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def _parameter_names(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Learnable-weight initializers: numeric tensors some node reads that are not pimc maps nor QDQ
    scales/zero points (initializers nothing reads, e.g. weights a pass replaced, are not parameters).
    Any tensor a DequantizeLinear expands (int8 weights, int32 biases) is a parameter."""
    qdq_side = {name for n in model.graph.node if n.op_type in _QDQ for name in n.input[1:]}
    dequantized = {n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    read = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
    for n in model.graph.node:
        read |= subgraph_reads(n)
    return [
        init for init in model.graph.initializer
        if init.name in read and not init.name.startswith(MAP_PREFIX) and init.name not in qdq_side
        and (init.data_type in _COUNTED_TYPES or init.name in dequantized)
    ]


def parameter_counts(model: onnx.ModelProto) -> tuple[int, int]:
    total = nonzero = 0
    for init in _parameter_names(model):
        arr = numpy_helper.to_array(init)
        total += arr.size
        nonzero += int(np.count_nonzero(arr))
    return total, nonzero


def model_stats(model: onnx.ModelProto) -> ModelStats:
    """Op counts, parameters and MACs; every weight is converted and counted once."""
    arrays: dict[str, np.ndarray] = {}
    nonzeros: dict[str, int] = {}
    for init in _parameter_names(model):
        arr = numpy_helper.to_array(init)
        arrays[init.name] = arr
        nonzeros[init.name] = int(np.count_nonzero(arr))
    params = sum(a.size for a in arrays.values())
    nonzero = sum(nonzeros.values())
    try:
        workload = extract_workload(model, _known=(arrays, nonzeros))
        macs, effective = workload.macs, workload.effective_macs
    except Exception:
        macs = effective = 0
    return ModelStats(op_counts(model), params, nonzero, macs, effective)
