"""Loading: opsets 7-25, model-zoo constant chains, external data, >2 GB saves, ops pimc leaves alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import assert_close, conv_bn_net, feeds_for, run_ort
from onnx import TensorProto, helper, numpy_helper, version_converter

from pimc.app.compile import CompileOptions, compile_model
from pimc.compiler import loader, modelio
from pimc.compiler.errors import PimcError
from pimc.compiler.loader import load_model

BASIC = "fold-constants,eliminate-identity,fold-batchnorm,cleanup"


def _compile(path, tmp_path, verify=True, passes=BASIC, name="out.onnx"):
    out = tmp_path / name
    model, report = compile_model(CompileOptions(
        input=str(path), target="onnxruntime", output=str(out), verify=verify, passes=passes,
    ))
    return model, report, out


@pytest.mark.parametrize("opset", [7, 9, 11, 13, 22, 23, 24, 25])
def test_version_converted_net_loads_and_compiles(opset, save, tmp_path):
    original = conv_bn_net(opset=7)
    converted = version_converter.convert_version(original, opset) if opset != 7 else original
    assert converted.opset_import[0].version == opset
    path = save(converted)
    model, report, out = _compile(path, tmp_path)
    feeds = feeds_for(original)
    assert_close(run_ort(original, feeds), run_ort(out, feeds), rel=1e-5)
    assert report["verify"]["max_rel_err"] <= 1e-5
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 2


def test_opset_above_limit_is_rejected(save):
    model = conv_bn_net()
    model.opset_import[0].version = loader.MAX_OPSET + 1
    with pytest.raises(PimcError, match=f"opset {loader.MAX_OPSET + 1} is not supported"):
        load_model(save(model))


def test_old_opset_is_upgraded(save):
    model = conv_bn_net()
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 3, 3])],
        [numpy_helper.from_array(np.ones((3, 2, 3, 3), np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)], ir_version=3)
    loaded = load_model(save(model))
    assert loaded.opset_import[0].version == loader.MIN_OPSET


def _zoo_style_net() -> onnx.ModelProto:
    """Weights from Constant nodes, a bias from ConstantOfShape, Identity chains, a Shape-computed
    Reshape target: how many model-zoo files look."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((5, 4 * 10 * 10)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w_const"], value=numpy_helper.from_array(w)),
        helper.make_node("Identity", ["w_const"], ["w_id"]),
        helper.make_node("Identity", ["w_id"], ["w"]),
        helper.make_node("Constant", [], ["bias_shape"], value_ints=[4]),
        helper.make_node("ConstantOfShape", ["bias_shape"], ["bias"],
                         value=numpy_helper.from_array(np.array([0.25], np.float32))),
        helper.make_node("Conv", ["x", "w", "bias"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Shape", ["r"], ["shape"]),
        helper.make_node("Constant", [], ["zero"], value_int=0),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["r", "target"], ["flat"]),
        helper.make_node("Constant", [], ["fc_w"], value=numpy_helper.from_array(fc)),
        helper.make_node("Gemm", ["flat", "fc_w"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "zoo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
        [numpy_helper.from_array(np.array([0], np.int64), "axes"),
         numpy_helper.from_array(np.array([-1], np.int64), "minus_one")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_constant_chains_fold_into_initializers(save, tmp_path):
    original = _zoo_style_net()
    loaded = load_model(save(original))
    inits = {i.name for i in loaded.graph.initializer}
    ops = [n.op_type for n in loaded.graph.node]
    assert ops == ["Conv", "Relu", "Reshape", "Gemm"]
    conv = loaded.graph.node[0]
    assert conv.input[1] in inits and conv.input[2] in inits
    assert loaded.graph.node[2].input[1] in inits
    np.testing.assert_array_equal(numpy_helper.to_array(next(i for i in loaded.graph.initializer
                                                             if i.name == conv.input[2])), np.full(4, 0.25))
    feeds = feeds_for(original)
    assert_close(run_ort(original, feeds), run_ort(loaded, feeds), rel=1e-6)
    _, report, _ = _compile(save(original, "zoo.onnx"), tmp_path)
    assert report["model"]["macs"] == 2 * 10 * 10 * 4 * 27 + 2 * 5 * 400


def test_dynamo_style_castlike_bias_folds(save):
    """torch's dynamo exporter (optimize=False) builds a zero Conv bias with CastLike(0, x) + Expand."""
    w = np.ones((2, 1, 1, 1), np.float32)
    nodes = [
        helper.make_node("Shape", ["w"], ["ws"], start=0, end=1),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0.0, np.float32))),
        helper.make_node("CastLike", ["zero", "x"], ["zero_like"]),
        helper.make_node("Expand", ["zero_like", "ws"], ["bias"]),
        helper.make_node("Conv", ["x", "w", "bias"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])], [numpy_helper.from_array(w, "w")],
    )
    loaded = load_model(save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])))
    assert [n.op_type for n in loaded.graph.node] == ["Conv"]


