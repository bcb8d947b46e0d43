"""The cim target: default pipeline, lowering, cost and baselines."""

from __future__ import annotations

from typing import Any

import onnx

from ...compiler.target import NORMALIZE, BaselinePlan, CostReport, HardwareConfig, Target
from ...compiler.workload import extract_workload
from .config import CimConfig
from .cost import _lower_model, digital_cost, schedule_cost
from .lower import CimSchedule, lower_workload


class CimTarget(Target, name="cim"):
    """SRAM charge-domain CiM macro (8b×8b, MAC+ReLU per A/D conversion; 51.2 GOPS, 10.3 TOPS/W)."""

    config_cls = CimConfig

    def default_pipeline(self) -> list[tuple[str, dict[str, Any]]]:
        return [*NORMALIZE, ("fuse-relu", {}), ("quantize", {"bits": 8, "act_scheme": "symmetric"}), ("cleanup", {}),
                ("activation-sparsity", {})]

    def lower(self, model: onnx.ModelProto, hw: HardwareConfig | None) -> CimSchedule:
        return lower_workload(extract_workload(model).layers, CimConfig.of(hw))

    def cost(self, schedule: CimSchedule, hw: HardwareConfig | None) -> CostReport:
        return schedule_cost(schedule, CimConfig.of(hw))

    def baseline_plans(self) -> list[BaselinePlan]:
        return [
            BaselinePlan("input", "this macro (same hardware description) without pimc's passes: no ReLU "
                         "marks, 8b where unannotated", lambda m, hw: schedule_cost(*_lower_model(m, hw)),
                         reference=True),
            BaselinePlan("digital", "a digital 8b MAC array at 65 nm, equal peak throughput (rows MACs per "
                         "macro at the same clock), same SRAM, mapping and buffers",
                         lambda m, hw: digital_cost(*_lower_model(m, hw))),
        ]
