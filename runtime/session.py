"""onnxruntime sessions, prediction and accuracy/latency evaluation."""

from __future__ import annotations

import os
import time

import numpy as np
import onnx

from ..compiler.errors import PimcError
from ..compiler.modelio import read_model
from ..compiler.sessions import open_session as _open
from ..compiler.sessions import quiet_onnxruntime, session_options
from .datasets import Dataset, Shape3, data_splits

ort = quiet_onnxruntime()

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
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return open_session(proto, options)


def _quantized(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") or n.op_type.startswith("QLinear")
               for n in model.graph.node)


def open_session(model: ModelLike, options: object) -> ort.InferenceSession:
    """A CPU session of ``model`` (a proto or a path) with ``options`` (built from ``session_options()``)."""
    return _open(as_model(model), options)


def real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers."""
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    """Static dims of a tensor input, ``None`` for symbolic or unknown ones."""
    shape = value.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]


def _dtype(value: onnx.ValueInfoProto) -> type:
    """numpy dtype of a tensor input."""
    elem = value.type.tensor_type.elem_type
    if elem not in _ELEM_TO_NUMPY:
        raise PimcError(f"input '{value.name}' has unsupported element type {elem}")
    return _ELEM_TO_NUMPY[elem]


def model_input(model: ModelLike) -> tuple[str, Shape3, type]:
    """Name, (C, H, W) and numpy dtype of the model's first real input, which must be an NCHW image."""
    proto = as_model(model)
    inputs = real_inputs(proto)
    if not inputs:
        raise PimcError("model has no inputs")
    first = inputs[0]
    dims = _dims(first)
    if len(dims) != 4 or any(d is None or d <= 0 for d in dims[1:]):
        shown = "x".join("?" if d is None else str(d) for d in dims) or "scalar"
        raise PimcError(f"input '{first.name}' has shape {shown}; an image dataset needs a static N x C x H x W input")
    return first.name, (dims[1], dims[2], dims[3]), _dtype(first)


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
            outputs.append(_run_chunk(session, name, _tile(chunk, fixed))[: len(chunk)])
        else:
            outputs.append(_run_chunk(session, name, chunk))
    return np.concatenate(outputs) if outputs else np.empty((0,), dtype=np.float32)


def _run_chunk(session: ort.InferenceSession, name: str, chunk: np.ndarray) -> np.ndarray:
    """Run one chunk, turning onnxruntime errors into PimcError."""
    try:
        return session.run(None, {name: chunk})[0]
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PimcError(f"onnxruntime failed to run the model: {message}") from exc


def accuracy(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Top-1 accuracy of ``logits`` against ``labels``, ``None`` without labels."""
    if labels is None or len(labels) == 0:
        return None
    flat = logits.reshape(len(logits), -1)
    return float(np.mean(flat.argmax(axis=1) == labels))


def batch_input(session: ort.InferenceSession, x: np.ndarray, batch: int) -> np.ndarray:
    """One batch for timing: ``batch`` samples (or the model's fixed batch), repeating ``x`` if short."""
    return _tile(x, fixed_batch(session) or batch)


def time_run(session: ort.InferenceSession, chunk: np.ndarray) -> float:
    """Wall-clock milliseconds of one run on ``chunk``."""
    name = session.get_inputs()[0].name
    start = time.perf_counter()
    _run_chunk(session, name, chunk)
    return (time.perf_counter() - start) * 1e3


def time_batches(session: ort.InferenceSession, x: np.ndarray, batch: int, repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` runs on one batch, after one warm-up run."""
    chunk = batch_input(session, x, batch)
    time_run(session, chunk)
    return [time_run(session, chunk) for _ in range(max(1, repeats))]


def _tile(x: np.ndarray, count: int) -> np.ndarray:
    """Exactly ``count`` samples from ``x``, repeating it if it is shorter."""
    reps = -(-count // max(1, len(x)))
    return np.ascontiguousarray(np.concatenate([x] * reps)[:count])


def evaluate(
    model: ModelLike, dataset: Dataset, batch: int = 64, repeats: int = 20, threads: int | None = None
) -> dict:
    """Accuracy over ``dataset`` and median/p90 latency of one batch on onnxruntime."""
    proto = as_model(model)
    session = make_session(proto, threads)
    _, _, dtype = model_input(proto)
    x = dataset.x.astype(dtype, copy=False)
    logits = predict(session, x, batch)
    times = time_batches(session, x, batch, repeats)
    return {
        "accuracy": accuracy(logits, dataset.y),
        "samples": len(dataset),
        "latency_ms_median": float(np.median(times)),
        "latency_ms_p90": float(np.percentile(times, 90)),
        "batch": fixed_batch(session) or batch,
    }


def random_feeds(model: ModelLike, count: int = 1, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``count`` feeds of seeded random data for every real input (symbolic dims become 1)."""
    proto = as_model(model)
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feed = {}
        for value in real_inputs(proto):
            shape = [d or 1 for d in _dims(value)]
            feed[value.name] = _random_array(rng, shape, _dtype(value))
        feeds.append(feed)
    return feeds


def _random_array(rng: np.random.Generator, shape: list[int], dtype: type) -> np.ndarray:
    """Standard normal floats, small non-negative integers or random booleans."""
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype is np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    return rng.integers(0, 10, shape).astype(dtype)


def feeds(model: ModelLike, dataset: Dataset) -> list[dict[str, np.ndarray]]:
    """One feed per sample of ``dataset`` (batch 1, the model's input dtype) for a single-input model."""
    proto = as_model(model)
    name, _, dtype = model_input(proto)
    if len(real_inputs(proto)) > 1:
        raise PimcError("dataset calibration needs a model with a single image input")
    return [{name: dataset.x[i : i + 1].astype(dtype)} for i in range(len(dataset))]


def model_accuracy(model: ModelLike, dataset: Dataset, batch: int = 64, threads: int | None = None,
                   integer_kernels: bool = True, batched: bool = False) -> float:
    """Top-1 accuracy of ``model`` on the labelled ``dataset`` on onnxruntime (no timing runs); ``batched``:
    run a batch-1 export on batches (see :func:`runs_batched`)."""
    if dataset.y is None:
        raise PimcError(f"{dataset.name}: no labels to measure accuracy against")
    proto = free_batch(as_model(model)) if batched else as_model(model)
    _, _, dtype = model_input(proto)
    logits = predict(make_session(proto, threads, integer_kernels=integer_kernels), dataset.x.astype(dtype, copy=False), batch)
    result = accuracy(logits, dataset.y)
    return 0.0 if result is None else result


def dataset_feeds(model: ModelLike, spec: str, count: int = 32, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Calibration feeds of one sample each: ``data_splits(spec).calibration`` with ``count`` samples
    (a seeded draw from the train split; never from a test part)."""
    _, shape, _ = model_input(as_model(model))
    splits = data_splits(spec, shape, seed=seed, calibration_samples=max(1, count), validation_samples=0)
    return feeds(model, splits.calibration)