def test_external_data_model_loads_and_compiles(tmp_path):
    model = conv_bn_net()
    path = tmp_path / "ext.onnx"
    onnx.save_model(conv_bn_net(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.weights", size_threshold=0)
    assert (tmp_path / "ext.weights").exists()
    _, report, out = _compile(path, tmp_path)
    feeds = feeds_for(model)
    assert_close(run_ort(model, feeds), run_ort(out, feeds))


def test_large_model_is_saved_with_external_data(tmp_path, monkeypatch, save):
    """The > 2 GB path, made cheap: any model above EXTERNAL_THRESHOLD is written with external data."""
    monkeypatch.setattr(modelio, "EXTERNAL_THRESHOLD", 1024)
    original = conv_bn_net()
    _, _, out = _compile(save(original), tmp_path, name="big.onnx")
    data_file = tmp_path / "big.onnx.data"
    assert data_file.exists() and data_file.stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") or ".tmp." in p.name]
    header = onnx.load(str(out), load_external_data=False)
    external = [i for i in header.graph.initializer if i.data_location == TensorProto.EXTERNAL]
    assert external and all(
        {e.key: e.value for e in i.external_data}["location"] == "big.onnx.data" for i in external
    )
    feeds = feeds_for(original)
    assert_close(run_ort(original, feeds), run_ort(out, feeds))
    # and the written file loads again through pimc (external data beside it)
    monkeypatch.setattr(modelio, "EXTERNAL_THRESHOLD", modelio.TWO_GB)
    _, _, again = _compile(out, tmp_path, name="again.onnx")
    assert_close(run_ort(original, feeds), run_ort(again, feeds))
    assert not (tmp_path / "again.onnx.data").exists()


def _passthrough_net(custom: bool) -> onnx.ModelProto:
    """Conv → (LSTM over the flattened features) + attention-like MatMul/Softmax, optionally a custom op."""
    rng = np.random.default_rng(5)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    hidden = 6
    inits = [
        numpy_helper.from_array(f(4, 2, 3, 3), "cw"),
        numpy_helper.from_array(np.array([0, 2, 3, 1], np.int64), "perm_shape"),
        numpy_helper.from_array(f(1, 4 * hidden, 4), "W"), numpy_helper.from_array(f(1, 4 * hidden, hidden), "R"),
        numpy_helper.from_array(f(1, 8 * hidden), "B"),
        numpy_helper.from_array(f(hidden, hidden), "wq"), numpy_helper.from_array(f(hidden, hidden), "wk"),
        numpy_helper.from_array(np.array([16, 1, 4], np.int64), "seq_shape"),
        numpy_helper.from_array(np.array([16, hidden], np.int64), "tok_shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["ct", "seq_shape"], ["seq"]),
        helper.make_node("LSTM", ["seq", "W", "R", "B"], ["h", ""], hidden_size=hidden),
        helper.make_node("Reshape", ["h", "tok_shape"], ["tok"]),
        helper.make_node("MatMul", ["tok", "wq"], ["q"]),
        helper.make_node("MatMul", ["tok", "wk"], ["k"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[1, 0]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["attn"], axis=-1),
        helper.make_node("MatMul", ["attn", "tok"], ["y"]),
    ]
    out = "y"
    if custom:
        nodes.append(helper.make_node("FancyNorm", ["y"], ["z"], domain="com.example.research", alpha=0.5))
        out = "z"
    graph = helper.make_graph(
        nodes, "passthrough", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [16, hidden])], inits,
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example.research", 1)] if custom else [])
    return helper.make_model(graph, opset_imports=opsets)


def _signature(model: onnx.ModelProto) -> list[tuple[str, str, tuple, tuple]]:
    return [(n.domain, n.op_type, tuple(n.input), tuple(str(a) for a in n.attribute)) for n in model.graph.node]


def test_lstm_and_attention_pass_through_untouched(save, tmp_path):
    original = _passthrough_net(custom=False)
    path = save(original)
    model, report, out = _compile(path, tmp_path, passes=None)
    kept = [n.op_type for n in model.graph.node]
    assert kept.count("LSTM") == 1 and kept.count("Softmax") == 1 and kept.count("MatMul") == 4
    lstm = next(n for n in model.graph.node if n.op_type == "LSTM")
    assert lstm.attribute == next(n for n in original.graph.node if n.op_type == "LSTM").attribute
    feeds = feeds_for(original)
    assert_close(run_ort(original, feeds), run_ort(out, feeds))
    assert report["verify"]["max_rel_err"] <= 1e-6


def test_custom_domain_node_preserved_without_verify(save, tmp_path):
    original = _passthrough_net(custom=True)
    model, report, out = _compile(save(original), tmp_path, verify=False, passes=None)
    written = onnx.load(str(out))
    custom = [n for n in written.graph.node if n.domain == "com.example.research"]
    assert len(custom) == 1 and custom[0].op_type == "FancyNorm"
    assert helper.get_attribute_value(custom[0].attribute[0]) == pytest.approx(0.5)
    assert any(o.domain == "com.example.research" for o in written.opset_import)
    assert [n.op_type for n in written.graph.node] == [n.op_type for n in original.graph.node]


def test_custom_domain_with_verify_is_a_clear_error(save, tmp_path):
    with pytest.raises(PimcError, match="onnxruntime cannot load"):
        _compile(save(_passthrough_net(custom=True)), tmp_path, verify=True, passes=None)
    assert not (tmp_path / "out.onnx").exists()


def test_outputs_without_shape_get_inferred(save):
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)],
        [numpy_helper.from_array(np.ones((3, 2, 3, 3), np.float32), "w")],
    )
    loaded = load_model(save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))
    t = loaded.graph.output[0].type.tensor_type
    assert t.elem_type == TensorProto.FLOAT and [d.dim_value for d in t.shape.dim] == [1, 3, 3, 3]


