"""Accuracy and latency of a model on a dataset, on onnxruntime (sessions: ``compiler.sessions``)."""

from __future__ import annotations

import time

import numpy as np

from ..compiler.errors import PimcError
from ..compiler.sessions import (
    ModelLike,
    as_model,
    fixed_batch,
    free_batch,
    input_dims,
    input_dtype,
    make_session,
    predict,
    quiet_onnxruntime,
    real_inputs,
    run_chunk,
    tile_samples,
)
from .datasets import Dataset, Shape3, data_splits

ort = quiet_onnxruntime()


def model_input(model: ModelLike) -> tuple[str, Shape3, type]:
    """Name, (C, H, W) and numpy dtype of the model's first real input, which must be an NCHW image with a
    static channel count; a symbolic H or W is None (image-to-image data then chooses the size)."""
    proto = as_model(model)
    inputs = real_inputs(proto)
    if not inputs:
        raise PimcError("model has no inputs")
    first = inputs[0]
    dims = input_dims(first)
    if len(dims) != 4 or dims[1] is None or any(d is not None and d <= 0 for d in dims[1:]):
        shown = "x".join("?" if d is None else str(d) for d in dims) or "scalar"
        raise PimcError(f"input '{first.name}' has shape {shown}; an image dataset needs a static N x C x H x W input")
    return first.name, (dims[1], dims[2], dims[3]), input_dtype(first)


def accuracy(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Top-1 accuracy of ``logits`` against ``labels``, ``None`` without labels."""
    if labels is None or len(labels) == 0:
        return None
    flat = logits.reshape(len(logits), -1)
    return float(np.mean(flat.argmax(axis=1) == labels))


def quality(outputs: np.ndarray, data: Dataset) -> float | None:
    """The metric of ``data`` (top-1 for labels, PSNR for image targets; ``compiler.metrics``) of ``outputs``."""
    if data.y is None or len(data.y) == 0:
        return None
    return data.metric.value(outputs, data.y)


def batch_input(session: ort.InferenceSession, x: np.ndarray, batch: int) -> np.ndarray:
    """One batch for timing: ``batch`` samples (or the model's fixed batch), repeating ``x`` if short."""
    return tile_samples(x, fixed_batch(session) or batch)


def time_run(session: ort.InferenceSession, chunk: np.ndarray) -> float:
    """Wall-clock milliseconds of one run on ``chunk``."""
    name = session.get_inputs()[0].name
    start = time.perf_counter()
    run_chunk(session, name, chunk)
    return (time.perf_counter() - start) * 1e3


def time_batches(session: ort.InferenceSession, x: np.ndarray, batch: int, repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` runs on one batch, after one warm-up run."""
    chunk = batch_input(session, x, batch)
    time_run(session, chunk)
    return [time_run(session, chunk) for _ in range(max(1, repeats))]


def evaluate(
    model: ModelLike, dataset: Dataset, batch: int = 64, repeats: int = 20, threads: int | None = None
) -> dict:
    """The metric over ``dataset`` (``accuracy``: top-1, or PSNR in dB for image targets; ``metric`` names it)
    and median/p90 latency of one batch on onnxruntime."""
    proto = as_model(model)
    session = make_session(proto, threads)
    _, _, dtype = model_input(proto)
    x = dataset.x.astype(dtype, copy=False)
    logits = predict(session, x, batch)
    times = time_batches(session, x, batch, repeats)
    return {
        "accuracy": quality(logits, dataset),
        "metric": dataset.metric.name,
        "samples": len(dataset),
        "latency_ms_median": float(np.median(times)),
        "latency_ms_p90": float(np.percentile(times, 90)),
        "batch": fixed_batch(session) or batch,
    }


def feeds(model: ModelLike, dataset: Dataset) -> list[dict[str, np.ndarray]]:
    """One feed per sample of ``dataset`` (batch 1, the model's input dtype) for a single-input model."""
    proto = as_model(model)
    name, _, dtype = model_input(proto)
    if len(real_inputs(proto)) > 1:
        raise PimcError("dataset calibration needs a model with a single image input")
    return [{name: dataset.x[i : i + 1].astype(dtype)} for i in range(len(dataset))]


def model_quality(model: ModelLike, dataset: Dataset, batch: int = 64, threads: int | None = None,
                  integer_kernels: bool = True, batched: bool = False) -> dict[str, float]:
    """``model_accuracy`` as ``{"value": ...}`` with the metric's second figures (SSIM for PSNR)."""
    if dataset.y is None:
        raise PimcError(f"{dataset.name}: no labels to measure accuracy against")
    proto = free_batch(as_model(model)) if batched else as_model(model)
    _, _, dtype = model_input(proto)
    outputs = predict(make_session(proto, threads, integer_kernels=integer_kernels),
                      dataset.x.astype(dtype, copy=False), batch)
    return {"value": dataset.metric.value(outputs, dataset.y), **dataset.metric.second(outputs, dataset.y)}


def model_accuracy(model: ModelLike, dataset: Dataset, batch: int = 64, threads: int | None = None,
                   integer_kernels: bool = True, batched: bool = False) -> float:
    """The metric (top-1, or PSNR for image targets) of ``model`` on the labelled ``dataset`` on onnxruntime (no
    timing runs); ``batched``: run a batch-1 export on batches (see :func:`runs_batched`)."""
    return model_quality(model, dataset, batch, threads, integer_kernels, batched)["value"]


def dataset_feeds(model: ModelLike, spec: str, count: int = 32, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Calibration feeds of one sample each: ``data_splits(spec).calibration`` with ``count`` samples
    (a seeded draw from the train split; never from a test part)."""
    _, shape, _ = model_input(as_model(model))
    splits = data_splits(spec, shape, seed=seed, calibration_samples=max(1, count), validation_samples=0)
    return feeds(model, splits.calibration)
