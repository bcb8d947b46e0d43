"""comparator-conv: anchors, the ridge fit against onnxruntime on the original model, annotations, skips."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pimc.compiler import annotations as ann
from pimc.compiler.errors import PimcError
from pimc.compiler.loader import infer_shapes
from pimc.compiler.passbase import PassContext, get_pass
from pimc.compiler.verify import run_model
from pimc.passes.comparator.comparator_conv import ternary_anchors


def conv_model(
    cin: int = 3, cout: int = 5, k: int = 3, hw: int = 9, stride: int = 1, pads=(1, 1, 1, 1), dilation: int = 1,
    second: bool = False, group: int = 1, seed: int = 0,
) -> onnx.ModelProto:
    """x → Conv(k×k, bias) [→ Relu → Conv 1×1] with random weights."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((cout, cin // group, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", kernel_shape=[k, k],
                              strides=[stride, stride], pads=list(pads), dilations=[dilation, dilation], group=group)]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    out = "y"
    if second:
        w2 = rng.standard_normal((4, cout, 1, 1)).astype(np.float32)
        nodes += [helper.make_node("Relu", ["y"], ["r"], name="relu"),
                  helper.make_node("Conv", ["r", "w2"], ["z"], name="pw", kernel_shape=[1, 1])]
        inits.append(numpy_helper.from_array(w2, "w2"))
        out = "z"
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", cin, hw, hw])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return infer_shapes(model)


def feeds(model: onnx.ModelProto, count: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal([2, *shape[1:]]).astype(np.float32)} for _ in range(count)]


def apply(model: onnx.ModelProto, count: int = 16, **opts):
    ctx = PassContext(calibration=feeds(model, count), seed=3)
    result = get_pass("comparator-conv")(**opts).run(model, ctx)
    onnx.checker.check_model(result.model, full_check=True)
    return result


def relative_error(a: onnx.ModelProto, b: onnx.ModelProto, seed: int = 9) -> float:
    test = feeds(a, 2, seed)
    ref = np.concatenate([o[0] for o in run_model(a, test)])
    new = np.concatenate([o[0] for o in run_model(b, test)])
    return float(np.linalg.norm(ref - new) / np.linalg.norm(ref))


def nodes_with_role(model: onnx.ModelProto, role: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if ann.get_node_annotation(n, "role") == role]


def test_ternary_anchors_are_seeded_sparse_and_paired():
    a = ternary_anchors(40, 8, (3, 3), 0.5, True, np.random.default_rng(1))
    b = ternary_anchors(40, 8, (3, 3), 0.5, True, np.random.default_rng(1))
    assert a.shape == (40, 8, 3, 3)
    assert np.array_equal(a, b)
    assert set(np.unique(a)) <= {-1.0, 0.0, 1.0}
    assert np.array_equal(a[20:], -a[:20])
    assert abs(np.count_nonzero(a) / a.size - 0.5) < 0.05
    sparse = ternary_anchors(7, 1, (3, 3), 0.01, False, np.random.default_rng(2))
    assert (np.count_nonzero(sparse.reshape(7, -1), axis=1) >= 1).all()


@pytest.mark.parametrize(
    "stride,pads,dilation", [(1, (1, 1, 1, 1), 1), (2, (0, 1, 1, 0), 1), (1, (2, 2, 2, 2), 2)]
)
def test_exact_capable_block_reproduces_the_conv_on_onnxruntime(stride, pads, dilation):
    model = conv_model(stride=stride, pads=pads, dilation=dilation)
    original = onnx.ModelProto()
    original.CopyFrom(model)
    result = apply(model, anchors=2 * 3 * 9, ridge=0.0, cost_rule=False)
    layer = result.stats["layers"][0]
    assert layer["fit_error"] < 1e-5
    assert relative_error(original, result.model) < 1e-4


def test_fewer_anchors_give_a_measured_nonzero_fit_error_that_matches_onnxruntime():
    model = conv_model(cin=8, cout=6)
    original = onnx.ModelProto()
    original.CopyFrom(model)
    result = apply(model, count=24, anchors=24)
    fit = result.stats["layers"][0]["fit_error"]
    assert 0.01 < fit < 1.0
    assert abs(relative_error(original, result.model, seed=1) - fit) < 0.15


def test_annotations_and_structure_of_the_lbc_block():
    result = apply(conv_model(), anchors=10, density=0.6)
    model = result.model
    anchor, = nodes_with_role(model, "anchor")
    comparator, = nodes_with_role(model, "comparator")
    pointwise, = nodes_with_role(model, "lbc_pointwise")
    weight = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == anchor.input[1]))
    assert weight.shape == (10, 3, 3, 3)
    assert set(np.unique(weight)) <= {-1.0, 0.0, 1.0}
    notes = ann.node_annotations(anchor)
    assert notes["layer"] == "conv" and notes["seed"] == 3
    assert notes["anchor_density"] == pytest.approx(np.count_nonzero(weight) / weight.size, abs=1e-6)
    assert comparator.op_type == "Relu"
    pw = ann.node_annotations(pointwise)
    assert pw["original_cin"] == 3 and pw["original_cout"] == 5 and pw["kernel"] == [3, 3]
    assert pw["layer"] == "conv" and pw["fit_error"] == pytest.approx(result.stats["layers"][0]["fit_error"], abs=1e-5)
    assert pointwise.output[0] == "y"


