"""prune pass: magnitude / global / N:M masks, refit from calibration data, annotations, the layer-wise
search under the budget, and every target's sparse path seeing Conv, Gemm and MatMul zeros."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pimc.app.compile import CompileOptions, compile_model
from pimc.compiler.annotations import get_node_annotation
from pimc.compiler.graph import get_initializer
from pimc.compiler.loader import normalize
from pimc.compiler.passbase import PassContext, get_pass
from pimc.compiler.sessions import random_feeds
from pimc.compiler.verify import run_model
from pimc.compiler.workload import extract_workload
from pimc.models import bundled_model_path
from pimc.passes.prune.masks import global_sparsities, nm_mask, topk_mask

RNG = np.random.default_rng(0)


def _model(matmul: bool = False) -> onnx.ModelProto:
    """Conv(3→8, 3×3, pad 1) → Relu → Flatten(8·4·4) → Gemm(→16) → Relu → Gemm or MatMul (→10)."""
    head = (helper.make_node("MatMul", ["h2", "W3"], ["y"], name="fc2") if matmul else
            helper.make_node("Gemm", ["h2", "W3", "B3"], ["y"], name="fc2"))
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["a"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "W2", "B2"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["h2"]), head]
    inits = {"W1": RNG.standard_normal((8, 3, 3, 3)), "B1": RNG.standard_normal(8),
             "W2": RNG.standard_normal((16, 128)) * 0.1, "B2": RNG.standard_normal(16),
             "W3": RNG.standard_normal((16, 10)), "B3": RNG.standard_normal(10)}
    if matmul:
        inits.pop("B3")
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return normalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _weight(model: onnx.ModelProto, name: str) -> np.ndarray:
    node = next(n for n in model.graph.node if n.name == name)
    return get_initializer(model.graph, node.input[1])


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _sparsity(w: np.ndarray) -> float:
    return 1 - np.count_nonzero(w) / w.size


def test_masks_keep_the_largest_weights():
    w = np.array([[0.1, -3.0, 0.2, 2.0], [1.0, 0.0, -0.5, 0.3]])
    np.testing.assert_array_equal(topk_mask(w, 0.5), [[False, True, False, True], [True, False, True, False]])
    np.testing.assert_array_equal(nm_mask(w, 1, 2), [[False, True, False, True], [True, False, True, False]])
    per_layer = global_sparsities({"a": np.ones(10), "b": np.full(10, 0.1)}, 0.5)
    assert per_layer == {"a": 0.0, "b": 1.0}


@pytest.mark.parametrize("matmul", [False, True])
def test_forced_sparsity_reaches_conv_and_fc_layers_and_targets_see_the_zeros(matmul):
    model = _model(matmul)
    feeds = random_feeds(model, 4, 0)
    result = get_pass("prune")(sparsity=0.8).run(model, PassContext(calibration=feeds))
    out = result.model
    for name in ("conv", "fc1", "fc2"):
        assert _sparsity(_weight(out, name)) == pytest.approx(0.8, abs=0.02)
        assert get_node_annotation(_node(out, name), "sparsity") == pytest.approx(0.8, abs=0.02)
        assert get_node_annotation(_node(out, name), "prune") == "magnitude"
    assert [x["layer"] for x in result.stats["pruned"]] == ["conv", "fc1", "fc2"]
    assert all(x["refitted"] for x in result.stats["pruned"])
    records = {r.name: r for r in extract_workload(out).layers}
    for name in ("conv", "fc1", "fc2"):
        assert records[name].nonzero < records[name].params
        assert records[name].effective_macs < records[name].macs


def test_refit_beats_plain_magnitude_pruning_on_the_calibration_data():
    model = _model()
    feeds = random_feeds(model, 16, 1)
    ref = run_model(model, feeds)
    errors = {}
    for refit in (True, False):
        out = get_pass("prune")(sparsity=0.7, refit=refit).run(_model_copy(model), PassContext(calibration=feeds)).model
        got = run_model(out, feeds)
        errors[refit] = sum(float(np.sum((g[0] - r[0]) ** 2)) for g, r in zip(got, ref, strict=True))
    assert errors[True] < errors[False]


def _model_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.ModelProto.FromString(model.SerializeToString())


def test_global_scope_uses_one_threshold_and_nm_keeps_n_of_m():
    model = _model()
    out = get_pass("prune")(sparsity=0.75, scope="global", refit=False).run(_model_copy(model), PassContext()).model
    weights = [_weight(out, n) for n in ("conv", "fc1", "fc2")]
    total = sum(np.count_nonzero(w) for w in weights) / sum(w.size for w in weights)
    assert total == pytest.approx(0.25, abs=0.01)
    assert _sparsity(weights[0]) < _sparsity(weights[1])  # fc1's weights are 10× smaller
    out = get_pass("prune")(nm="2:4", refit=False).run(_model_copy(model), PassContext()).model
    rows = _weight(out, "fc1")  # transB: (16, 128)
    assert (np.count_nonzero(rows.reshape(16, 32, 4), axis=2) <= 2).all()
    assert get_node_annotation(_node(out, "fc1"), "nm") == "2:4"


def test_include_exclude_select_nodes():
    out = get_pass("prune")(sparsity=0.5, exclude=["fc*"]).run(_model(), PassContext())
    assert _sparsity(_weight(out.model, "conv")) == pytest.approx(0.5, abs=0.02)
    assert _sparsity(_weight(out.model, "fc1")) == 0
    assert {s["node"] for s in out.stats["skipped"]} == {"fc1", "fc2"}


def test_bad_options_fail_cleanly():
    from pimc.compiler.errors import PimcError

    with pytest.raises(PimcError, match="not both"):
        get_pass("prune")(sparsity=0.5, nm="2:4")
    with pytest.raises(PimcError, match="needs a sparsity"):
        get_pass("prune")(scope="global")
    with pytest.raises(PimcError, match="N:M"):
        get_pass("prune")(nm="5:4")


def test_searched_sparsity_stays_within_the_budget(tmp_path: Path):
    # the validation split (from the training images) is more forgiving than the test split on digits, so a
    # 1-point budget is exceeded on test; 3 points leave room for the gap
    _, report = compile_model(CompileOptions(input=str(bundled_model_path()), target="onnxruntime", data="digits",
                                             passes="prune", output=str(tmp_path / "o.onnx"), max_accuracy_drop=3.0))
    stats = next(p for p in report["passes"] if p["name"] == "prune")["stats"]
    assert stats["pruned"], "the budget should allow some pruning of the bundled model"
    assert all("damage" in x for x in stats["pruned"])
    assert report["accuracy"]["drop_points"] <= 3.0 + 1e-9
    assert report["model"]["nonzero_params"] < report["model"]["params"]


def test_escalate_sparse_baseline_runs_a_pruned_model(tmp_path: Path):
    pruned = tmp_path / "p.onnx"
    compile_model(CompileOptions(input=str(bundled_model_path()), target="onnxruntime", passes="prune",
                                 sets=("prune.sparsity=0.8",), output=str(pruned)))
    _, report = compile_model(CompileOptions(input=str(bundled_model_path()), target="escalate",
                                             output=str(tmp_path / "e.onnx"), passes="fold-constants",
                                             baseline_models=(f"sparse={pruned}",)))
    base = report["cost"]["baselines"]
    assert base["sparse"]["latency_s"] < base["dense"]["latency_s"]
