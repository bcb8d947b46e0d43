"""What a compile is doing while it runs (a terminal line), and where its time went (``report["timings"]``).

``Progress`` writes one self-overwriting line to stderr — the pass, the layer being searched, the model
evaluations so far, the seconds elapsed — only when stderr is a terminal, only after the compile has run for
:data:`QUIET_SECONDS`, and never into a pipe or ``--json`` output. ``Timings`` times the compile's stages.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

QUIET_SECONDS = 1.5
REFRESH_SECONDS = 0.2


class Progress:
    def __init__(self, enabled: bool, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled and _is_terminal(self.stream)
        self.start = time.perf_counter()
        self.last = 0.0
        self.shown = False
        self.evaluations: Callable[[], int] = lambda: 0  # model evaluations so far (the accuracy budget's)

    def __call__(self, detail: str) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        elapsed = now - self.start
        if elapsed < QUIET_SECONDS or now - self.last < REFRESH_SECONDS:
            return
        self.last = now
        self.shown = True
        count = self.evaluations()
        evaluations = f" · {count} model evaluations" if count else ""
        self.stream.write(f"\r\x1b[K{detail}{evaluations} · {elapsed:.0f} s")
        self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Timings:
    """Seconds per compile stage, from ``with timings("stage"):`` blocks."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.stages: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stages[stage] = self.stages.get(stage, 0.0) + time.perf_counter() - start

    def summary(self, records, budget) -> dict[str, Any]:
        """The report's ``timings``: each stage, each pass, and the search's model evaluations (seconds)."""
        out: dict[str, Any] = {f"{k}_s": round(v, 3) for k, v in self.stages.items()}
        out["pass_s"] = {r.name: round(r.seconds, 3) for r in records}
        out["model_evaluations"] = budget.evaluations if budget is not None else 0
        out["model_evaluation_s"] = round(budget.seconds, 3) if budget is not None else 0.0
        out["total_s"] = round(time.perf_counter() - self.start, 3)
        return out


def timing_line(timings: dict[str, Any]) -> str:
    """One terminal line: total, then each stage over a tenth of a second."""
    stages = {k[:-2]: v for k, v in timings.items() if k.endswith("_s") and k != "total_s" and isinstance(v, float)}
    shown = ", ".join(f"{k} {v:.1f}" for k, v in stages.items() if v >= 0.1)
    evals = timings.get("model_evaluations", 0)
    search = f"; {evals} model evaluations in {timings.get('model_evaluation_s', 0):.1f} s" if evals else ""
    return f"time: {timings['total_s']:.1f} s ({shown or 'every stage under 0.1 s'}){search}"
