"""Reference tests of the basic passes against onnxruntime on the original model, a hypothesis property
test of fold-batchnorm on random conv shapes, and byte-identical compile outputs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from pimc.app.compile import CompileOptions, compile_model
from pimc.compiler import annotations as ann
from pimc.compiler.errors import PimcError
from pimc.compiler.loader import infer_shapes, normalize
from pimc.compiler.passbase import PassContext, get_pass


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _rel_err(ref: list[np.ndarray], new: list[np.ndarray]) -> float:
    worst = 0.0
    for a, b in zip(ref, new, strict=True):
        assert a.shape == b.shape
        worst = max(worst, float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(a))), 1e-12))
    return worst


def _apply(name: str, model: onnx.ModelProto, **opts) -> tuple[onnx.ModelProto, dict]:
    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    result = get_pass(name)(**opts).run(clone, PassContext(seed=0))
    out = infer_shapes(result.model)
    onnx.checker.check_model(out, full_check=True)
    return out, {"changed": result.changed, **result.stats}


def _t(rng, name: str, *shape: int, positive: bool = False) -> onnx.TensorProto:
    arr = rng.uniform(0.5, 1.5, shape) if positive else rng.standard_normal(shape)
    return numpy_helper.from_array(arr.astype(np.float32), name)


def _model(nodes, inputs, outputs, inits, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _net() -> onnx.ModelProto:
    """Conv→BN→Relu, Dropout, Identity, a Reshape pair that is a no-op, Flatten, Gemm→Relu, dead branch."""
    rng = np.random.default_rng(0)
    inits = [
        _t(rng, "w", 6, 3, 3, 3), _t(rng, "g", 6, positive=True), _t(rng, "b", 6), _t(rng, "m", 6),
        _t(rng, "v", 6, positive=True), _t(rng, "fc", 5, 6 * 8 * 8), _t(rng, "unused", 7),
        numpy_helper.from_array(np.array([2, 6, 64], np.int64), "s1"),
        numpy_helper.from_array(np.array([2, 6, 8, 8], np.int64), "s2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], name="bn"),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("Dropout", ["r"], ["d"], name="dropout"),
        helper.make_node("Identity", ["d"], ["i"], name="identity"),
        helper.make_node("Reshape", ["i", "s1"], ["rs1"], name="reshape1"),
        helper.make_node("Reshape", ["rs1", "s2"], ["rs2"], name="reshape2"),
        helper.make_node("Flatten", ["rs2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc"], ["gm"], transB=1, name="fc"),
        helper.make_node("Relu", ["gm"], ["y"], name="relu_out"),
        helper.make_node("Sigmoid", ["x"], ["dead"], name="dead_branch"),
    ]
    return _model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])], inits,
    )


@pytest.fixture(scope="module")
def net_and_reference():
    model = _net()
    onnx.checker.check_model(model, full_check=True)
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    return model, feeds, _run(model, feeds)


def test_fold_batchnorm_matches_original(net_and_reference):
    model, feeds, ref = net_and_reference
    out, stats = _apply("fold-batchnorm", model)
    assert stats["changed"] and stats["folded"] == ["conv"]
    assert "BatchNormalization" not in [n.op_type for n in out.graph.node]
    assert _rel_err(ref, _run(out, feeds)) < 1e-6


def test_fold_batchnorm_skips_shared_and_dynamic(net_and_reference):
    model, _, _ = net_and_reference
    shared = onnx.ModelProto()
    shared.CopyFrom(model)
    shared.graph.node.insert(1, helper.make_node("Relu", ["c"], ["c_other"], name="second_reader"))
    shared.graph.output.append(helper.make_tensor_value_info("c_other", TensorProto.FLOAT, None))
    out, stats = _apply("fold-batchnorm", normalize(shared))
    assert not stats["changed"] and "BatchNormalization" in [n.op_type for n in out.graph.node]


def test_fuse_relu_annotates_and_keeps_outputs(net_and_reference):
    model, feeds, ref = net_and_reference
    out, stats = _apply("fuse-relu", model, samples=4)
    marked = {n.name: ann.node_annotations(n) for n in out.graph.node}
    assert set(stats["marked"]) == {"fc"}
    assert marked["fc"]["fused_activation"] == "Relu" and marked["relu_out"]["fused_into"] == "fc"
    assert "neg_fraction" not in marked["fc"]  # random inputs say nothing about the model's data
    folded, _ = _apply("fold-batchnorm", model)
    both, stats = _apply("fuse-relu", folded, samples=4)
    assert set(stats["marked"]) == {"conv", "fc"}
    assert _rel_err(ref, _run(out, feeds)) == 0.0 and _rel_err(ref, _run(both, feeds)) < 1e-6


def test_fuse_relu_measures_negative_fraction():
    """A Conv whose pre-activations are negative exactly where the input is: neg_fraction is measured."""
    model = _model(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), helper.make_node("Relu", ["c"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        [numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")],
    )
    x = np.arange(-8, 8, dtype=np.float32).reshape(1, 1, 4, 4)
    result = get_pass("fuse-relu")().run(model, PassContext(calibration=[{"x": x}], data_spec="npz:test"))
    conv = result.model.graph.node[0]
    assert ann.get_node_annotation(conv, "neg_fraction") == 0.5
    assert ann.get_node_annotation(conv, "neg_fraction_source") == "npz:test"


def test_eliminate_identity_matches_original(net_and_reference):
    model, feeds, ref = net_and_reference
    out, stats = _apply("eliminate-identity", model)
    ops = [n.op_type for n in out.graph.node]
    assert {"Identity", "Dropout"}.isdisjoint(ops)
    assert ops.count("Reshape") + ops.count("Flatten") <= 2
    assert _rel_err(ref, _run(out, feeds)) == 0.0
    assert "identity" in stats["removed"] and "dropout" in stats["removed"]


def test_eliminate_identity_keeps_graph_output_names():
    model = _model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["y"]),
         helper.make_node("Identity", ["x"], ["y2"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3]),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 3])], [],
    )
    out, _ = _apply("eliminate-identity", model)
    assert [o.name for o in out.graph.output] == ["y", "y2"]
    x = np.array([[-1.0, 0.5, 2.0]], np.float32)
    assert all(np.array_equal(a, b) for a, b in zip(_run(model, {"x": x}), _run(out, {"x": x}), strict=True))


def test_fold_constants_matches_original():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["wc"], value=numpy_helper.from_array(w)),
        helper.make_node("Constant", [], ["two"], value_float=2.0),
        helper.make_node("Mul", ["wc", "two"], ["w2"]),
        helper.make_node("Transpose", ["w2"], ["wt"], perm=[0, 1, 3, 2]),
        helper.make_node("Conv", ["x", "wt"], ["y"], name="conv"),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], [])
    out, stats = _apply("fold-constants", model)
    assert stats["folded_nodes"] == 4 and [n.op_type for n in out.graph.node] == ["Conv"]
    x = {"x": rng.standard_normal((1, 2, 6, 6)).astype(np.float32)}
    assert _rel_err(_run(model, x), _run(out, x)) < 1e-6


def test_fold_constants_keeps_qdq_and_random():
    nodes = [
        helper.make_node("QuantizeLinear", ["w", "s"], ["wq"]),
        helper.make_node("DequantizeLinear", ["wq", "s"], ["wd"]),
        helper.make_node("RandomUniform", [], ["noise"], shape=[1, 3], seed=1.0),
        helper.make_node("Add", ["x", "wd"], ["a"]),
        helper.make_node("Add", ["a", "noise"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.ones((1, 3), np.float32), "w"),
             numpy_helper.from_array(np.array(0.1, np.float32), "s")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    out, stats = _apply("fold-constants", model)
    assert not stats["changed"]
    assert [n.op_type for n in out.graph.node] == [n.op_type for n in model.graph.node]


def test_cleanup_matches_original(net_and_reference):
    model, feeds, ref = net_and_reference
    out, stats = _apply("cleanup", model)
    assert stats["dead_nodes"] == ["dead_branch"] and stats["unused_initializers"] == ["unused"]
    assert _rel_err(ref, _run(out, feeds)) < 1e-6


def test_cleanup_sorts_nodes_a_pass_appended_out_of_order(net_and_reference):
    """A pass that appends a producer after its reader must not lose it to dead-node removal."""
    model, feeds, ref = net_and_reference
    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    relu = next(n for n in clone.graph.node if n.name == "relu_out")
    relu.input[0] = "gm_scaled"
    clone.graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), "one"))
    clone.graph.node.append(helper.make_node("Mul", ["gm", "one"], ["gm_scaled"], name="late"))
    out, stats = _apply("cleanup", clone)
    assert "late" in [n.name for n in out.graph.node] and stats["reordered"]
    assert _rel_err(ref, _run(out, feeds)) < 1e-6


def test_cleanup_reports_a_cycle():
    model = _model(
        [helper.make_node("Add", ["x", "b"], ["a"], name="n1"), helper.make_node("Relu", ["a"], ["b"], name="n2"),
         helper.make_node("Relu", ["a"], ["y"], name="n3")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [],
    )
    with pytest.raises(PimcError, match="cycle"):
        get_pass("cleanup")().run(model, PassContext())


def test_keeps_pimc_maps_referenced_by_annotations(net_and_reference):
    model, _, _ = net_and_reference
    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    conv = clone.graph.node[0]
    ann.set_node_map(clone, conv, "pattern", np.zeros((6, 3), np.int16))
    out, stats = _apply("cleanup", clone)
    assert "pimc.map.pattern.conv" not in stats["unused_initializers"]
    assert ann.get_node_map(out, out.graph.node[0], "pattern").shape == (6, 3)


# --- hypothesis: fold-batchnorm is exact on random conv shapes -------------------------------------

@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 2, 3]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    dil = [draw(st.integers(1, 2)), draw(st.integers(1, 2))]
    pads = [draw(st.integers(0, 2)) for _ in range(4)]
    h = draw(st.integers((kh - 1) * dil[0] + 1, 12))
    w = draw(st.integers((kw - 1) * dil[1] + 1, 12))
    bias = draw(st.booleans())
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.1]))
    seed = draw(st.integers(0, 2**16))
    return groups, cin, cout, (kh, kw), stride, dil, pads, (h, w), bias, eps, seed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases())
def test_fold_batchnorm_exact_on_random_convs(case):
    groups, cin, cout, (kh, kw), stride, dil, pads, (h, w), bias, eps, seed = case
    rng = np.random.default_rng(seed)
    inits = [_t(rng, "w", cout, cin // groups, kh, kw), _t(rng, "g", cout, positive=True), _t(rng, "b", cout),
             _t(rng, "m", cout), _t(rng, "v", cout, positive=True)]
    conv_inputs = ["x", "w"]
    if bias:
        inits.append(_t(rng, "cb", cout))
        conv_inputs.append("cb")
    nodes = [
        helper.make_node("Conv", conv_inputs, ["c"], group=groups, strides=stride, dilations=dil, pads=pads,
                         name="conv"),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"], epsilon=eps, name="bn"),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, cin, h, w])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = normalize(model)
    feeds = {"x": rng.standard_normal((2, cin, h, w)).astype(np.float32)}
    ref = _run(model, feeds)
    out, stats = _apply("fold-batchnorm", model)
    assert stats["folded"] == ["conv"]
    assert [n.op_type for n in out.graph.node] == ["Conv"]
    got = _run(out, feeds)
    assert _rel_err(ref, got) < 1e-5
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-4, atol=1e-5 * float(np.max(np.abs(ref[0]))))


# --- determinism ------------------------------------------------------------------------------------

def test_two_compile_runs_write_identical_bytes(tmp_path, net_and_reference):
    model, _, _ = net_and_reference
    src = tmp_path / "net.onnx"
    onnx.save(model, str(src))
    outputs = []
    for run in range(2):
        out = tmp_path / f"out{run}.onnx"
        report = tmp_path / f"r{run}.json"
        compile_model(CompileOptions(
            input=str(src), target="onnxruntime", output=str(out), report=str(report),
            passes="fold-constants,eliminate-identity,fold-batchnorm,fuse-relu,cleanup", verify=True, seed=7,
        ))
        outputs.append(out.read_bytes())
        data = json.loads(report.read_text())
        assert [p["name"] for p in data["passes"]][-1] == "cleanup"
    assert outputs[0] == outputs[1]
    written = onnx.load(str(tmp_path / "out0.onnx"))
    assert {"conv", "fc"} <= {n.name for n in written.graph.node if ann.get_node_annotation(n, "fused_activation")}


def test_default_pipeline_is_byte_identical(tmp_path, net_and_reference):
    model, _, _ = net_and_reference
    src = tmp_path / "net.onnx"
    onnx.save(model, str(src))
    runs = []
    for run in range(2):
        out = tmp_path / f"d{run}.onnx"
        compile_model(CompileOptions(input=str(src), target="onnxruntime", output=str(out)))
        runs.append(out.read_bytes())
    assert runs[0] == runs[1]
