"""The pass abstraction: typed options, a context, a result, and the registry.

A pass is a class declared as ``class X(Pass, name="x"):`` (its docstring's first paragraph is its one-line
summary), with typed ``options`` and ``run(model, ctx) -> PassResult``. A pass that changes anything in the model (graph, annotations or
weights) must return ``changed=True``: the manager re-checks, re-infers and re-serializes only then. Passes declared ``exact=True`` are checked by ``--verify``
against ``tolerance`` (relative to the largest reference output; widened for float16 outputs by
``verify.Comparison.tolerance``) and fail with an error naming the pass.
Every pass is declared by name and module in ``pimc.passes.PASS_MODULES``; ``get_pass`` imports only the
module of the pass asked for, whose class registers itself by being declared.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import onnx

from .errors import PimcError
from .registry import Registry, docstring_summary

if TYPE_CHECKING:
    from .budget import AccuracyBudget

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Option:
    """One typed, documented pass option. ``type`` is int, float, str, bool or list (of str)."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def parse(self, value: Any, pass_name: str) -> Any:
        where = f"option {pass_name}.{self.name}"
        try:
            parsed = self._convert(value)
        except (TypeError, ValueError):
            raise PimcError(f"{where}: expected {self.type.__name__}, got {value!r}") from None
        if parsed is None:
            return None
        if self.choices is not None and parsed not in self.choices:
            raise PimcError(f"{where}: {parsed!r} is not one of {', '.join(map(str, self.choices))}")
        if self.type in (int, float):
            if self.minimum is not None and parsed < self.minimum:
                raise PimcError(f"{where}: {parsed} is below the minimum {self.minimum}")
            if self.maximum is not None and parsed > self.maximum:
                raise PimcError(f"{where}: {parsed} is above the maximum {self.maximum}")
        return parsed

    def _convert(self, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if self.default is None:
                return None
            if isinstance(value, str) and self.type is str and value == "":
                return ""
            raise ValueError("a value is required")
        if self.type is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(value)
        if self.type is list:
            if isinstance(value, (list, tuple)):
                return [str(v) for v in value]
            return [v.strip() for v in str(value).split(",") if v.strip()]
        if self.type is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if self.type is float:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value)
            if not np.isfinite(number):
                raise ValueError(value)
            return number
        return str(value)


@dataclass
class PassResult:
    model: onnx.ModelProto
    changed: bool
    stats: dict[str, Any] = field(default_factory=dict)
    annotations_only: bool = False  # only node annotations changed: no shapes, checks or statistics to redo


@dataclass
class PassContext:
    """What a pass may know beyond the model: the target, calibration inputs, a seed, the accuracy budget
    (validation data; None without labels) and the target's cost of a whole model (None for onnxruntime)."""

    target: str | None = None
    calibration: list[dict[str, np.ndarray]] | None = None
    seed: int = 0
    data_spec: str | None = None
    hw: Any = None  # the target's hardware description (HardwareConfig), for cost-aware passes
    budget: AccuracyBudget | None = None
    cost_fn: Callable[[onnx.ModelProto], tuple[float, float]] | None = None  # target (latency_s, energy_j)
    progress: Callable[[str], None] | None = None  # shows what a long pass is doing (a terminal only)
    pass_name: str = ""  # the pass running now (set by the pass manager)
    idle_note: str | None = None  # why lossy passes do nothing although labels were given (budget None)

    def report_progress(self, detail: str) -> None:
        if self.progress is not None:
            self.progress(f"{self.pass_name}: {detail}")

    def calibration_feeds(self, model: onnx.ModelProto, count: int = 8) -> list[dict[str, np.ndarray]]:
        """Calibration feeds from ``--data``, else seeded random inputs (``count`` of them)."""
        if self.calibration:
            return self.calibration
        from .sessions import random_feeds

        return random_feeds(model, count, self.seed)

    @property
    def has_real_data(self) -> bool:
        return bool(self.calibration)


_PASSES: Registry[Pass] = Registry("pass", "pimc.passes", "PASS_MODULES")


class Pass:
    """Base class of every graph pass."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()
    exact: ClassVar[bool] = False
    tolerance: ClassVar[float] = 1e-4

    def __init_subclass__(cls, name: str = "", exact: bool | None = None, **kwargs: Any) -> None:
        """``class X(Pass, name="x", exact=True):`` declares and registers the pass ``x``; the first
        paragraph of the class docstring is its one-line summary."""
        super().__init_subclass__(**kwargs)
        if exact is not None:
            cls.exact = exact
        if name:
            if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
                raise ValueError(f"bad pass name {name!r}")
            cls.name, cls.summary = name, docstring_summary(cls)
            _PASSES.register(name, cls)

    def __init__(self, **opts: Any):
        known = {o.name: o for o in self.options}
        unknown = sorted(set(opts) - set(known))
        if unknown:
            raise PimcError(
                f"pass '{self.name}' has no option '{unknown[0]}' (options: {', '.join(known) or 'none'})"
            )
        self.opts: dict[str, Any] = {o.name: o.default for o in self.options}
        for key, value in opts.items():
            self.opts[key] = known[key].parse(value, self.name)

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:  # pragma: no cover
        raise NotImplementedError

    def is_exact(self) -> bool:
        """Whether this configuration promises unchanged outputs (options may make a pass lossy)."""
        return self.exact


def batch_sizes(values: list[str], option: str) -> list[int]:
    """A list option of batch sizes (``quantize.kernel_batches``, ``channel-prune.batches``): positive integers."""
    try:
        batches = [int(str(v)) for v in values]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise PimcError(f"option {option}: expected positive integers, got {values!r}")
    return batches


def declared_passes() -> dict[str, str]:
    """Pass name → the module that defines it (``pimc.passes.PASS_MODULES``)."""
    return _PASSES.declared()


def all_passes() -> dict[str, type[Pass]]:
    return _PASSES.all()


def get_pass(name: str) -> type[Pass]:
    return _PASSES.get(name)
