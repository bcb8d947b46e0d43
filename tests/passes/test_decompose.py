"""decompose pass: exactness at full rank (property test vs onnxruntime), options, existing pairs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from pimc.compiler.annotations import get_node_annotation, remove_node_annotation
from pimc.compiler.errors import PimcError
from pimc.compiler.graph import get_initializer
from pimc.compiler.loader import normalize
from pimc.compiler.passbase import PassContext, get_pass
from pimc.compiler.verify import compare_outputs, run_model


def conv_model(w: np.ndarray, b: np.ndarray | None, hw: tuple[int, int], batch: int = 2, **attrs) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(w, "W")]
    inputs = ["x", "W"]
    if b is not None:
        inits.append(numpy_helper.from_array(b, "B"))
        inputs.append("B")
    graph = helper.make_graph(
        [helper.make_node("Conv", inputs, ["y"], name="conv", **attrs)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, w.shape[1] * attrs.get("group", 1), *hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])], inits)
    return normalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.ModelProto.FromString(model.SerializeToString())


def run_pass(model, **opts):
    p = get_pass("decompose")(**{"rank": 5, **opts})
    result = p.run(copy(model), PassContext())
    return p, result


def feeds_for(model, seed=0):
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return [{"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cout=st.integers(1, 6), cin=st.integers(1, 5), kh=st.integers(1, 4), kw=st.integers(2, 4),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)), dil=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pads=st.tuples(*[st.integers(0, 2)] * 4), bias=st.booleans(), h=st.integers(8, 13), w=st.integers(8, 13),
    seed=st.integers(0, 2**16),
)
def test_full_rank_is_exact(cout, cin, kh, kw, stride, dil, pads, bias, h, w, seed):
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((cout, cin, kh, kw)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32) if bias else None
    model = conv_model(weight, b, (h, w), strides=list(stride), dilations=list(dil), pads=list(pads))
    p, result = run_pass(model, rank=kh * kw)
    assert result.changed and p.is_exact()
    feeds = feeds_for(model, seed)
    cmp = compare_outputs(run_model(model, feeds), run_model(result.model, feeds))
    assert cmp.max_rel_err <= 1e-5
    assert [n.op_type for n in result.model.graph.node] == ["Conv", "Conv"]


def test_channel_order_is_c_times_d_plus_j():
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    model = conv_model(weight, None, (6, 6), pads=[1, 1, 1, 1])
    _, result = run_pass(model, rank=9)
    basis, coef = result.model.graph.node
    assert get_node_annotation(basis, "role") == "basis" and get_node_annotation(coef, "role") == "coefficient"
    bw = get_initializer(result.model.graph, basis.input[1])
    cw = get_initializer(result.model.graph, coef.input[1])
    d = 9
    for c in range(3):
        for j in range(d):
            np.testing.assert_array_equal(bw[c * d + j], bw[j])
    dense = np.einsum("ocj,cjhw->ochw", cw.reshape(4, 3, d), bw.reshape(3, d, 3, 3))
    np.testing.assert_allclose(dense, weight, atol=1e-5)
    assert get_node_annotation(basis, "layer") == "conv" and get_node_annotation(basis, "kernel") == [3, 3]


def test_low_rank_and_pruning_are_not_exact():
    rng = np.random.default_rng(2)
    model = conv_model(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), None, (8, 8))
    p, result = run_pass(model)
    assert not p.is_exact()
    assert result.stats["decomposed"][0]["rank"] == 5
    p, result = run_pass(model, rank=9, prune=1.0)
    assert not p.is_exact()
    info = result.stats["decomposed"][0]
    assert info["coefficients_nonzero"] < info["coefficients"]


def test_energy_picks_smallest_rank():
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.standard_normal((9, 9)))[0][:2]
    weight = (rng.standard_normal((16, 2)) @ basis).reshape(4, 4, 3, 3).astype(np.float32)
    model = conv_model(weight, None, (6, 6))
    _, result = run_pass(model, energy=0.999)
    assert result.stats["decomposed"][0]["rank"] == 2
    assert result.stats["decomposed"][0]["relative_error"] < 1e-5


def test_sparsity_target():
    rng = np.random.default_rng(4)
    model = conv_model(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), None, (6, 6))
    _, result = run_pass(model, rank=5, sparsity=0.8)
    info = result.stats["decomposed"][0]
    assert info["coefficients_nonzero"] == info["coefficients"] - round(0.8 * info["coefficients"])
    with pytest.raises(PimcError):
        get_pass("decompose")(prune=1.0, sparsity=0.5)


def test_skipped_with_reasons_and_patterns():
    rng = np.random.default_rng(5)
    pointwise = conv_model(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), None, (5, 5))
    _, result = run_pass(pointwise)
    assert not result.changed and result.stats["skipped"] == [{"node": "conv", "reason": "1×1 kernel"}]
    grouped = conv_model(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), None, (5, 5), group=2)
    _, result = run_pass(grouped)
    assert "grouped" in result.stats["skipped"][0]["reason"]
    dense = conv_model(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), None, (5, 5))
    _, result = run_pass(dense, exclude=["co*"])
    assert result.stats["skipped"][0]["reason"] == "matched by exclude"
    _, result = run_pass(dense, include=["other"])
    assert result.stats["skipped"][0]["reason"] == "not matched by include"


def test_recognises_decomposed_models_and_completes_annotations():
    rng = np.random.default_rng(6)
    model = conv_model(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), None, (6, 6))
    _, first = run_pass(model, rank=3)
    for node in first.model.graph.node:
        for key in ("role", "rank", "layer", "kernel"):
            remove_node_annotation(node, key)
    _, second = run_pass(first.model)
    assert len(second.model.graph.node) == 2 and second.stats["decomposed"] == []
    assert second.changed and second.stats["already_decomposed"][0]["rank"] == 3
    basis = second.model.graph.node[0]
    assert get_node_annotation(basis, "role") == "basis" and get_node_annotation(basis, "rank") == 3


def test_inconsistent_annotations_are_an_error():
    rng = np.random.default_rng(7)
    model = conv_model(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), None, (6, 6))
    from pimc.compiler.annotations import set_node_annotation

    set_node_annotation(model.graph.node[0], "role", "basis")
    with pytest.raises(PimcError, match="inconsistent"):
        run_pass(model)


def test_pattern_pruned_convs_are_not_decomposed():
    from pimc.compiler.annotations import set_node_annotation

    rng = np.random.default_rng(7)
    model = conv_model(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), None, (8, 8))
    set_node_annotation(model.graph.node[0], "pattern_library", [[0, 1, 4, 7]])
    _, result = run_pass(model, rank=3)
    assert not result.changed
    assert result.stats["skipped"][0]["reason"] == "already pattern-pruned"


def test_searched_decomposition_without_labelled_data_changes_nothing():
    rng = np.random.default_rng(8)
    model = conv_model(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), None, (8, 8))
    p = get_pass("decompose")()
    result = p.run(normalize(model), PassContext())
    assert p.searching and not result.changed and result.stats["decomposed"] == []
    assert "no accuracy budget" in result.stats["note"]


def test_a_refitted_candidate_absorbs_the_error_of_its_input():
    """``Candidate.refit``: the same rank and sparsity fitted on distorted inputs against the reference
    inputs reproduces the reference output on the distorted inputs better than the candidate as first fitted."""
    from pimc.compiler.layerwise import Site

    rng = np.random.default_rng(0)
    basis = rng.standard_normal((3, 9))  # kernels of rank 3: the decomposition itself loses little
    w = (rng.standard_normal((128, 3)) @ basis + 0.01 * rng.standard_normal((128, 9))).reshape(16, 8, 3, 3)
    w = w.astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    batch = 32
    model = conv_model(w, b, (8, 8), batch=batch, pads=[1, 1, 1, 1])
    x_ref = rng.standard_normal((batch, 8, 8, 8)).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, (1, 8, 1, 1))  # an upstream error a linear layer can absorb
    x_comp = (scale * x_ref + 0.01 * rng.standard_normal(x_ref.shape)).astype(np.float32)
    site = Site("conv", "x", float(w.size * 64))
    candidates = get_pass("decompose")()._propose(model, site, x_ref, x_ref)
    first = next(c for c in candidates if c.info["rank"] == 3 and c.info["coefficient_sparsity"] == 0.0)
    refitted = first.refit(x_comp, x_ref)
    assert refitted.info["rank"] == first.info["rank"] and refitted.refit is None
    want = run_model(model, [{"x": x_ref}])[0][0]

    def error(candidate) -> float:
        trial = copy(model)
        candidate.apply(trial)
        return float(np.linalg.norm(run_model(trial, [{"x": x_comp}])[0][0] - want))

    assert error(refitted) < 0.5 * error(first)
