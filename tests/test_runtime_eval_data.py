"""``--eval-data`` for run and bench, and npz test parts in run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pimc.cli.main import main
from pimc.models import bundled_model_path


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _labelled_npz(path: Path, count: int) -> str:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.standard_normal((count, 1, 8, 8)).astype(np.float32), y=np.arange(count) % 10)
    return f"npz:{path}"


def test_run_eval_data_npz_uses_the_whole_file(tmp_path: Path, capsys) -> None:
    spec = _labelled_npz(tmp_path / "e.npz", 50)
    model = str(bundled_model_path())
    code, out, _ = _run(["run", model, "--eval-data", spec, "--repeats", "1", "--json"], capsys)
    assert code == 0 and json.loads(out)["samples"] == 50 and json.loads(out)["data"] == spec
    code, out, _ = _run(["run", model, "--data", spec, "--repeats", "1", "--json"], capsys)
    assert code == 0 and json.loads(out)["samples"] == 10


def test_run_eval_data_digits_equals_data_digits(capsys) -> None:
    model = str(bundled_model_path())
    _, a, _ = _run(["run", model, "--eval-data", "digits", "--repeats", "1", "--json"], capsys)
    _, b, _ = _run(["run", model, "--repeats", "1", "--json"], capsys)
    assert json.loads(a)["accuracy"] == json.loads(b)["accuracy"] and json.loads(a)["samples"] == 450


def test_bench_eval_data_with_limit(tmp_path: Path, capsys) -> None:
    spec = _labelled_npz(tmp_path / "e.npz", 50)
    model = str(bundled_model_path())
    code, out, _ = _run(["bench", model, model, "--eval-data", spec, "--limit", "20", "--batches", "1",
                         "--repeats", "1", "--json"], capsys)
    rows = json.loads(out)
    assert code == 0 and rows[1]["top1_agreement"] == 1.0


@pytest.mark.parametrize(("extra", "message"), [
    (["--data", "digits", "--eval-data", "digits"], "not both"),
    (["--eval-data", "random"], "needs labels"),
])
def test_run_eval_data_errors(extra: list[str], message: str, capsys) -> None:
    code, _, err = _run(["run", str(bundled_model_path()), *extra, "--repeats", "1"], capsys)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1


def test_run_eval_data_unlabelled_npz_is_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "u.npz"
    np.savez(path, x=np.zeros((4, 1, 8, 8), np.float32))
    code, _, err = _run(["run", str(bundled_model_path()), "--eval-data", f"npz:{path}"], capsys)
    assert code == 1 and "no 'y' labels" in err and len(err.strip().splitlines()) == 1
