"""The sweep SPEC (TOML): which models, targets, search and axes; validated into a ``SweepSpec``.

Axes are ``PASS.OPTION = [values]`` (given to the compile as ``--set PASS.OPTION=value``) or
``hw.TARGET.PARAM = [values]`` (a hardware override of one target; other targets ignore it). Every
mistake in the file is one ``PimcError`` line.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from ..compiler.errors import PimcError

KEYS = ("model", "targets", "data", "eval_data", "search", "trials", "objectives", "max_accuracy_drop", "axes",
        "input_shape", "passes")
SEARCHES = ("grid", "random", "optuna")
#: Objectives that improve upwards; every other numeric result column is minimised.
MAXIMIZE_PREFIXES = ("accuracy", "speedup_vs.", "energy_gain_vs.")
OBJECTIVES = ("energy_j", "latency_s", "accuracy", "params", "macs", "effective_macs", "drop_points")


@dataclass(frozen=True)
class Axis:
    name: str  # as in the spec: "decompose.rank" or "hw.escalate.basis_rows"
    values: tuple[Any, ...]

    @property
    def is_hw(self) -> bool:
        return self.name.startswith("hw.")

    @property
    def hw_target(self) -> str | None:
        return self.name.split(".")[1] if self.is_hw else None

    @property
    def hw_param(self) -> str | None:
        return self.name.split(".", 2)[2] if self.is_hw else None

    def applies_to(self, target: str) -> bool:
        return not self.is_hw or self.hw_target == target


@dataclass
class SweepSpec:
    models: list[str]
    targets: list[str]
    data: str | None = None
    eval_data: str | None = None
    search: str = "grid"
    trials: int = 50
    objectives: list[str] = field(default_factory=lambda: ["energy_j", "latency_s"])
    max_accuracy_drop: float | None = None
    axes: list[Axis] = field(default_factory=list)
    source: str = "spec"
    input_shapes: list[str] = field(default_factory=list)  # NAME=1xCxHxW, as compile's --input-shape
    passes: str | None = None  # a pipeline for every target instead of its default, as compile's --passes

    @property
    def axis_names(self) -> list[str]:
        return [a.name for a in self.axes]

    def axes_for(self, target: str) -> list[Axis]:
        return [a for a in self.axes if a.applies_to(target)]

    @property
    def cost_only(self) -> bool:
        """Only hardware varies: one compile per model and target serves every hardware point."""
        return all(a.is_hw for a in self.axes)


def direction(objective: str) -> str:
    return "max" if objective.startswith(MAXIMIZE_PREFIXES) else "min"


def load_spec(path: str | Path) -> SweepSpec:
    p = Path(path)
    if not p.is_file():
        raise PimcError(f"{p}: no such sweep spec file")
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PimcError(f"{p}: not a valid TOML sweep spec ({str(exc).splitlines()[0]})") from None
    return parse_spec(data, str(p), p.parent)


def parse_spec(data: dict[str, Any], source: str = "spec", base: Path | None = None) -> SweepSpec:
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise PimcError(f"{source}: unknown key '{unknown[0]}' (known: {', '.join(KEYS)})")
    spec = SweepSpec(
        models=_models(data.get("model"), source, base), targets=_targets(data.get("targets"), source),
        data=_opt_str(data, "data", source), eval_data=_opt_str(data, "eval_data", source),
        search=_search(data.get("search", "grid"), source), trials=_trials(data.get("trials", 50), source),
        max_accuracy_drop=_max_drop(data.get("max_accuracy_drop"), source), source=source,
        input_shapes=_input_shapes(data.get("input_shape", []), source),
        passes=_opt_str(data, "passes", source),
    )
    spec.objectives = _objectives(data.get("objectives", ["energy_j", "latency_s"]), spec, source)
    spec.axes = _axes(data.get("axes", {}), spec, source)
    if spec.eval_data and not spec.data:
        raise PimcError(f"{source}: 'eval_data' needs 'data' for calibration")
    return spec


def _input_shapes(value: Any, source: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and "=" in i for i in items):
        raise PimcError(f"{source}: 'input_shape' must be NAME=1xCxHxW or a list of them (as --input-shape)")
    return items


def _models(value: Any, source: str, base: Path | None) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(m, str) and m for m in items):
        raise PimcError(f"{source}: 'model' must be a path or a list of paths")
    out = []
    for m in items:
        path = Path(m)
        if not path.is_absolute() and not path.exists() and base is not None and (base / path).exists():
            path = base / path
        if not path.is_file():
            raise PimcError(f"{source}: model {m}: no such file")
        out.append(str(path.resolve()))
    if len(set(out)) != len(out):
        raise PimcError(f"{source}: 'model' lists a path twice")
    return out


def _targets(value: Any, source: str) -> list[str]:
    from ..compiler.target import all_targets

    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(t, str) for t in items):
        raise PimcError(f"{source}: 'targets' must be a list of target names")
    known = all_targets()
    for t in items:
        if t not in known:
            raise PimcError(f"{source}: unknown target '{t}' (known: {', '.join(known)})")
    if len(set(items)) != len(items):
        raise PimcError(f"{source}: 'targets' lists a target twice")
    return list(items)


def _opt_str(data: dict[str, Any], key: str, source: str) -> str | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise PimcError(f"{source}: '{key}' must be a data spec string (e.g. \"digits\")")
    return value


def _search(value: Any, source: str) -> str:
    if value not in SEARCHES:
        raise PimcError(f"{source}: 'search' must be one of {', '.join(SEARCHES)} (got {value!r})")
    return value


def _trials(value: Any, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PimcError(f"{source}: 'trials' must be a positive integer (got {value!r})")
    return value


def _max_drop(value: Any, source: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise PimcError(f"{source}: 'max_accuracy_drop' must be a non-negative number (got {value!r})")
    return float(value)


def _objectives(value: Any, spec: SweepSpec, source: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(o, str) for o in items):
        raise PimcError(f"{source}: 'objectives' must be a list of result columns")
    for o in items:
        if o not in OBJECTIVES and not o.startswith(("speedup_vs.", "energy_gain_vs.")):
            raise PimcError(f"{source}: unknown objective '{o}' (known: {', '.join(OBJECTIVES)}, "
                            "speedup_vs.BASELINE, energy_gain_vs.BASELINE)")
    if any(o in ("accuracy", "drop_points") for o in items) and not spec.data:
        raise PimcError(f"{source}: objective 'accuracy' needs labelled 'data' (accuracy is not measured without it)")
    return list(dict.fromkeys(items))


def _axes(value: Any, spec: SweepSpec, source: str) -> list[Axis]:
    if not isinstance(value, dict):
        raise PimcError(f"{source}: [axes] must be a table of NAME = [values]")
    axes = []
    for name, values in value.items():
        if isinstance(values, dict):
            raise PimcError(f"{source}: axis '{name}' must be quoted (\"{name}.…\" = [values]) and a list")
        if not isinstance(values, list) or not values:
            raise PimcError(f"{source}: axis '{name}' must be a non-empty list of values")
        if len({repr(v) for v in values}) != len(values):
            raise PimcError(f"{source}: axis '{name}' lists a value twice")
        axis = Axis(name, tuple(values))
        _check_axis(axis, spec, source)
        axes.append(axis)
    return axes


def _check_axis(axis: Axis, spec: SweepSpec, source: str) -> None:
    from ..compiler.passbase import all_passes
    from ..compiler.target import get_target

    parts = axis.name.split(".")
    if axis.is_hw:
        if len(parts) != 3 or not all(parts):
            raise PimcError(f"{source}: axis '{axis.name}': expected hw.TARGET.PARAM")
        if axis.hw_target not in spec.targets:
            raise PimcError(f"{source}: axis '{axis.name}': target '{axis.hw_target}' is not in 'targets'")
        target = get_target(axis.hw_target)
        if target.config_cls is None:
            raise PimcError(f"{source}: axis '{axis.name}': target '{axis.hw_target}' has no hardware parameters")
        for v in axis.values:  # every value must be a valid hardware point
            target.config_cls.from_dict({axis.hw_param: v}, f"{source}: axis '{axis.name}'")
        return
    if len(parts) != 2 or not all(parts):
        raise PimcError(f"{source}: axis '{axis.name}': expected PASS.OPTION or hw.TARGET.PARAM")
    passes = all_passes()
    if parts[0] not in passes:
        raise PimcError(f"{source}: axis '{axis.name}': unknown pass '{parts[0]}' (known: {', '.join(passes)})")
    options = [o.name for o in passes[parts[0]].options]
    if parts[1] not in options:
        raise PimcError(f"{source}: axis '{axis.name}': pass '{parts[0]}' has no option '{parts[1]}' "
                        f"(options: {', '.join(options) or 'none'})")
    for v in axis.values:
        if not isinstance(v, (str, int, float, bool)):
            raise PimcError(f"{source}: axis '{axis.name}': values must be strings, numbers or booleans")


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every (model, target, axis values) of the full grid, in a fixed order; hardware axes of another
    target are left out of a point (no duplicate trials)."""
    points = []
    for model in spec.models:
        for target in spec.targets:
            axes = spec.axes_for(target)
            for values in itertools.product(*(a.values for a in axes)):
                points.append({"model": model, "target": target,
                               "axes": {a.name: v for a, v in zip(axes, values, strict=True)}})
    return points
