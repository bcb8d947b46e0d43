"""User-facing errors: each one becomes a single line on stderr and a non-zero exit."""

from __future__ import annotations


class PimcError(Exception):
    """An error caused by the user's input or options; printed as one line, no traceback."""


class PassError(PimcError):
    """A pass failed; the message names the pass."""

    def __init__(self, pass_name: str, message: str):
        super().__init__(f"pass '{pass_name}': {message}")
        self.pass_name = pass_name
