"""With --data every simulator target measures the activation zeros and reports their effect."""

from __future__ import annotations

from pathlib import Path

import pytest

from pimc.app.compile import CompileOptions, compile_model
from pimc.compiler import annotations as ann

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


def test_a_baseline_model_the_images_do_not_fit_is_costed_without_measured_zeros(tmp_path: Path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="c")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(other))
    _, report = compile_model(CompileOptions(input=BUNDLED, target="escalate", data="digits", passes=PASSES,
                                             write_output=False, baseline_models=(f"dense={other}",)))
    baselines = report["cost"]["baselines"]
    assert "activation-sparsity" not in baselines["dense"]["normalized_by"]
    assert baselines["sparse"]["normalized_by"][-1] == "activation-sparsity"  # the input model still is
