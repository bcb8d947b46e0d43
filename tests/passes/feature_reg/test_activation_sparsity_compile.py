"""With --data every simulator target measures the activation zeros and reports their effect."""

from __future__ import annotations

from pathlib import Path

import pytest

from pimc.compiler import annotations as ann
from pimc.compiler.compile import CompileOptions, compile_model

BUNDLED = str(Path(__file__).resolve().parents[3] / "models" / "digits_cnn.onnx")
PASSES = "fold-constants,eliminate-identity,fold-batchnorm,fuse-relu,cleanup,activation-sparsity"


@pytest.mark.parametrize("target", ["escalate", "cim", "cmp-pim"])
def test_compile_with_data_annotates_and_reports_skipping(target: str):
    model, report = compile_model(CompileOptions(input=BUNDLED, target=target, data="digits", passes=PASSES,
                                                 write_output=False))
    measured = [n for n in model.graph.node if ann.get_node_annotation(n, "input_zero_fraction") is not None]
    assert len(measured) == 4  # three convs and the classifier
    section = report["cost"]["activation_skipping"]
    assert section["measured_layers"] == section["layers"] == 4
    assert section["energy_with_j"] < section["energy_without_j"]
    assert section["cycles_with"] <= section["cycles_without"]
    for entry in report["cost"]["baselines"].values():
        if entry.get("model") == "input":
            assert entry["normalized_by"][-1] == "activation-sparsity"


def test_default_pipelines_measure_only_with_data():
    from pimc.compiler.target import get_target

    for name in ("escalate", "cim", "cmp-pim"):
        assert get_target(name).default_pipeline()[-1][0] == "activation-sparsity"
    model, report = compile_model(CompileOptions(input=BUNDLED, target="escalate", passes=PASSES,
                                                 write_output=False))
    assert all(ann.get_node_annotation(n, "input_zero_fraction") is None for n in model.graph.node)
    assert report["cost"]["activation_skipping"]["measured_layers"] == 0
