"""Declared registries: a package declares ``{name: module}`` once, and a class is imported only when asked for.

Passes (``pimc.passes.PASS_MODULES``) and targets (``pimc.backends.TARGET_MODULES``) use one each; the
class in the declared module registers itself under its name."""

from __future__ import annotations

import importlib
import inspect
from typing import Generic, TypeVar

from .errors import PimcError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str, attribute: str):
        self.kind, self.package, self.attribute = kind, package, attribute
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str, cls: type[T]) -> type[T]:
        if self._classes.get(name, cls) is not cls:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._classes[name] = cls
        return cls

    def declared(self) -> dict[str, str]:
        """Name → the module that defines it."""
        return getattr(importlib.import_module(self.package), self.attribute)

    def get(self, name: str) -> type[T]:
        declared = self.declared()
        if name not in declared:
            raise PimcError(f"unknown {self.kind} '{name}' (known: {', '.join(sorted(declared))})")
        if name not in self._classes:
            importlib.import_module(declared[name])
        if name not in self._classes:
            raise PimcError(f"{self.kind} '{name}': {declared[name]} does not register it")
        return self._classes[name]

    def all(self) -> dict[str, type[T]]:
        return {name: self.get(name) for name in sorted(self.declared())}


def docstring_summary(cls: type) -> str:
    """The first paragraph of a class's docstring on one line, without its closing full stop."""
    text = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    return " ".join(text.split("\n\n")[0].split()).removesuffix(".")
