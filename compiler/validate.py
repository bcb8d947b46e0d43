"""Checks of a loaded model's numbers and geometry that onnx's checker and shape inference let through.

Each failure blames the input model in one line (``<file>: node 'conv3' (Conv): ...``):

* weights with NaN (in any float initializer) or infinities (in one a compute or normalisation node
  reads; elsewhere ``-inf`` is a legitimate mask or clip bound);
* a BatchNormalization whose constant variance is negative (``sqrt(var + eps)`` would be NaN);
* a Conv whose weight disagrees with its input: input channels per group (``C_in = C_w · group``), a
  group count that does not divide the input or output channels, a weight rank that differs from the
  input's, or a dilated kernel larger than the padded input.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import PimcError
from .graph import attr, value_shapes

_WEIGHT_READERS = {
    "Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "InstanceNormalization",
    "LayerNormalization", "PRelu",
}
_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16,
}


def validate_model(model: onnx.ModelProto, source: str) -> None:
    """All checks of this module; raises a one-line PimcError naming ``source``."""
    check_finite_weights(model, source)
    check_batchnorm_variance(model, source)
    check_conv_geometry(model, source)


def check_finite_weights(model: onnx.ModelProto, source: str) -> None:
    weight_inputs = {name for n in model.graph.node if n.op_type in _WEIGHT_READERS for name in n.input[1:]}
    for init, values in _float_initializers(model):
        nan = _count(np.isnan, values)
        if nan:
            raise PimcError(f"{source}: initializer '{init.name}' contains NaN ({nan} of {values.size} values)")
        if init.name in weight_inputs:
            inf = _count(np.isinf, values)
            if inf:
                raise PimcError(
                    f"{source}: initializer '{init.name}' contains infinite values ({inf} of {values.size})"
                )


_CHUNK = 2**24


def _count(test, values: np.ndarray) -> int:
    """Elements for which ``test`` holds, in chunks (no full-size temporary for multi-GB weights)."""
    flat = values.reshape(-1)
    return sum(int(np.count_nonzero(test(flat[i : i + _CHUNK]))) for i in range(0, flat.size, _CHUNK))


def _float_initializers(model: onnx.ModelProto) -> Iterator[tuple[onnx.TensorProto, np.ndarray]]:
    """Float initializers with their values (a view of ``raw_data`` where possible, no copy)."""
    for init in model.graph.initializer:
        if init.data_type not in _FLOAT_TYPES or init.data_location == onnx.TensorProto.EXTERNAL:
            continue
        if init.HasField("raw_data") and init.data_type != onnx.TensorProto.BFLOAT16:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).newbyteorder("<")
            yield init, np.frombuffer(init.raw_data, dtype=dtype)
        else:
            yield init, np.asarray(numpy_helper.to_array(init), dtype=np.float32)


def check_batchnorm_variance(model: onnx.ModelProto, source: str) -> None:
    inits = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "BatchNormalization" or len(node.input) < 5 or node.input[4] not in inits:
            continue
        var = numpy_helper.to_array(inits[node.input[4]])
        negative = int(np.count_nonzero(var < 0))
        if negative:
            raise PimcError(
                f"{source}: node '{node.name}' (BatchNormalization): variance '{node.input[4]}' has "
                f"{negative} negative value(s) (min {float(var.min()):.3g})"
            )


def check_conv_geometry(model: onnx.ModelProto, source: str) -> None:
    shapes = value_shapes(model)
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
        if not _static(x) or not _static(w):
            continue
        problem = conv_geometry_problem(node, x, w)
        if problem:
            raise PimcError(f"{source}: node '{node.name}' (Conv): {problem}")


def _static(shape: list | None) -> bool:
    return shape is not None and len(shape) >= 3 and all(isinstance(d, int) and d > 0 for d in shape)


def conv_geometry_problem(node: onnx.NodeProto, x: list[int], w: list[int]) -> str | None:
    """Why a Conv with input shape ``x`` and weight shape ``w`` cannot run, or None."""
    if len(w) != len(x):
        return f"weight has rank {len(w)}, input has rank {len(x)}"
    group = int(attr(node, "group", 1))
    channels, cout, per_group = x[1], w[0], w[1]
    if group < 1:
        return f"group {group} is not positive"
    if channels % group:
        return f"group count {group} does not divide the {channels} input channels"
    if cout % group:
        return f"group count {group} does not divide the {cout} output channels"
    if per_group * group != channels:
        return f"weight has {per_group} input channels per group, input has {channels // group}"
    return _kernel_problem(node, x[2:], w[2:])


def _kernel_problem(node: onnx.NodeProto, spatial: list[int], kernel: list[int]) -> str | None:
    auto_pad = attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return None
    rank = len(spatial)
    pads = list(attr(node, "pads", [0] * 2 * rank)) if auto_pad != "VALID" else [0] * 2 * rank
    dilations = list(attr(node, "dilations", [1] * rank))
    if len(pads) != 2 * rank or len(dilations) != rank:
        return None  # onnx's checker reports malformed attributes
    padded = [size + pads[i] + pads[i + rank] for i, size in enumerate(spatial)]
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    if any(e > p for e, p in zip(extent, padded, strict=True)):
        shown = "x".join(map(str, kernel))
        dilated = "" if extent == kernel else f" (dilated {'x'.join(map(str, extent))})"
        return f"kernel {shown}{dilated} is larger than the padded input {'x'.join(map(str, padded))}"
    return None
