"""``pimc sweep --study break-even``: per-layer break-even ratios from the target's own cost model."""

from __future__ import annotations

import csv
from pathlib import Path

from pimc.app.inspect_model import break_even_info
from pimc.cli.main import main
from pimc.compiler.loader import load_model
from pimc.models import bundled_model_path


def test_break_even_study_writes_the_inspect_ratios(tmp_path: Path):
    model = str(bundled_model_path())
    assert main(["sweep", "--study", "break-even", model, "--target", "escalate", "-o", str(tmp_path),
                 "--no-progress"]) == 0
    with (tmp_path / "break_even.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    expected = break_even_info(load_model(model), "escalate", None)["layers"]
    assert [r["layer"] for r in rows] == [e["layer"] for e in expected]
    assert [float(r["break_even_ratio"]) for r in rows] == [e["break_even_ratio"] for e in expected]
    assert (tmp_path / "break_even.png").stat().st_size > 0


def test_break_even_study_on_a_target_without_a_sparse_path_says_so(tmp_path: Path, capsys):
    assert main(["sweep", "--study", "break-even", str(bundled_model_path()), "--target", "cim",
                 "-o", str(tmp_path)]) == 1
    assert "no sparse path" in capsys.readouterr().err
