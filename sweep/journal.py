"""The results journal (``DIR/journal.jsonl``): one JSON row per finished trial, appended as trials finish,
so ``--resume`` skips every trial whose key is already there (a ``crashed`` row is run again)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..compiler.errors import PimcError
from .trial import STATUS_CRASHED

JOURNAL = "journal.jsonl"


class Journal:
    def __init__(self, folder: Path, resume: bool):
        self.path = folder / JOURNAL
        self.rows: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            if not resume:
                raise PimcError(f"{folder}: holds a sweep journal; give --resume to continue it, or another -o DIR")
            self._load()

    def _load(self) -> None:
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption
            if row.get("status") != STATUS_CRASHED:
                self.rows[row["key"]] = row

    @property
    def done(self) -> set[str]:
        return set(self.rows)

    def append(self, row: dict[str, Any]) -> None:
        self.extend([row])

    def extend(self, rows: list[dict[str, Any]]) -> None:
        """Journal finished rows (one write for all of them)."""
        for row in rows:
            if row.get("status") != STATUS_CRASHED or row["key"] not in self.rows:
                self.rows[row["key"]] = row
        with self.path.open("a") as f:
            f.write("".join(_line(row) for row in rows))

    def close(self) -> None:
        """Nothing stays open (each append opens the file); kept for symmetry with callers."""


_ENCODER = json.JSONEncoder(allow_nan=False, default=str)


def _line(row: dict[str, Any]) -> str:
    """The row as one JSON line, a non-finite number as null."""
    try:
        return _ENCODER.encode(row) + "\n"
    except ValueError:  # NaN or infinity
        return _ENCODER.encode(_clean(row)) + "\n"


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
