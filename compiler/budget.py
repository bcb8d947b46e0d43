"""The accuracy budget: one mechanism that every lossy pass uses to choose its strength per layer.

Accuracy is top-1 on labelled *validation* samples (disjoint from calibration and from the held-out test
split the report shows; see ``runtime.datasets.data_splits``). The reference is the input model's
validation accuracy a_0. With a budget of D points, a lossy pass that walks its layers in order releases
the budget in proportion to the work it has covered, so early layers cannot spend what later ones need:
    allowance(i) = D · safety · (Σ_{j ≤ i} MACs_j) / (Σ_j MACs_j) + spent before the pass
and accepts, for layer i, the cheapest candidate whose model keeps a_0 − a ≤ allowance(i).
``safety`` (default 0.5) keeps a margin for the gap between validation and test accuracy: validation
samples come from the training split, where a trained model is more confident than on unseen data. The
compile driver checks the final model against the full budget on the test split and fails if it is
exceeded, so the margin only decides how often that happens, never what is reported.

Candidates are searched by bisection over a list ordered from cheapest to dearest (their error is
assumed to fall roughly as the cost rises): about log2(n) evaluations per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import onnx

DEFAULT_MAX_DROP_POINTS = 1.0
DEFAULT_SAFETY = 0.5

C = TypeVar("C")


@dataclass
class AccuracyBudget:
    """Validation data, the allowed drop in points, and the accuracy of the model it is measured against."""

    x: np.ndarray
    y: np.ndarray
    max_drop_points: float = DEFAULT_MAX_DROP_POINTS
    safety: float = DEFAULT_SAFETY
    reference_accuracy: float | None = None
    evaluations: int = 0
    integer_kernels: bool = True  # False for simulator targets: see runtime.session.make_session
    log: list[dict[str, Any]] = field(default_factory=list)

    def accuracy(self, model: onnx.ModelProto) -> float:
        """Top-1 accuracy of ``model`` on the validation samples (a fraction)."""
        from ..runtime.session import accuracy, make_session, predict

        self.evaluations += 1
        session = make_session(model, spinning=False, integer_kernels=self.integer_kernels)
        return float(accuracy(predict(session, self.x.astype(np.float32)), self.y))

    def set_reference(self, model: onnx.ModelProto) -> float:
        self.reference_accuracy = self.accuracy(model)
        return self.reference_accuracy

    def drop_points(self, accuracy: float) -> float:
        if self.reference_accuracy is None:
            raise RuntimeError("AccuracyBudget.set_reference must run first")
        return 100.0 * (self.reference_accuracy - accuracy)

    def usable_points(self) -> float:
        return self.max_drop_points * self.safety

    def allowance(self, progress: float) -> float:
        """Points of drop allowed once ``progress`` (0..1) of the pass's work is compressed."""
        return self.usable_points() * min(1.0, max(0.0, progress))


@dataclass
class Choice:
    index: int
    model: onnx.ModelProto
    accuracy: float
    tried: int


def cheapest_within(candidates: Sequence[C], build: Callable[[C], onnx.ModelProto | None],
                    budget: AccuracyBudget, allowance_points: float) -> Choice | None:
    """The cheapest candidate (``candidates`` ordered cheapest first) whose model stays within the allowance.

    ``build`` returns the whole model with the candidate applied, or None when it cannot apply. Bisection
    finds the boundary; the dearest candidate is tried first so a layer that cannot be compressed at all
    costs one evaluation."""
    cache: dict[int, tuple[onnx.ModelProto | None, float | None]] = {}

    def passes(i: int) -> bool:
        if i not in cache:
            model = build(candidates[i])
            cache[i] = (model, None if model is None else budget.accuracy(model))
        model, acc = cache[i]
        return acc is not None and budget.drop_points(acc) <= allowance_points + 1e-9

    if not candidates or not passes(len(candidates) - 1):
        return None
    lo, hi = 0, len(candidates) - 1  # invariant: hi passes
    while lo < hi:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid + 1
    model, acc = cache[hi]
    assert model is not None and acc is not None
    return Choice(hi, model, acc, len(cache))
