"""``pimc diff``: two real escalate reports of the bundled model, side by side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pimc.app.diff import diff_reports, load_report, ratio
from pimc.cli.main import main
from pimc.compiler.errors import PimcError
from pimc.models import bundled_model_path

FOLD_ONLY = "fold-constants,eliminate-identity,fold-batchnorm,cleanup"


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The default escalate pipeline (A) and a fold-only pipeline (B) on the bundled model."""
    folder = tmp_path_factory.mktemp("diff")
    model = str(bundled_model_path())
    paths = folder / "a.json", folder / "b.json"
    for path, extra in zip(paths, ([], ["--passes", FOLD_ONLY]), strict=True):
        code = main(["compile", model, "--target", "escalate", "-o", str(path.with_suffix(".onnx")),
                     "--report", str(path), "--json", *extra])
        assert code == 0
    return paths


def _diff(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["diff", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_totals_and_layers_match_the_reports(reports, capsys) -> None:
    code, out, _ = _diff([str(reports[0]), str(reports[1]), "--json"], capsys)
    assert code == 0
    diff = json.loads(out)
    a, b = (json.loads(p.read_text()) for p in reports)
    totals = {row["metric"]: row for row in diff["totals"]}
    assert totals["params"]["a"] == a["model"]["params"] and totals["params"]["b"] == b["model"]["params"]
    latency = totals["latency (s)"]
    assert latency["ratio"] == pytest.approx(b["cost"]["latency_s"] / a["cost"]["latency_s"])
    for name in a["cost"]["baselines"]:
        assert f"speed-up vs {name}" in totals and f"{name}: energy (J)" in totals
    assert totals["throughput (inferences/s)"]["a"] == pytest.approx(1 / a["cost"]["latency_s"])
    names = [layer["name"] for layer in a["cost"]["layers"]]
    assert [row["name"] for row in diff["layers"]] == names
    assert all(row["in"] == "both" for row in diff["layers"])
    assert diff["a"]["passes"][-1] == "activation-sparsity" and "decompose" in diff["a"]["passes"]
    assert "decompose" not in diff["b"]["passes"]


def test_table_shows_every_layer_and_ratio_in_full(reports, capsys) -> None:
    code, out, _ = _diff([str(reports[0]), str(reports[1])], capsys)
    assert code == 0
    diff = diff_reports(load_report(reports[0]), load_report(reports[1]))
    for row in diff["layers"]:
        assert row["name"] in out
    cycles = diff["layers"][0]["cycles"]["ratio"]
    assert f"{cycles:#.4g}×" in out and "…" not in out


def test_layers_only_in_one_report_and_accuracy(reports, tmp_path: Path, capsys) -> None:
    b = json.loads(reports[1].read_text())
    long_name = "/a/very/long/layer/name/" * 8 + "Conv"
    b["cost"]["layers"][0]["name"] = long_name
    b["accuracy"] = {"input": 0.99, "output": 0.97, "drop_points": 2.0, "samples": 450, "data": "digits"}
    b["warnings"] = ["accuracy budget exceeded"]
    edited = tmp_path / "b.json"
    edited.write_text(json.dumps(b))
    code, out, _ = _diff([str(reports[0]), str(edited), "--json"], capsys)
    diff = json.loads(out)
    where = {row["name"]: row["in"] for row in diff["layers"]}
    first = load_report(reports[0])["cost"]["layers"][0]["name"]
    assert where[first] == "a" and where[long_name] == "b"
    assert {r["metric"]: r["b"] for r in diff["totals"]}["accuracy after"] == 0.97
    assert "B warning: accuracy budget exceeded" in diff["notes"]
    code, out, _ = _diff([str(reports[0]), str(edited)], capsys)
    assert code == 0 and long_name in out and "only in A" in out and "only in B" in out


def test_console_script_prints_wide_tables_when_piped(reports) -> None:
    result = subprocess.run([sys.executable, "-m", "pimc.cli.main", "diff", str(reports[0]), str(reports[1])],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) > 80 and "…" not in result.stdout


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file"),
    ("{not json", "not a JSON file"),
    ('{"model": {}}', "not a pimc compile report"),
    ("[1, 2]", "not a pimc compile report"),
])
def test_bad_input_is_one_line(reports, tmp_path: Path, capsys, content: str | None, message: str) -> None:
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    code, out, err = _diff([str(reports[0]), str(path)], capsys)
    assert code == 1 and not out and message in err and len(err.strip().splitlines()) == 1