def test_unsorted_graph_is_sorted(save, tmp_path):
    model = conv_bn_net()
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    loaded = load_model(save(model))
    assert [n.name for n in loaded.graph.node] == [n.name for n in nodes]


def test_skeleton_shape_inference_matches_full_inference():
    rng = np.random.default_rng(0)
    model = conv_bn_net()
    big = numpy_helper.from_array(rng.standard_normal((8, 8, 5, 5)).astype(np.float32), "wbig")
    model.graph.initializer.append(big)
    model.graph.node.insert(3, helper.make_node("Conv", ["r1", "wbig"], ["r1b"], pads=[2, 2, 2, 2], name="big"))
    model.graph.node[4].input[0] = "r1b"
    full = onnx.shape_inference.infer_shapes(model, data_prop=True)
    mine = loader.infer_shapes(onnx.ModelProto.FromString(model.SerializeToString()))
    shapes = lambda m: {vi.name: str(vi.type) for vi in m.graph.value_info}  # noqa: E731
    assert shapes(mine) == shapes(full) and len(shapes(mine)) > 5


@pytest.mark.slow
def test_model_above_two_gb_round_trips(tmp_path):
    """A real > 2 GB model (two 1.16 GB MatMul weights) loads from external data, compiles and is saved
    with external data again (about a minute)."""
    n = 17_000
    weight = np.zeros((n, n), np.float32)
    weight[np.arange(n), np.arange(n)] = 2.0
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["y"]), helper.make_node("Relu", ["y"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["z"])], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(weight, "w1"), numpy_helper.from_array(weight, "w2")],
    )
    del weight
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    src = tmp_path / "big.onnx"
    onnx.save_model(model, str(src), save_as_external_data=True, location="big.onnx.data")
    del model, graph
    out = tmp_path / "out.onnx"
    _, report = compile_model(CompileOptions(input=str(src), target="onnxruntime", output=str(out),
                                             passes="eliminate-identity,cleanup"))
    assert report["model"]["params"] == 2 * n * n
    assert (tmp_path / "out.onnx.data").stat().st_size >= 2 * n * n * 4 > modelio.TWO_GB
    assert out.stat().st_size < 10_000
    x = np.random.default_rng(0).standard_normal((1, n)).astype(np.float32)
    np.testing.assert_allclose(run_ort(out, {"x": x})[0], 4 * np.maximum(x, 0))


def test_remove_initializers_drops_their_graph_inputs_too():
    from pimc.compiler.graph import remove_initializers

    model = conv_bn_net()
    weight = model.graph.initializer[0]
    model.graph.input.append(helper.make_tensor_value_info(weight.name, weight.data_type, list(weight.dims)))
    remove_initializers(model.graph, [weight.name])
    assert weight.name not in {i.name for i in model.graph.initializer}
    assert [i.name for i in model.graph.input] == ["x"]


def test_ir3_initializer_inputs_are_dropped_on_load(save):
    model = conv_bn_net(opset=9)
    model.ir_version = 3
    for init in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    loaded = load_model(save(model))
    assert loaded.ir_version >= 4 and [i.name for i in loaded.graph.input] == ["x"]
