"""fold-batchnorm: Conv followed by BatchNormalization becomes one Conv.

    y = γ · (conv(x, W) + b − μ) / √(σ² + ε) + β
      = conv(x, s·W) + (s·(b − μ) + β)        with s = γ / √(σ² + ε), per output channel.

Exact up to float rounding: s is computed in float64; the weight product is rounded once in the
weight's type (float16 weights are scaled in float64). Applies only when the
Conv's output feeds the BatchNormalization alone, the Conv weight/bias and all BN parameters are
initializers, and the BN is an inference-mode, per-channel one with a single output (opset 7/8
``spatial=0`` BNs are left alone). Works for 1-D, 2-D and 3-D convolutions.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ...compiler.graph import (
    all_names,
    attr,
    consumers,
    graph_output_names,
    remove_initializers,
    subgraph_reads,
    unique_name,
)
from ...compiler.passbase import Pass, PassContext, PassResult

_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)


class FoldBatchnorm(Pass, name="fold-batchnorm", exact=True):
    """Fold BatchNormalization into the preceding Conv (exact)."""

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        graph = model.graph
        inits = {init.name: init for init in graph.initializer}
        pairs = find_foldable(graph, inits)
        names = all_names(graph)
        replaced = {name for conv, bn in pairs for name in [*conv.input[1:3], *bn.input[1:5]] if name}
        for conv, bn in pairs:
            _fold(graph, inits, names, conv, bn)
        if pairs:
            folded_bns = {id(bn) for _, bn in pairs}
            keep = [n for n in graph.node if id(n) not in folded_bns]
            del graph.node[:]
            graph.node.extend(keep)
            _drop_unread(graph, replaced)
        return PassResult(model, bool(pairs), {"folded": [conv.name for conv, _ in pairs]})


def _drop_unread(graph: onnx.GraphProto, candidates: set[str]) -> None:
    """Remove the replaced weights and BN parameters nothing reads any more (cleanup would otherwise
    have to rewrite the whole model once more just for them)."""
    read = {name for node in graph.node for name in [*node.input, *subgraph_reads(node)]}
    read |= graph_output_names(graph)
    remove_initializers(graph, candidates - read)


def find_foldable(graph: onnx.GraphProto, inits: dict[str, onnx.TensorProto]):
    """(Conv, BatchNormalization) pairs: the BN is the Conv's only reader, inference-mode, per-channel,
    and the Conv weight/bias and every BN parameter are initializers."""
    readers = consumers(graph)
    outputs = graph_output_names(graph)
    pairs = []
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.output[0] in outputs:
            continue
        users = readers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "BatchNormalization":
            continue
        bn = users[0]
        if not _foldable(node, bn, inits):
            continue
        pairs.append((node, bn))
    return pairs


def _foldable(conv: onnx.NodeProto, bn: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    if len([o for o in bn.output if o]) != 1 or attr(bn, "training_mode", 0) or not attr(bn, "spatial", 1):
        return False
    weight = inits.get(conv.input[1])
    if weight is None or weight.data_type not in _FLOAT_TYPES or len(weight.dims) < 3:
        return False
    if len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits:
        return False
    params = [inits.get(name) for name in bn.input[1:5]]
    if len(params) != 4 or any(p is None for p in params):
        return False
    return all(list(p.dims) == [weight.dims[0]] for p in params)


def _fold(graph, inits, names: set[str], conv: onnx.NodeProto, bn: onnx.NodeProto) -> None:
    gamma, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in bn.input[1:5])
    eps = attr(bn, "epsilon", 1e-5)
    weight = numpy_helper.to_array(inits[conv.input[1]])
    has_bias = len(conv.input) > 2 and bool(conv.input[2])
    bias = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if has_bias else 0.0
    scale = gamma / np.sqrt(var + eps)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    compute = np.float64 if weight.dtype == np.float16 else weight.dtype
    new_w = (weight.astype(compute, copy=False) * scale.astype(compute).reshape(shape)).astype(weight.dtype)
    new_b = (scale * (bias - mean) + beta).astype(weight.dtype)
    w_name = unique_name(names, f"{conv.name}.weight_bnfolded")
    b_name = unique_name(names, f"{conv.name}.bias_bnfolded")
    for name, value in ((w_name, new_w), (b_name, new_b)):
        inits[name] = _add_initializer(graph, name, value)
    conv.input[1] = w_name
    if len(conv.input) > 2:
        conv.input[2] = b_name
    else:
        conv.input.append(b_name)
    conv.output[0] = bn.output[0]


def _add_initializer(graph: onnx.GraphProto, name: str, value: np.ndarray) -> onnx.TensorProto:
    """Build the tensor in place (appending a finished TensorProto would copy the weights again)."""
    tensor = graph.initializer.add()
    tensor.name = name
    tensor.data_type = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
    tensor.dims.extend(value.shape)
    tensor.raw_data = np.asarray(value, dtype=value.dtype.newbyteorder("<"), order="C").tobytes()
    return tensor
