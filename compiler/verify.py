"""Numeric verification on onnxruntime.

``max_abs_err`` is the largest absolute difference over every output element and every input batch.
``max_rel_err`` is normwise: the largest absolute difference divided by the largest reference magnitude
of the same output (element-wise ratios explode near zero and say nothing about a conv's accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .errors import PimcError
from .modelio import TWO_GB, serialize_model


@dataclass
class Comparison:
    max_abs_err: float
    max_rel_err: float
    inputs: int

    def to_dict(self) -> dict:
        return {"max_abs_err": self.max_abs_err, "max_rel_err": self.max_rel_err, "inputs": self.inputs}


def session_for(model: onnx.ModelProto | bytes):
    """An onnxruntime CPU session for a model (or its serialized bytes)."""
    import onnxruntime as ort

    data = model if isinstance(model, bytes) else serialize_model(model)
    if data is None or len(data) >= TWO_GB:
        raise PimcError("verification of models above 2 GB is not supported; run without --verify")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise PimcError(f"onnxruntime cannot load the model: {str(exc).strip().splitlines()[0]}") from exc


def run_model(model: onnx.ModelProto | bytes, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    session = session_for(model)
    names = {i.name for i in session.get_inputs()}
    try:
        return [session.run(None, {k: v for k, v in feed.items() if k in names}) for feed in feeds]
    except Exception as exc:
        raise PimcError(f"onnxruntime failed to run the model: {str(exc).strip().splitlines()[0]}") from exc


def compare_outputs(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> Comparison:
    max_abs = max_rel = 0.0
    for ref_outs, new_outs in zip(reference, candidate, strict=True):
        for ref, new in zip(ref_outs, new_outs, strict=True):
            ref = np.asarray(ref, dtype=np.float64)
            new = np.asarray(new, dtype=np.float64)
            if ref.shape != new.shape:
                raise PimcError(f"output shape changed from {ref.shape} to {new.shape}")
            if ref.size == 0:
                continue
            diff = float(np.max(np.abs(ref - new)))
            scale = float(np.max(np.abs(ref)))
            max_abs = max(max_abs, diff)
            max_rel = max(max_rel, diff / scale if scale > 0 else diff)
    return Comparison(max_abs, max_rel, len(reference))
