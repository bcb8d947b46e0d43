"""Baselines on the input model (compiler/baselines.py), --baseline-model, throughput on input MACs."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pimc.app.compile import CompileOptions, compile_model
from pimc.cli.main import cli, main
from pimc.compiler.errors import PimcError
from pimc.models import bundled_model_path

BUNDLED = str(bundled_model_path())


def compile_(path: str, target: str, **kwargs) -> dict:
    return compile_model(CompileOptions(input=path, target=target, write_output=False, **kwargs))[1]


def test_escalate_dense_baseline_is_the_uncompressed_compile_of_the_input():
    default = compile_(BUNDLED, "escalate")["cost"]
    plain = compile_(BUNDLED, "escalate", passes="fold-constants,cleanup")["cost"]
    assert plain["decomposed_layers"] == 0
    dense = default["baselines"]["dense"]
    assert dense["model"] == "input" and dense["reference"] and dense["what"]
    assert dense["latency_s"] == pytest.approx(plain["latency_s"])
    assert dense["energy_j"] == pytest.approx(plain["energy_j"])
    assert set(default["baselines"]) == {"dense", "sparse", "dense_same_shape", "sparse_same_shape"}
    assert default["baselines"]["dense_same_shape"]["model"] == "output"


def test_baseline_model_option_changes_the_baseline(tmp_path: Path):
    wider = tmp_path / "wider.onnx"
    compile_model(CompileOptions(input=BUNDLED, target="escalate", output=str(wider),
                                 passes="fold-constants,decompose,cleanup", sets=("decompose.rank=9",)))
    base = compile_(BUNDLED, "escalate", passes="cleanup")["cost"]
    other = compile_(BUNDLED, "escalate", passes="cleanup", baseline_models=(f"dense={wider}",))["cost"]
    assert other["baselines"]["dense"]["model"] == str(wider)
    assert other["baselines"]["dense"]["latency_s"] != pytest.approx(base["baselines"]["dense"]["latency_s"])
    assert other["baselines"]["sparse"] == base["baselines"]["sparse"]
    assert other["latency_s"] == base["latency_s"]


def test_unknown_baseline_name_is_a_one_line_error_listing_the_names(tmp_path: Path, capsys):
    with pytest.raises(PimcError, match=r"has no baseline 'cnn' \(baselines: dense, sparse\)"):
        compile_(BUNDLED, "escalate", baseline_models=(f"cnn={BUNDLED}",))
    code = main(["compile", BUNDLED, "-t", "cim", "--baseline-model", f"dense={BUNDLED}", "-o",
                 str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "has no baseline 'dense' (baselines: input, digital)" in err


def test_cli_baseline_model_reaches_the_report(tmp_path: Path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["compile", BUNDLED, "-t", "cmp-pim", "--baseline-model", f"cnn={BUNDLED}",
                                      "-o", str(tmp_path / "x.onnx"), "--report", str(out)])
    assert result.exit_code == 0, result.output
    assert "vs cnn" in result.output and '"model": "' + BUNDLED in out.read_text()


def test_cim_reports_its_digital_baseline():
    cost = compile_(BUNDLED, "cim", data="digits")["cost"]
    digital = cost["baselines"]["digital"]
    assert digital["model"] == "input" and "equal peak throughput" in digital["what"]
    assert cost["baselines"]["input"]["reference"]
    summary = cost["digital_baseline"]
    assert summary["peak_gops"] == pytest.approx(51.2) and summary["equal"] == "peak throughput"
    assert summary["pj_per_mac"] == pytest.approx(1.783 * (0.3 + 8 * 10 * (1 / 8) ** 0.5 / 64), rel=1e-3)
    assert 1 < summary["peak_tops_per_w"] < cost["peak_tops_per_w"]
    assert digital["latency_s"] == pytest.approx(cost["baselines"]["input"]["latency_s"])
    assert cost["energy_gain_vs"]["digital"] > 1 and cost["energy_gain_vs"]["input"] >= 1


@pytest.mark.parametrize("target", ["escalate", "cim", "cmp-pim"])
def test_throughput_counts_the_input_models_dense_macs(target: str):
    report = compile_(BUNDLED, target)
    cost, macs = report["cost"], report["model"]["macs_before"]
    assert cost["throughput_gops"] == pytest.approx(2 * macs / cost["latency_s"] / 1e9)
    assert cost["tops_per_w"] == pytest.approx(2 * macs / cost["energy_j"] / 1e12)
    assert cost["executed_gops"] > 0 and cost["executed_note"] and "input model" in cost["throughput_note"]


def test_penni_model_beats_the_original_dense_model_named_as_baseline(tmp_path: Path):
    """A decomposed + pruned model (the decompose pass standing in for the PENNI exporter) compiled for
    escalate with --baseline-model dense=<original> is faster than the original on the dense accelerator."""
    penni = tmp_path / "penni.onnx"
    compile_model(CompileOptions(input=BUNDLED, target="escalate", output=str(penni),
                                 passes="fold-constants,decompose,shrink,cleanup", sets=("decompose.prune=1.0",)))
    report = compile_(str(penni), "escalate", passes="cleanup", baseline_models=(f"dense={BUNDLED}",))
    cost = report["cost"]
    assert cost["decomposed_layers"] > 0 and cost["baselines"]["dense"]["model"] == BUNDLED
    assert cost["speedup_vs"]["dense"] > 1 and cost["energy_gain_vs"]["dense"] > 1
    assert not any("slower" in w for w in report["warnings"])
