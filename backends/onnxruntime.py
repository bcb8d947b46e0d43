"""The onnxruntime target: prepares the graph for onnxruntime on CPU; no simulated cost.

Its pipeline folds constants and BatchNorm, removes no-op nodes, and re-fuses any basis/coefficient
decomposition (``recompose``), because on onnxruntime speed comes from pruning, shrinking and re-fusing,
not from the decomposed form. Accuracy and latency are measured with ``pimc run`` / ``pimc bench``.
"""

from __future__ import annotations

from typing import Any

from ..compiler.passbase import all_passes
from ..compiler.target import Target, register_target


@register_target
class OnnxruntimeTarget(Target):
    name = "onnxruntime"
    summary = "onnxruntime on CPU: graph clean-up and re-fusion; accuracy/latency via pimc run and bench"

    def default_pipeline(self) -> list[tuple[str, dict[str, Any]]]:
        pipeline = [("fold-constants", {}), ("eliminate-identity", {}), ("fold-batchnorm", {})]
        available = all_passes()
        for optional in ("shrink", "recompose", "remove-empty-filters"):
            if optional in available:
                pipeline.append((optional, {}))
        pipeline.append(("cleanup", {}))
        return pipeline
