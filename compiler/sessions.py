"""The one way pimc opens and runs an onnxruntime session (everything else in pimc calls this module).

A model held in memory is not serialized with its weights: its graph and small tensors are, and every
initializer of at least ``IN_MEMORY_MIN_BYTES`` is handed to onnxruntime from a numpy array
(``SessionOptions.add_external_initializers``), declared in the graph as external data. This skips one
serialization of the weights and onnxruntime's parse of them (about 0.3 s → 0.13 s for a 100 MB model),
and a model above protobuf's 2 GB limit opens too. The arrays live as long as the session.

Every session's own logger is silent below fatal, because pimc turns each onnxruntime error into its
one-line ``PimcError`` (onnxruntime would log it a second time).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import PimcError
from .graph import subgraph_reads
from .modelio import read_model, shell_without

if TYPE_CHECKING:
    import onnxruntime as ort

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


def open_session(model: ModelLike | bytes, options: Any = None):
    """A CPU session of a model (a proto, a path, or its serialized bytes) with ``options`` (from
    ``session_options()``, one per session: the model's weights are added to it); a load failure becomes a
    one-line PimcError."""
    ort = quiet_onnxruntime()
    options = options if options is not None else session_options()
    arrays: list[Any] = []
    data = model if isinstance(model, bytes) else _graph_with_weights_in_memory(as_model(model), options, arrays)
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


ModelLike = onnx.ModelProto | str | os.PathLike


_ELEM_TO_NUMPY = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.INT16: np.int16,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.BOOL: np.bool_,
}


def as_model(model: ModelLike) -> onnx.ModelProto:
    """Return a ModelProto, reading it from disk if given a path."""
    if isinstance(model, onnx.ModelProto):
        return model
    return read_model(model)


def make_session(model: ModelLike, threads: int | None = None, spinning: bool = True,
                 integer_kernels: bool = True) -> ort.InferenceSession:
    """An onnxruntime CPU session; load failures become a one-line PimcError.

    ``spinning=False`` stops idle worker threads from busy-waiting, which matters when several
    sessions run alternately in one process (their spinning threads would steal each other's cores).
    ``integer_kernels=False`` keeps onnxruntime from fusing Q/DQ pairs into its int8 kernels (basic graph
    optimisations only): the model then computes its exact quantized arithmetic in float. A simulated
    accelerator multiplies its int8 operands exactly with a wide accumulator, while onnxruntime's u8×s8
    kernels on x86 CPUs without VNNI sum pairs of products in int16 (VPMADDUBSW) and can saturate, so
    accuracy measured for a simulator target must not depend on the machine's instruction set. A model with
    no quantization nodes has no int8 kernels to fuse, so it keeps every graph optimisation either way.
    """
    proto = as_model(model)
    options = session_options()
    if not integer_kernels and _quantized(proto):
        options.graph_optimization_level = quiet_onnxruntime().GraphOptimizationLevel.ORT_ENABLE_BASIC
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return open_session(proto, options)


def _quantized(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") or n.op_type.startswith("QLinear")
               for n in model.graph.node)


def real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers."""
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def input_dims(value: onnx.ValueInfoProto) -> list[int | None]:
    """Static dims of a tensor input, ``None`` for symbolic or unknown ones."""
    shape = value.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]


def input_dtype(value: onnx.ValueInfoProto) -> type:
    """numpy dtype of a tensor input."""
    elem = value.type.tensor_type.elem_type
    if elem not in _ELEM_TO_NUMPY:
        raise PimcError(f"input '{value.name}' has unsupported element type {elem}")
    return _ELEM_TO_NUMPY[elem]


def fixed_batch(session: ort.InferenceSession) -> int | None:
    """The static batch size of the session's first input, or ``None`` if it is dynamic."""
    shape = session.get_inputs()[0].shape
    return shape[0] if shape and isinstance(shape[0], int) else None


def free_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a single-input model whose input and outputs have a symbolic batch dim and whose stored
    intermediate shapes are dropped, so one session runs any batch size. Valid only where
    :func:`runs_batched` says the graph does not build shapes from its batch size."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inputs = {v.name for v in real_inputs(out)}
    for value in [*(v for v in out.graph.input if v.name in inputs), *out.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = "N"
    del out.graph.value_info[:]
    return out


def runs_batched(model: onnx.ModelProto, x: np.ndarray) -> bool:
    """Whether a model exported with a fixed batch of 1 computes the same per sample on a batch (the
    first samples of ``x``): then :func:`free_batch` lets evaluation run 64 images per call instead of one."""
    if len(real_inputs(model)) != 1 or len(x) < 2:
        return False
    session = make_session(model, spinning=False)
    if fixed_batch(session) != 1:
        return False
    try:
        batched = make_session(free_batch(model), spinning=False)
        name = batched.get_inputs()[0].name
        together = batched.run(None, {name: x[:2]})[0]
    except Exception:  # onnxruntime rejects the graph at another batch: keep batch 1
        return False
    apart = np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(2)])
    scale = max(float(np.max(np.abs(apart))), 1e-30)
    return together.shape == apart.shape and float(np.max(np.abs(together - apart))) <= 1e-4 * scale


def predict(session: ort.InferenceSession, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Run ``x`` through the session in chunks and concatenate the first output.

    Models with a fixed batch size get chunks of exactly that size (the last one padded).
    """
    fixed = fixed_batch(session)
    step = fixed or max(1, batch)
    name = session.get_inputs()[0].name
    outputs = []
    for start in range(0, len(x), step):
        chunk = x[start : start + step]
        if fixed and len(chunk) < fixed:
            outputs.append(run_chunk(session, name, tile_samples(chunk, fixed))[: len(chunk)])
        else:
            outputs.append(run_chunk(session, name, chunk))
    return np.concatenate(outputs) if outputs else np.empty((0,), dtype=np.float32)


def run_chunk(session: ort.InferenceSession, name: str, chunk: np.ndarray) -> np.ndarray:
    """Run one chunk, turning onnxruntime errors into PimcError."""
    try:
        return session.run(None, {name: chunk})[0]
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PimcError(f"onnxruntime failed to run the model: {message}") from exc


def tile_samples(x: np.ndarray, count: int) -> np.ndarray:
    """Exactly ``count`` samples from ``x``, repeating it if it is shorter."""
    reps = -(-count // max(1, len(x)))
    return np.ascontiguousarray(np.concatenate([x] * reps)[:count])


def random_feeds(model: ModelLike, count: int = 1, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``count`` feeds of seeded random data for every real input (symbolic dims become 1)."""
    proto = as_model(model)
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feed = {}
        for value in real_inputs(proto):
            shape = [d or 1 for d in input_dims(value)]
            feed[value.name] = _random_array(rng, shape, input_dtype(value))
        feeds.append(feed)
    return feeds


def _random_array(rng: np.random.Generator, shape: list[int], dtype: type) -> np.ndarray:
    """Standard normal floats, small non-negative integers or random booleans."""
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype is np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    return rng.integers(0, 10, shape).astype(dtype)
