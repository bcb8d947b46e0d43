"""Numeric verification on onnxruntime.

``max_abs_err`` is the largest absolute difference over every output element and every input batch.
``max_rel_err`` is normwise: the largest absolute difference divided by the largest reference magnitude
of the same output (element-wise ratios explode near zero and say nothing about a conv's accuracy).
Both are taken over the elements that are finite in both outputs; ``nonfinite`` counts the elements
that are NaN or infinite in one output but not in the other (NaN in both, or the same infinity, is
agreement). A comparison with ``nonfinite > 0`` is a failure, never a
zero error.

Exactness tolerances depend on the output dtype (one place: ``Comparison.tolerance``): a pass declared
exact may reorder float arithmetic, which float16 outputs resolve only to about 1e-3, so they are
checked against at least ``1e-2`` relative; float32 and float64 against the pass's own tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .errors import PimcError
from .sessions import open_session, quiet_onnxruntime, session_options

_MIN_RELATIVE_TOLERANCE = {np.dtype(np.float16): 1e-2}


@dataclass
class Comparison:
    max_abs_err: float
    max_rel_err: float
    inputs: int
    nonfinite: int = 0
    dtypes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        out = {"max_abs_err": self.max_abs_err, "max_rel_err": self.max_rel_err, "inputs": self.inputs}
        if self.nonfinite:
            out["nonfinite"] = self.nonfinite
        return out

    def tolerance(self, declared: float) -> float:
        """The relative tolerance an exact pass is held to: ``declared``, widened for low-precision outputs."""
        floors = [_MIN_RELATIVE_TOLERANCE.get(np.dtype(d), 0.0) for d in self.dtypes]
        return max([declared, *floors])

    def within(self, declared: float) -> bool:
        return self.nonfinite == 0 and self.max_rel_err <= self.tolerance(declared)

    def failure(self) -> str | None:
        """Why the candidate cannot be right whatever the tolerance (NaN/inf outputs), or None."""
        if self.nonfinite:
            return f"{self.nonfinite} output value(s) are NaN or infinite where the other model's are not"
        return None


def session_for(model: onnx.ModelProto | bytes, optimize: bool = True):
    """An onnxruntime CPU session for a model (or its serialized bytes); ``optimize=False`` skips the graph
    optimisations, which cost more than they save for a run or two that reads every intermediate tensor."""
    options = session_options()
    if not optimize:
        options.graph_optimization_level = quiet_onnxruntime().GraphOptimizationLevel.ORT_DISABLE_ALL
    return open_session(model, options)


def run_model(model: onnx.ModelProto | bytes, feeds: list[dict[str, np.ndarray]],
              optimize: bool = True) -> list[list[np.ndarray]]:
    session = session_for(model, optimize)
    names = {i.name for i in session.get_inputs()}
    try:
        return [session.run(None, {k: v for k, v in feed.items() if k in names}) for feed in feeds]
    except Exception as exc:
        raise PimcError(f"onnxruntime failed to run the model: {str(exc).strip().splitlines()[0]}") from exc


def compare_outputs(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> Comparison:
    max_abs = max_rel = 0.0
    nonfinite = 0
    dtypes: set[str] = set()
    for ref_outs, new_outs in zip(reference, candidate, strict=True):
        for ref, new in zip(ref_outs, new_outs, strict=True):
            ref, new = np.asarray(ref), np.asarray(new)
            if ref.shape != new.shape:
                raise PimcError(f"output shape changed from {ref.shape} to {new.shape}")
            if np.issubdtype(ref.dtype, np.floating):
                dtypes.add(ref.dtype.name)
            if ref.size == 0:
                continue
            diff, scale, bad = _difference(ref.astype(np.float64), new.astype(np.float64))
            nonfinite += bad
            max_abs = max(max_abs, diff)
            max_rel = max(max_rel, diff / scale if scale > 0 else diff)
    return Comparison(max_abs, max_rel, len(reference), nonfinite, tuple(sorted(dtypes)))


def _difference(ref: np.ndarray, new: np.ndarray) -> tuple[float, float, int]:
    """(largest |ref − new| over elements finite in both, largest such |ref|, count of elements that are
    NaN/inf in one array and not the same NaN/inf in the other)."""
    finite = np.isfinite(ref) & np.isfinite(new)
    agree = (ref == new) | (np.isnan(ref) & np.isnan(new))
    bad = int(np.count_nonzero(~finite & ~agree))
    if not finite.any():
        return 0.0, 0.0, bad
    diff = float(np.max(np.abs(ref[finite] - new[finite])))
    scale = float(np.max(np.abs(ref[finite])))
    return diff, scale, bad