def test_same_seed_same_anchors_different_seed_different_anchors():
    def anchors(seed: int) -> np.ndarray:
        ctx = PassContext(calibration=feeds(conv_model(), 4), seed=seed)
        model = get_pass("comparator-conv")(anchors=8).run(conv_model(), ctx).model
        node, = nodes_with_role(model, "anchor")
        return numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == node.input[1]))

    assert np.array_equal(anchors(5), anchors(5))
    assert not np.array_equal(anchors(5), anchors(6))


def test_separable_binary_variant_runs_and_marks_one_bit_activations():
    model = conv_model(cin=4, cout=6)
    result = apply(model, variant="separable", comparator="binary", anchors=3, paired=False)
    anchor, = nodes_with_role(result.model, "anchor")
    assert next(a.i for a in anchor.attribute if a.name == "group") == 4
    comparator, = nodes_with_role(result.model, "comparator")
    assert comparator.op_type == "Greater"
    pointwise, = nodes_with_role(result.model, "lbc_pointwise")
    assert ann.get_node_annotation(pointwise, "act_bits") == 1
    out = run_model(result.model, feeds(model, 1))[0][0]
    assert out.shape == (2, 6, 9, 9) and np.isfinite(out).all()


def test_skips_pointwise_grouped_and_existing_lbc_blocks():
    result = apply(conv_model(second=True), anchors=6)
    assert result.stats["replaced"] == ["conv"]
    assert {"node": "pw", "reason": "kernel 1×1 is below min_kernel"} in result.stats["skipped"]
    again = get_pass("comparator-conv")().run(result.model, PassContext(calibration=feeds(result.model, 2)))
    assert not again.changed
    grouped = apply(conv_model(cin=4, cout=4, group=2), variant="lbc")
    assert not grouped.changed and "grouped" in grouped.stats["skipped"][0]["reason"]


def test_unknown_layer_name_is_a_user_error():
    with pytest.raises(PimcError, match="no node named"):
        apply(conv_model(), layers=["nope"])


def test_sequential_fit_uses_substituted_inputs_and_reduces_end_to_end_error():
    def two_convs() -> onnx.ModelProto:
        rng = np.random.default_rng(4)
        inits = [numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w1"),
                 numpy_helper.from_array(rng.standard_normal((5, 6, 3, 3)).astype(np.float32), "w2")]
        nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", ["a"], ["r"], name="r"),
                 helper.make_node("Conv", ["r", "w2"], ["y"], name="c2", pads=[1, 1, 1, 1])]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        return infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))

    errors = {}
    for sequential in (True, False):
        result = apply(two_convs(), count=24, anchors=16, sequential=sequential)
        errors[sequential] = relative_error(two_convs(), result.model)
    assert errors[True] <= errors[False] * 1.05


def test_cost_rule_keeps_a_conv_that_would_get_more_learnable_params():
    result = apply(conv_model(), anchors=2 * 3 * 9)
    assert not result.changed and result.stats["replaced"] == []
    assert "more learnable params (275 vs 140)" in result.stats["skipped"][0]["reason"]


def test_cost_rule_weighs_the_block_on_the_target():
    model = conv_model(cin=4, cout=6)
    ctx = PassContext(calibration=feeds(model, 4), seed=3, target="cmp-pim")
    relu = get_pass("comparator-conv")(variant="lbc").run(conv_model(cin=4, cout=6), ctx)
    assert not relu.changed and "more energy on cmp-pim" in relu.stats["skipped"][0]["reason"]
    binary = get_pass("comparator-conv")(variant="separable", comparator="binary").run(conv_model(cin=4, cout=6), ctx)
    assert binary.stats["replaced"] == ["conv"]
    ctx.target = "onnxruntime"
    macs = get_pass("comparator-conv")(anchors=8).run(conv_model(cin=4, cout=6), ctx)
    assert not macs.changed and "more MACs" in macs.stats["skipped"][0]["reason"]


def test_searched_without_a_budget_substitutes_nothing():
    model = conv_model(cin=8, cout=6)
    result = get_pass("comparator-conv")().run(model, PassContext(calibration=feeds(model, 4), seed=3))
    assert not result.changed and result.stats["replaced"] == []
    assert "no accuracy budget" in result.stats["note"]


def test_bundled_model_on_cmp_pim_stays_within_budget_and_never_costs_more_energy(tmp_path):
    from pimc.app.compile import CompileOptions, compile_model
    from pimc.models import bundled_model_path

    _, report = compile_model(CompileOptions(input=str(bundled_model_path()), target="cmp-pim", data="digits",
                                             output=str(tmp_path / "o.onnx")))
    assert report["accuracy"]["drop_points"] <= 1.0 + 1e-9
    assert report["cost"]["energy_gain_vs"]["cnn"] >= 1.0
    stats = next(p for p in report["passes"] if p["name"] == "comparator-conv")["stats"]
    assert all(s["reason"] for s in stats["skipped"])
    for layer in stats.get("layers", []):
        assert "damage" in layer and "setting" in layer
    left = [s for s in stats["skipped"] if s.get("kind")]
    assert len(left) + len(stats["replaced"]) == 3
    assert any(w.startswith("layers left uncompressed by comparator-conv") for w in report["warnings"]) == bool(left)
