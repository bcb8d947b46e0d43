"""Arithmetic that evaluates one cost equation on one hardware point or on an array of points alike.

A backend's cost equation written with these helpers instead of ``max`` / ``min`` / ``if`` takes scalar
hardware parameters (the result is what the plain Python expression gives, to the bit and the type) or
numpy arrays of hardware points, shape ``(N,)`` (elementwise: ``np.maximum``, ``np.where``...). Values
that belong to one layer's tiles or row groups (shape ``(T,)``) are put on a leading axis with
``per_tile`` so they broadcast against the points, ``(T, N)``, and reduce over ``axis=0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np


def _arrays(*values: Any) -> bool:
    return any(isinstance(v, np.ndarray) for v in values)


def vmax(a: Any, b: Any) -> Any:
    """``max(a, b)``, elementwise when either is an array."""
    return np.maximum(a, b) if _arrays(a, b) else max(a, b)


def vmin(a: Any, b: Any) -> Any:
    """``min(a, b)``, elementwise when either is an array."""
    return np.minimum(a, b) if _arrays(a, b) else min(a, b)


def select(cond: Any, if_true: Any, if_false: Any) -> Any:
    """``if_true if cond else if_false``, elementwise when any operand is an array (both sides are evaluated:
    neither may raise)."""
    if _arrays(cond, if_true, if_false):
        return np.where(cond, if_true, if_false)
    return if_true if cond else if_false


def ceil_div(a: Any, b: Any) -> Any:
    """⌈a / b⌉ by floor division (an ``int`` for scalars, exact for integer-valued floats)."""
    q = -(-a // b)
    return q if isinstance(q, np.ndarray) else int(q)


def log(x: Any) -> Any:
    return np.log(x) if isinstance(x, np.ndarray) else math.log(x)


def as_float(x: Any) -> Any:
    return x.astype(float) if isinstance(x, np.ndarray) else float(x)


def any_true(x: Any) -> bool:
    return bool(x.any()) if isinstance(x, np.ndarray) else bool(x)


def per_tile(values: np.ndarray, like: Any) -> np.ndarray:
    """``values`` (one per tile or row group) with an axis added for each axis of ``like`` (a hardware value:
    a scalar adds none), so that tile × point quantities broadcast as ``(T, N)``."""
    return values.reshape(values.shape + (1,) * np.ndim(like))


def per_value(fn: Callable[[Any], Any], x: Any) -> Any:
    """``fn(x)``; for an array of points, ``fn`` runs once on the distinct values of ``x`` (one result each) and
    the results are spread back over the points."""
    if not isinstance(x, np.ndarray):
        return fn(x)
    levels, inverse = np.unique(x, return_inverse=True)
    return fn(levels)[inverse.reshape(x.shape)]
