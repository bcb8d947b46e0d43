"""The escalate target: default pipeline, lowering, cost, baselines and break-even."""

from __future__ import annotations

import functools
from typing import Any

import onnx

from ...compiler.target import NORMALIZE, BaselinePlan, CostReport, HardwareConfig, Target
from ...compiler.workload import extract_workload
from .config import EscalateConfig
from .cost import ACCELERATORS, accelerator_cost, break_even_layers, cost_schedule
from .lower import Schedule, lower_workload


class EscalateTarget(Target, name="escalate"):
    """ESCALATE kernel-decomposition accelerator (Basis-First dataflow) with dense and sparse baselines."""

    config_cls = EscalateConfig

    def default_pipeline(self) -> list[tuple[str, dict[str, Any]]]:
        """Post-training decomposition chooses each layer's rank and coefficient sparsity under the accuracy
        budget, refitting the coefficients to the original outputs (``decompose`` without ``rank``); without
        labelled data it changes nothing lossy. Pairs exported by ``pimc export decompose`` (PENNI) are
        recognised and kept."""
        return [*NORMALIZE, ("fuse-relu", {"measure": False}), ("decompose", {}), ("shrink", {}), ("cleanup", {}),
                ("activation-sparsity", {})]

    def lower(self, model: onnx.ModelProto, hw: HardwareConfig | None) -> Schedule:
        return lower_workload(extract_workload(model), EscalateConfig.of(hw))

    def cost(self, schedule: Schedule, hw: HardwareConfig | None) -> CostReport:
        return cost_schedule(schedule, EscalateConfig.of(hw))

    def break_even(self, model: onnx.ModelProto, hw: HardwareConfig | None) -> list[dict[str, Any]]:
        """Every layer on the sparse baseline's zero-skipping lanes against the dense array."""
        return break_even_layers(model, EscalateConfig.of(hw))

    def baseline_plans(self) -> list[BaselinePlan]:
        return [BaselinePlan(kind, what, functools.partial(accelerator_cost, kind=kind), reference=kind == "dense")
                for kind, what in ACCELERATORS.items()]

    def cost_many(self, model: onnx.ModelProto, baseline_model: onnx.ModelProto,
                  values: dict[str, list[Any]]) -> dict[str, Any]:
        """Cost and baselines at N hardware points at once (``batch.cost_many``); ``values`` maps
        hardware parameters to N values each, the others keep their defaults."""
        from .batch import cost_many

        return cost_many(extract_workload(model), extract_workload(baseline_model), values)
