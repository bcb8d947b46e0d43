"""A training-aware compression method, declared once by its algorithm (in the algorithm's ``config.py``):
its name, the dataclasses whose fields are its options, and the function that runs it on a trained model.

``pimc.compress(method=...)`` and ``pimc export <method>`` both read the declaration: the library call
builds the configs from keyword arguments, the CLI generates its options from the same fields
(``cli/export/options.py``). The declaration is torch-free; ``run`` names the function as
``module:function`` and is imported only when the method runs.

``run(model, loader, shape, output, *configs, seed, progress)`` compresses the torch ``model`` on
``loader`` (a trained model: nothing pre-trains here), writes the annotated ONNX to ``output`` and returns
the compressed module."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from .errors import PimcError
from .settings import SHARED, make


@dataclass(frozen=True)
class Method:
    name: str
    configs: tuple[type, ...]
    run: str  # "package.module:function"

    def option_names(self) -> list[str]:
        """Every keyword ``compress(method=...)`` accepts."""
        return sorted({f.name for config in self.configs for f in fields(config)} | set(SHARED))

    def build(self, options: dict[str, Any]) -> list[Any]:
        """One checked instance per config, each taking the options named like its fields."""
        unknown = sorted(set(options) - set(self.option_names()))
        if unknown:
            raise PimcError(f"compress(method={self.name!r}): unknown option {', '.join(unknown)} "
                            f"(valid: {', '.join(self.option_names())})")
        return [make(config, options) for config in self.configs]

    def runner(self) -> Callable[..., Any]:
        module, function = self.run.split(":")
        return getattr(importlib.import_module(module), function)


def get_method(name: str) -> Method:
    """The declaration of ``name`` from ``pimc.passes.METHODS`` (read by name, as the pass registry is)."""
    METHODS = importlib.import_module("pimc.passes").METHODS  # noqa: N806
    if name not in METHODS:
        raise PimcError(f"unknown method {name!r} (use {', '.join(METHODS)})")
    method = importlib.import_module(METHODS[name]).METHOD
    if method.name != name:
        raise PimcError(f"{METHODS[name]} declares method {method.name!r}, not {name!r}")
    return method