def test_ratio_edge_cases() -> None:
    assert ratio(2, 1) == 0.5 and ratio(0, 1) is None and ratio(None, 1) is None and ratio(1, "x") is None
    with pytest.raises(PimcError, match="no such file"):
        load_report("/no/such/report.json")


def _scaled(report: Path, folder: Path, name: str, latency: float = 1.0, energy: float = 1.0,
            accuracy: float | None = None) -> Path:
    """A copy of a report whose latency (total and per layer) and energy are scaled."""
    data = json.loads(report.read_text())
    data["cost"]["latency_s"] *= latency
    data["cost"]["energy_j"] *= energy
    for layer in data["cost"]["layers"]:
        layer["cycles"] *= latency
        layer["energy_j"] *= energy
    if accuracy is not None:
        data["accuracy"] = {"output": accuracy}
    path = folder / name
    path.write_text(json.dumps(data))
    return path


def _pimc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pimc", *args], capture_output=True, text=True)


def test_gate_fails_a_ten_percent_slowdown_and_passes_two_percent(reports, tmp_path):
    slower = _scaled(reports[0], tmp_path, "slow.json", latency=1.10)
    slightly = _scaled(reports[0], tmp_path, "slight.json", latency=1.02)
    failed = _pimc("diff", str(reports[0]), str(slower), "--max-slowdown", "5%")
    assert failed.returncode == 1 and "gate: latency" in failed.stdout and "+10.00 % > +5 %" in failed.stdout
    assert failed.stderr == ""
    passed = _pimc("diff", str(reports[0]), str(slightly), "--max-slowdown", "5%")
    assert passed.returncode == 0 and "gate: passed" in passed.stdout


def test_gate_verdict_in_json_names_every_crossed_figure(reports, tmp_path, capsys):
    worse = _scaled(reports[0], tmp_path, "worse.json", latency=1.2, energy=1.3)
    code, out, _ = _diff([str(reports[0]), str(worse), "--json", "--max-slowdown", "5", "--max-energy-increase",
                          "5%", "--per-layer"], capsys)
    gate = json.loads(out)["gate"]
    assert code == 1 and not gate["passed"]
    metrics = {(f["metric"], f.get("layer")) for f in gate["failures"]}
    assert ("latency", None) in metrics and ("energy (J)", None) in metrics
    assert any(layer is not None for _, layer in metrics)  # per layer too
    assert gate["thresholds"]["max_slowdown_pct"] == 5.0


def test_gate_on_accuracy_needs_it_in_both_reports(reports, tmp_path, capsys):
    a = _scaled(reports[0], tmp_path, "a.json", accuracy=0.99)
    b = _scaled(reports[0], tmp_path, "b.json", accuracy=0.98)
    assert _diff([str(a), str(b), "--max-accuracy-drop", "0.5"], capsys)[0] == 1
    assert _diff([str(a), str(b), "--max-accuracy-drop", "1.5"], capsys)[0] == 0
    code, out, _ = _diff([str(reports[0]), str(b), "--max-accuracy-drop", "1"], capsys)
    assert code == 1 and "not in both reports" in out


def test_gate_threshold_must_be_a_percentage(reports, capsys):
    code, _, err = _diff([str(reports[0]), str(reports[1]), "--max-slowdown", "fast"], capsys)
    assert code == 1 and err.count("\n") == 1 and "--max-slowdown" in err
