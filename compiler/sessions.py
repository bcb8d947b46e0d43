"""The one way pimc opens an onnxruntime session.

A model held in memory is not serialized with its weights: its graph and small tensors are, and every
initializer of at least ``IN_MEMORY_MIN_BYTES`` is handed to onnxruntime from a numpy array
(``SessionOptions.add_external_initializers``), declared in the graph as external data. This skips one
serialization of the weights and onnxruntime's parse of them (about 0.3 s → 0.13 s for a 100 MB model),
and a model above protobuf's 2 GB limit opens too. The arrays live as long as the session.

Every session's own logger is silent below fatal, because pimc turns each onnxruntime error into its
one-line ``PimcError`` (onnxruntime would log it a second time).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import PimcError
from .graph import subgraph_reads
from .modelio import shell_without

IN_MEMORY_MIN_BYTES = 1024
_ORT_ERRORS_ONLY = 3
_ORT_FATAL_ONLY = 4
_ORT_QUIET = False
# element types whose numpy arrays onnxruntime takes as they are
_IN_MEMORY_TYPES = frozenset({
    onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.INT8,
    onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16, onnx.TensorProto.INT32,
    onnx.TensorProto.UINT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT64,
})


def quiet_onnxruntime():
    """The onnxruntime module, its process-wide default logger set to errors only (its warnings would
    be extra, coloured lines on stderr). Call before creating any session."""
    import onnxruntime as ort

    global _ORT_QUIET
    if not _ORT_QUIET:
        ort.set_default_logger_severity(_ORT_ERRORS_ONLY)
        _ORT_QUIET = True
    return ort


def session_options():
    """SessionOptions for every pimc session (its logger silent below fatal)."""
    options = quiet_onnxruntime().SessionOptions()
    options.log_severity_level = _ORT_FATAL_ONLY
    return options


def open_session(model: onnx.ModelProto | bytes, options: Any = None):
    """A CPU session of a model (or its serialized bytes) with ``options`` (from ``session_options()``);
    a load failure becomes a one-line PimcError."""
    ort = quiet_onnxruntime()
    options = options if options is not None else session_options()
    arrays: list[Any] = []
    data = model if isinstance(model, bytes) else _graph_with_weights_in_memory(model, options, arrays)
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PimcError(f"onnxruntime cannot load the model: {message}") from exc
    session._pimc_weights = arrays  # onnxruntime reads these buffers for the session's whole life
    return session


def _graph_with_weights_in_memory(model: onnx.ModelProto, options: Any, keep: list[Any]) -> bytes:
    """``model`` serialized with its large initializers declared external and handed to ``options``."""
    ort = quiet_onnxruntime()
    shell = shell_without(model, skip="graph")
    shell.graph.CopyFrom(shell_without(model.graph, skip="initializer"))
    names, values = [], []
    read = {name for node in model.graph.node for name in [*node.input, *subgraph_reads(node)]}
    for init in model.graph.initializer:
        # onnxruntime drops initializers nothing reads before it looks for the external ones
        array = _in_memory_array(init) if init.name in read else None
        if array is None:
            shell.graph.initializer.append(init)
            continue
        stub = shell.graph.initializer.add()
        stub.name, stub.data_type = init.name, init.data_type
        stub.dims.extend(init.dims)
        stub.data_location = onnx.TensorProto.EXTERNAL
        stub.external_data.add(key="location", value=init.name)
        names.append(init.name)
        values.append(ort.OrtValue.ortvalue_from_numpy(array))
    if names:
        options.add_external_initializers(names, values)
    keep.extend(values)
    return shell.SerializeToString()


def _in_memory_array(init: onnx.TensorProto) -> np.ndarray | None:
    """The initializer's value as a contiguous array when it is large and of a plain numeric type."""
    if init.data_type not in _IN_MEMORY_TYPES or init.data_location == onnx.TensorProto.EXTERNAL:
        return None
    size = int(np.prod(init.dims)) if init.dims else 1
    if size * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize < IN_MEMORY_MIN_BYTES:
        return None
    return np.ascontiguousarray(numpy_helper.to_array(init))
