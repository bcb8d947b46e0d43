"""Targets: a name, a default pipeline, ``lower(model, hw) -> schedule`` and ``cost(schedule, hw)``.

Hardware parameters live in a dataclass derived from ``HardwareConfig``. Every field is declared with
``hw_field(default, unit, source)``: ``source`` names the paper/number it comes from, or starts with
"assumption" when nothing backs it. ``--hw FILE`` (TOML or YAML, flat ``name = value``) overrides fields.
A target is declared as ``class X(Target, name="x"):`` (its docstring's first paragraph is its one-line
summary); ``pimc.backends.TARGET_MODULES`` says which module declares it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import onnx
import tomllib

from .errors import PimcError
from .modelio import MAX_TEXT_FILE_BYTES, read_input_file
from .registry import Registry, docstring_summary

if TYPE_CHECKING:
    from .workload import LayerRecord


def hw_field(default: Any, unit: str, source: str) -> Any:
    return field(default=default, metadata={"unit": unit, "source": source})


H = TypeVar("H", bound="HardwareConfig")


@dataclass
class HardwareConfig:
    """Base of every target's hardware description."""

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        return [
            {"name": f.name, "default": f.default, "unit": f.metadata.get("unit", ""),
             "source": f.metadata.get("source", "")}
            for f in dataclasses.fields(cls)
        ]

    @classmethod
    def of(cls: type[H], hw: HardwareConfig | None) -> H:
        """``hw`` as this config class (its defaults when ``hw`` is None); another target's config is an error."""
        if hw is None:
            return cls()
        if not isinstance(hw, cls):
            raise PimcError(f"this target needs a {cls.__name__}, got {type(hw).__name__}")
        return hw

    @classmethod
    def from_file(cls, path: str | Path | None) -> HardwareConfig:
        if path is None:
            return cls()
        return cls.from_dict(read_config_file(path), str(path))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "hardware config") -> HardwareConfig:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key not in fields:
                raise PimcError(f"{source}: unknown hardware parameter '{key}' (known: {', '.join(fields)})")
            kwargs[key] = _coerce(value, fields[key].default, f"{source}: {key}")
        config = cls(**kwargs)
        config.validate()
        return config

    def validate(self) -> None:
        """Every number is finite and non-negative (NaN would silently poison every cost)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if not math.isfinite(value):
                raise PimcError(f"hardware parameter '{f.name}' must be a finite number (got {value})")
            if value < 0:
                raise PimcError(f"hardware parameter '{f.name}' must not be negative (got {value})")

    def replace(self, **changes: Any) -> HardwareConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, default: Any, where: str) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise PimcError(f"{where}: expected true/false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise PimcError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PimcError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise PimcError(f"{where}: expected a string, got {value!r}")
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise PimcError(f"{p}: no such hardware config file")
    text = read_input_file(p, MAX_TEXT_FILE_BYTES, "hardware config file").decode(errors="replace")
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = tomllib.loads(text)
    except Exception as exc:
        raise PimcError(f"{p}: cannot parse hardware config ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise PimcError(f"{p}: hardware config must be a table of name = value")
    return data


# the exact clean-up every target's default pipeline opens with: initializers for constant subgraphs, no
# no-op nodes, BatchNorms folded into their convs
NORMALIZE: list[tuple[str, dict[str, Any]]] = [("fold-constants", {}), ("eliminate-identity", {}), ("fold-batchnorm", {})]


@dataclass
class CostReport:
    """A target's simulated cost; ``to_dict`` gives the report's stable ``cost`` section."""

    latency_cycles: float
    latency_s: float
    energy_j: float
    energy_breakdown_j: dict[str, float]
    throughput_gops: float
    tops_per_w: float
    layers: list[dict[str, Any]]
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    executed_ops: float | None = None
    executed_note: str = ""

    @property
    def cycles_and_energy(self) -> tuple[float, float]:
        return self.latency_cycles, self.energy_j

    @property
    def speedup_vs(self) -> dict[str, float]:
        return {k: _ratio(v["latency_s"], self.latency_s) for k, v in self.baselines.items()}

    @property
    def energy_gain_vs(self) -> dict[str, float]:
        return {k: _ratio(v["energy_j"], self.energy_j) for k, v in self.baselines.items()}

    def to_dict(self) -> dict[str, Any]:
        out = {
            "latency_cycles": self.latency_cycles, "latency_s": self.latency_s, "energy_j": self.energy_j,
            "energy_breakdown_j": self.energy_breakdown_j, "throughput_gops": self.throughput_gops,
            "tops_per_w": self.tops_per_w, "layers": self.layers, "baselines": self.baselines,
            "speedup_vs": self.speedup_vs, "energy_gain_vs": self.energy_gain_vs,
        }
        if self.executed_ops is not None:
            out["executed_gops"] = _ratio(self.executed_ops, self.latency_s) / 1e9 if self.latency_s else 0.0
            out["executed_tops_per_w"] = _ratio(self.executed_ops, self.energy_j) / 1e12 if self.energy_j else 0.0
            out["executed_note"] = self.executed_note
        out.update(self.extra)
        return out

    def count_input_ops(self, input_macs: int) -> None:
        """One meaning for throughput on every target: ``throughput_gops`` and ``tops_per_w`` count
        2 ops per dense MAC of the INPUT model (the model as loaded) over this latency / energy, so two
        compiles of the same model compare by their figures; what the hardware executes stays in
        ``executed_gops`` / ``executed_tops_per_w`` (``executed_ops`` as the backend counted it)."""
        if self.executed_ops is None:
            self.executed_ops = self.throughput_gops * 1e9 * self.latency_s
        ops = 2.0 * input_macs
        self.throughput_gops = ops / self.latency_s / 1e9 if self.latency_s else 0.0
        self.tops_per_w = ops / self.energy_j / 1e12 if self.energy_j else 0.0
        self.extra["throughput_note"] = (
            "throughput_gops / tops_per_w: 2 ops per dense MAC of the input model; executed_*: "
            + (self.executed_note or "the operations the hardware executes"))


def skipping_summary(hw: Any, input_densities: list[float | None], current: tuple[float, float],
                     recost: Callable[[Any], tuple[float, float]]) -> dict[str, Any]:
    """The report's ``activation_skipping`` section of one compiled model: its (cycles, energy) ``current``
    under ``hw.activation_skipping``, and ``recost(hw)``, those of the same schedule under the opposite setting
    (called only when some layer input was measured: ``input_densities`` holds None for the others)."""
    enabled = bool(hw.activation_skipping)
    measured = sum(1 for density in input_densities if density is not None)
    summary: dict[str, Any] = {"enabled": enabled, "measured_layers": measured, "layers": len(input_densities)}
    if not measured:
        summary["note"] = "no layer input was measured (activation-sparsity runs with --data): nothing skipped"
        return summary
    other = recost(hw.replace(activation_skipping=not enabled))
    on, off = (current, other) if enabled else (other, current)
    summary.update(cycles_with=on[0], cycles_without=off[0], energy_with_j=on[1], energy_without_j=off[1],
                   speedup=off[0] / on[0] if on[0] else 1.0, energy_gain=off[1] / on[1] if on[1] else 1.0)
    return summary


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


@dataclass(frozen=True)
class BaselinePlan:
    """One baseline a target reports next to its own cost (see ``compiler/baselines.py``).

    ``cost(model, hw)`` costs a model (the normalised input model, or the ``--baseline-model NAME=FILE``
    replacement) the way this baseline runs it; ``what`` describes the machine / derivation in one line
    (the report appends which model it ran); ``reference`` marks the baseline that stands for "the input model on this target" (the
    warnings compare the output against it).
    """

    name: str
    what: str
    cost: Callable[[onnx.ModelProto, HardwareConfig | None], CostReport]
    reference: bool = False


_TARGETS: Registry[Target] = Registry("target", "pimc.backends", "TARGET_MODULES")


class Target:
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    config_cls: ClassVar[type[HardwareConfig] | None] = None

    def __init_subclass__(cls, name: str = "", **kwargs: Any) -> None:
        """``class X(Target, name="x"):`` declares and registers the target ``x``."""
        super().__init_subclass__(**kwargs)
        if name:
            cls.name, cls.summary = name, docstring_summary(cls)
            _TARGETS.register(name, cls)

    def default_pipeline(self) -> list[tuple[str, dict[str, Any]]]:
        return [("fold-constants", {}), ("eliminate-identity", {}), ("fold-batchnorm", {}), ("cleanup", {})]

    def config(self, path: str | Path | None = None) -> HardwareConfig | None:
        if self.config_cls is None:
            if path is not None:
                raise PimcError(f"target '{self.name}' has no hardware parameters (--hw is not used)")
            return None
        return self.config_cls.from_file(path)

    def lower(self, model: onnx.ModelProto, hw: HardwareConfig | None) -> Any:
        return None

    def cost(self, schedule: Any, hw: HardwareConfig | None) -> CostReport | None:
        return None

    def baseline_plans(self) -> list[BaselinePlan]:
        """The baselines costed on the input model (before any lossy pimc pass); none by default."""
        return []

    def break_even(self, model: onnx.ModelProto, hw: HardwareConfig | None) -> list[dict[str, Any]] | None:
        """Per layer, the lowest weight sparsity at which the target's sparse path is no slower than its
        dense path (ADMM-NN's break-even pruning ratio), from the target's own cost model; None when the
        target has no sparse path."""
        return None

    def estimate_energy(self, records: list[LayerRecord], hw: HardwareConfig | None) -> float | None:
        """Energy (J) of these layer records on this target, for passes that weigh a rewrite against the
        layer it replaces; None when the target has no per-layer cost model."""
        return None


def declared_targets() -> dict[str, str]:
    """Target name → the module that defines it (``pimc.backends.TARGET_MODULES``)."""
    return _TARGETS.declared()


def all_targets() -> dict[str, type[Target]]:
    return _TARGETS.all()


def get_target(name: str) -> Target:
    return _TARGETS.get(name)()
