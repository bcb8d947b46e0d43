"""Progress shows on a terminal only, after a quiet start; timings sum up the stages."""

from __future__ import annotations

import io

from pimc.app import progress as progress_module
from pimc.app.progress import Progress, Timings, timing_line


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_writes_to_a_terminal_after_the_quiet_start(monkeypatch):
    stream = _Terminal()
    shown = Progress(True, stream)
    shown("decompose: layer 1/3")
    assert stream.getvalue() == ""  # within the quiet start
    monkeypatch.setattr(progress_module, "QUIET_SECONDS", 0.0)
    shown.last = -1.0
    shown("decompose: layer 2/3")
    assert "decompose: layer 2/3" in stream.getvalue() and stream.getvalue().startswith("\r")
    shown.close()
    assert stream.getvalue().endswith("\r\x1b[K")


def test_progress_never_writes_into_a_pipe_or_when_disabled(monkeypatch):
    monkeypatch.setattr(progress_module, "QUIET_SECONDS", 0.0)
    pipe = io.StringIO()
    Progress(True, pipe)("anything")
    off = _Terminal()
    Progress(False, off)("anything")
    assert pipe.getvalue() == "" and off.getvalue() == ""


def test_timings_record_each_stage_and_one_line_sums_them_up():
    clock = Timings()
    with clock("load"):
        pass
    with clock("passes"):
        pass
    summary = clock.summary([], None)
    assert {"load_s", "passes_s", "total_s", "model_evaluations"} <= set(summary)
    assert timing_line({**summary, "passes_s": 1.5, "total_s": 2.0}).startswith("time: 2.0 s (passes 1.5)")
