"""shrink pass: removed channels never change the outputs (onnxruntime oracle) and unsafe cases are skipped."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pimc.compiler.annotations import get_node_annotation
from pimc.compiler.graph import get_initializer
from pimc.compiler.loader import normalize
from pimc.compiler.passbase import PassContext, get_pass
from pimc.compiler.pipeline import PassManager
from pimc.compiler.sessions import random_feeds
from pimc.compiler.verify import compare_outputs, run_model

RNG = np.random.default_rng(0)


def w(*shape, dead_out=(), dead_in=()):
    arr = RNG.standard_normal(shape).astype(np.float32)
    arr[list(dead_out)] = 0
    if dead_in:
        arr[:, list(dead_in)] = 0
    return arr


def build(nodes, inits: dict[str, np.ndarray], x_shape, out_rank=4) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"d{i}" for i in range(out_rank)])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return normalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def shrink(model):
    feeds = random_feeds(model, 2, 0)
    ref = run_model(model, feeds)
    pm = PassManager([get_pass("shrink")(), get_pass("cleanup")()], PassContext(), verify=True, verify_feeds=feeds)
    out = pm.run(onnx.ModelProto.FromString(model.SerializeToString()))
    assert compare_outputs(ref, run_model(out, feeds)).max_rel_err < 1e-5
    return out, pm.records[0].stats


def conv(name, x, wname, y, bname=None, **kw):
    return helper.make_node("Conv", [x, wname] + ([bname] if bname else []), [y], name=name, **kw)


def weight_of(model, node_name):
    node = next(n for n in model.graph.node if n.name == node_name)
    return get_initializer(model.graph, node.input[1])


def test_dead_filters_fold_into_unpadded_consumer_and_gemm():
    nodes = [
        conv("c1", "x", "W1", "a", "B1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["r"]),
        conv("c2", "r", "W2", "b", "B2"), helper.make_node("Relu", ["b"], ["s"]),
        helper.make_node("GlobalAveragePool", ["s"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "Wfc", "Bfc"], ["y"], name="fc", transB=1),
    ]
    inits = {"W1": w(8, 3, 3, 3, dead_out=[1, 4]), "B1": np.full(8, 0.5, np.float32),
             "W2": w(6, 8, 1, 1, dead_out=[2]), "B2": np.full(6, 0.3, np.float32),
             "Wfc": w(5, 6), "Bfc": w(5)}
    out, stats = shrink(build(nodes, inits, [1, 3, 9, 7], out_rank=2))
    assert weight_of(out, "c1").shape == (6, 3, 3, 3)
    assert weight_of(out, "c2").shape == (5, 6, 1, 1)
    assert weight_of(out, "fc").shape == (5, 5)
    assert stats["removed"]["c1"]["out_channels"] == 2


def test_nonzero_constant_into_padded_conv_is_kept_with_reason():
    nodes = [conv("c1", "x", "W1", "a", "B1"), helper.make_node("Relu", ["a"], ["r"]),
             conv("c2", "r", "W2", "y", pads=[1, 1, 1, 1])]
    inits = {"W1": w(4, 2, 3, 3, dead_out=[0, 3]), "B1": np.array([0.7, 0.1, 0.2, -0.5], np.float32),
             "W2": w(3, 4, 3, 3)}
    out, stats = shrink(build(nodes, inits, [2, 2, 8, 8]))
    assert weight_of(out, "c1").shape[0] == 3  # channel 3 (relu(-0.5) = 0) goes, channel 0 stays
    assert any("zero padding" in s["reason"] for s in stats["skipped"])


def test_residual_add_and_unused_inputs():
    nodes = [
        conv("stem", "x", "W0", "s0", "B0", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["s0"], ["s"]),
        conv("c1", "s", "W1", "a", "B1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["ar"]),
        conv("c2", "ar", "W2", "b", "B2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["b", "s"], ["sum"]), helper.make_node("Relu", ["sum"], ["z"]),
        helper.make_node("MaxPool", ["z"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        conv("head", "p", "W3", "y", "B3"),
    ]
    inits = {"W0": w(6, 3, 3, 3), "B0": w(6), "W1": w(5, 6, 3, 3, dead_out=[1]),
             "B1": np.array([0.1, -1.0, 0.2, 0.3, 0.4], np.float32),
             "W2": w(6, 5, 3, 3, dead_in=[3]), "B2": w(6), "W3": w(4, 6, 1, 1, dead_in=[0]), "B3": w(4)}
    out, stats = shrink(build(nodes, inits, [1, 3, 8, 8]))
    assert weight_of(out, "c1").shape[0] == 3  # channel 1 (constant 0) and 3 (unused by c2)
    assert weight_of(out, "c2").shape == (6, 3, 3, 3)  # residual space stays whole: stem channel 0 is live
    assert weight_of(out, "head").shape[1] == 6


def test_unsupported_ops_freeze_their_space():
    nodes = [conv("c1", "x", "W1", "a"), helper.make_node("Concat", ["a", "a"], ["cat"], axis=1),
             conv("c2", "cat", "W2", "y")]
    inits = {"W1": w(4, 2, 1, 1, dead_out=[0]), "W2": w(3, 8, 1, 1)}
    out, stats = shrink(build(nodes, inits, [1, 2, 4, 4]))
    assert weight_of(out, "c1").shape[0] == 4
    assert any("Concat" in s["reason"] for s in stats["skipped"])


def test_decomposed_pairs_drop_groups_and_basis_kernels():
    model = build([conv("c1", "x", "W1", "a", "B1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["r"]),
                   conv("c2", "r", "W2", "y", "B2", pads=[1, 1, 1, 1])],
                  {"W1": w(6, 3, 3, 3), "B1": w(6), "W2": w(5, 6, 3, 3), "B2": w(5)}, [1, 3, 8, 8])
    model = get_pass("decompose")(rank=4).run(model, PassContext()).model
    graph = model.graph
    coef2 = next(n for n in graph.node if n.name == "c2.coefficient")
    cw = get_initializer(graph, coef2.input[1]).reshape(5, 6, 4).copy()
    cw[:, 2, :] = 0  # input channel 2 of c2 unused -> c1's output 2 goes, then c1's coefficient row
    cw[:, :, 3] = 0  # basis kernel 3 of c2 unused by every channel
    graph.initializer.remove(next(i for i in graph.initializer if i.name == coef2.input[1]))
    graph.initializer.append(numpy_helper.from_array(cw.reshape(5, 24, 1, 1), coef2.input[1]))
    out, stats = shrink(model)
    basis2 = next(n for n in out.graph.node if n.name == "c2.basis")
    assert get_node_annotation(basis2, "rank") == 3
    assert weight_of(out, "c2.basis").shape == (5 * 3, 1, 3, 3)
    assert weight_of(out, "c1.coefficient").shape[0] == 5
    assert stats["removed"]["c2.basis"]["basis_kernels"] == 1


@pytest.mark.parametrize("name", ["resnet20", pytest.param("mobilenetv2", marks=pytest.mark.slow)])
def test_zoo_models_with_random_filter_pruning(name):
    import torch

    from pimc.models.train import export_onnx
    from pimc.models.zoo import build_model

    torch.manual_seed(0)
    net = build_model(name)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.2, 0.2)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(net, f"{tmp}/m.onnx", (3, 32, 32))
        from pimc.compiler.loader import load_model

        model = load_model(f"{tmp}/m.onnx")
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.ndim == 4 and arr.shape[0] > 4:
            arr = arr.copy()
            arr[RNG.random(arr.shape[0]) < 0.3] = 0
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    out, stats = shrink(model)
    assert stats["channels_removed"] > 0


def test_pattern_maps_follow_removed_filters_and_inputs():
    from pimc.backends.cim import pattern_row_mask
    from pimc.compiler.annotations import get_node_map, set_node_map
    from pimc.compiler.workload import extract_workload

    nodes = [conv("c1", "x", "W1", "a", "B1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["r"]),
             conv("c2", "r", "W2", "b", "B2", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["b"], ["s"]),
             conv("c3", "s", "W3", "y", "B3", pads=[1, 1, 1, 1])]
    inits = {"W1": w(6, 3, 3, 3), "B1": w(6), "W2": w(8, 6, 3, 3, dead_out=[0, 5]),
             "B2": np.array([0, 0.2, 0.1, 0.3, 0.4, -2.0, 0.5, 0.6], np.float32),
             "W3": w(4, 8, 3, 3, dead_in=[3]), "B3": w(4)}
    model = get_pass("pattern-prune")(connectivity=0.25).run(build(nodes, inits, [1, 3, 8, 8]), PassContext()).model
    nodes_by_name = {n.name: n for n in model.graph.node}
    before = {name: get_node_map(model, nodes_by_name[name], "pattern") for name in ("c2", "c3")}
    assert before["c2"].shape == (8, 6) and before["c3"].shape == (4, 8)
    weight = weight_of(model, "c2").copy()  # make c2's input 4 unused: c1's filter 4 goes too
    weight[:, 4] = 0
    set_initializer_array(model, "c2", weight)
    marked = before["c2"].copy()
    marked[:, 4] = -1
    set_node_map(model, nodes_by_name["c2"], "pattern", marked)
    out, stats = shrink(model)
    after = {n.name: get_node_map(out, n, "pattern") for n in out.graph.node if n.name in ("c1", "c2", "c3")}
    # c2's filters 0 and 5 give relu(0) and relu(-2), constant 0; c3 never reads input 3; c1's filter 4 unused
    assert weight_of(out, "c2").shape == (5, 5, 3, 3)
    np.testing.assert_array_equal(after["c2"], marked[[1, 2, 4, 6, 7]][:, [0, 1, 2, 3, 5]])
    np.testing.assert_array_equal(after["c3"], before["c3"][:, [1, 2, 4, 6, 7]])
    assert after["c1"].shape == (5, 3)
    for record in extract_workload(out).layers:
        assert pattern_row_mask(record).shape[0] == record.cout  # the CiM backend accepts the shrunk maps
    assert stats["removed"]["c2"]["out_channels"] == 3


def set_initializer_array(model, node_name, array):
    from pimc.compiler.graph import set_initializer

    node = next(n for n in model.graph.node if n.name == node_name)
    set_initializer(model.graph, node.input[1], array)


def test_rank_follows_a_basis_conv_shrunk_to_one_input_channel() -> None:
    """A basis conv left with one input channel has group 1; its rank annotation must still match."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from pimc.compiler.annotations import get_node_annotation, set_node_annotation
    from pimc.compiler.passbase import PassContext, get_pass

    basis = helper.make_node("Conv", ["x", "wb"], ["h"], name="basis", group=1, pads=[1, 1, 1, 1])
    coef = helper.make_node("Conv", ["h", "wc"], ["y"], name="coef")
    for node in (basis, coef):
        set_node_annotation(node, "role", "basis" if node is basis else "coefficient")
        set_node_annotation(node, "rank", 5)
        set_node_annotation(node, "layer", "conv")
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [basis, coef], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 6, 6])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 6, 6])],
        [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "wb"),
         numpy_helper.from_array(rng.standard_normal((3, 4, 1, 1)).astype(np.float32), "wc")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = get_pass("shrink")().run(model, PassContext())
    assert result.changed
    assert [get_node_annotation(n, "rank") for n in result.model.graph.node] == [4, 4]


def _vgg_nodes(flatten: str) -> tuple[list, dict]:
    """VGG-style: conv-relu-pool, conv-relu-pool, flatten 8×2×2, Gemm 32→6, relu, Gemm 6→4 (or MatMul)."""
    nodes = [
        conv("c1", "x", "W1", "a", "B1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        conv("c2", "p1", "W2", "b", "B2", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["b"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    if flatten == "flatten":
        nodes.append(helper.make_node("Flatten", ["p2"], ["f"], name="flat"))
    else:
        nodes.append(helper.make_node("Reshape", ["p2", "shape"], ["f"], name="flat"))
    nodes += [helper.make_node("Gemm", ["f", "Wfc", "Bfc"], ["h"], name="fc1", transB=1),
              helper.make_node("Relu", ["h"], ["hr"]),
              helper.make_node("Gemm", ["hr", "Wfc2", "Bfc2"], ["y"], name="fc2", transB=1)]
    b2 = np.array([0.0, 0.3, 0.1, 0.7, 0.2, 0.4, -0.2, 0.5], np.float32)
    inits = {"W1": w(6, 3, 3, 3), "B1": w(6), "W2": w(8, 6, 3, 3, dead_out=[0, 3, 6]), "B2": b2,
             "Wfc": w(6, 32), "Bfc": w(6), "Wfc2": w(4, 6), "Bfc2": w(4)}
    inits["Wfc"][:, 4 * 5:4 * 6] = 0  # the FC never reads channel 5 of c2
    if flatten == "reshape":
        inits["shape"] = np.array([-1, 32], np.int64)
    return nodes, inits


@pytest.mark.parametrize("flatten", ["flatten", "reshape"])
def test_dead_filters_cut_fc_input_columns_through_flatten(flatten):
    nodes, inits = _vgg_nodes(flatten)
    out, stats = shrink(build(nodes, inits, [2, 3, 8, 8], out_rank=2))
    # c2: filter 0 and 6 dead at 0 (removed), filter 3 constant relu(0.7) (folded into fc1's bias),
    # filter 5 unread by fc1 (removed with its block of 4 columns)
    assert weight_of(out, "c2").shape == (4, 6, 3, 3)
    assert weight_of(out, "fc1").shape == (6, 16)
    assert stats["removed"]["fc1"]["in_channels"] == 4
    fc1 = next(n for n in out.graph.node if n.name == "fc1")
    folded = get_initializer(out.graph, fc1.input[2])
    expected = inits["Bfc"] + 0.7 * inits["Wfc"][:, 12:16].sum(axis=1)
    np.testing.assert_allclose(folded, expected, rtol=1e-5)


def test_flatten_read_by_another_op_stays_frozen():
    nodes, inits = _vgg_nodes("flatten")
    nodes.append(helper.make_node("ReduceSum", ["f"], ["extra"], keepdims=0))
    model = build(nodes, inits, [1, 3, 8, 8], out_rank=2)
    model.graph.output.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, None))
    out, _ = shrink(model)
    assert weight_of(out, "fc1").shape == (6, 32)


def _dq(name, q, scale, zero=None, axis=None):
    """(DequantizeLinear node, its initializers) giving tensor ``name``."""
    inputs = [f"{name}.q", f"{name}.s"] + ([f"{name}.z"] if zero is not None else [])
    inits = {f"{name}.q": q, f"{name}.s": np.asarray(scale, np.float32)}
    if zero is not None:
        inits[f"{name}.z"] = zero
    kw = {} if axis is None else {"axis": axis}
    return helper.make_node("DequantizeLinear", inputs, [name], **kw), inits


def _fake_quant(x, y, scale, zero):
    """Per-tensor QuantizeLinear → DequantizeLinear of activation x, as the QDQ writers emit it."""
    inits = {f"{y}.s": np.float32(scale), f"{y}.z": np.uint8(zero)}
    return [helper.make_node("QuantizeLinear", [x, f"{y}.s", f"{y}.z"], [f"{y}.q"]),
            helper.make_node("DequantizeLinear", [f"{y}.q", f"{y}.s", f"{y}.z"], [y])], inits


def _codes(*shape, dead_out=(), dead_in=(), axis_out=0):
    q = RNG.integers(-3, 4, shape).astype(np.int8)
    index = [slice(None)] * len(shape)
    for rows in (dead_out,):
        index[axis_out] = list(rows)
        q[tuple(index)] = 0 if rows else q[tuple(index)]
    if dead_in:
        index = [slice(None)] * len(shape)
        index[1 - axis_out if len(shape) == 2 else 1] = list(dead_in)
        q[tuple(index)] = 0
    return q


def _qdq_lenet(gemm_trans_b: int):
    """conv(int8 per-channel, int32 bias) → fake-quant → conv → Flatten → fake-quant → Gemm(int8) → Relu → Gemm."""
    nodes, inits = [], {}
    for name, q, scale, zero, axis in [
        ("w1", _codes(6, 1, 3, 3, dead_out=[1, 4]), RNG.uniform(0.05, 0.2, 6), np.zeros(6, np.int8), 0),
        ("b1", np.array([5, 0, -3, 7, 0, 2], np.int32), RNG.uniform(0.001, 0.01, 6), None, 0),
        ("w2", _codes(5, 6, 3, 3, dead_out=[3]), RNG.uniform(0.05, 0.2, 5), np.zeros(5, np.int8), 0),
    ]:
        node, more = _dq(name, q, scale, zero, axis)
        nodes.append(node)
        inits.update(more)
    fc_axis = 0 if gemm_trans_b else 1
    fc = _codes(*((4, 5 * 4) if gemm_trans_b else (5 * 4, 4)), axis_out=fc_axis)
    # fc unit 2 reads nothing, and no fc reads conv2's channel 0 (columns 0..3)
    (fc[2] if gemm_trans_b else fc[:, 2])[...] = 0
    (fc[:, 0:4] if gemm_trans_b else fc[0:4])[...] = 0
    node, more = _dq("wf", fc, RNG.uniform(0.05, 0.2, 4), np.zeros(4, np.int8), fc_axis)
    nodes.append(node)
    inits.update(more)
    out_codes = _codes(3, 4)
    out_codes[:, 2] = 0
    node, more = _dq("wo", out_codes, np.float32(0.1))
    nodes.append(node)
    inits.update(more)
    quant1, more1 = _fake_quant("r1", "a1", 0.05, 0)
    quant2, more2 = _fake_quant("f", "a2", 0.05, 128)
    inits.update(more1 | more2 | {"bf": RNG.standard_normal(4).astype(np.float32), "bo": np.zeros(3, np.float32)})
    nodes += [conv("c1", "x", "w1", "h1", "b1"), helper.make_node("Relu", ["h1"], ["r1"]), *quant1,
              conv("c2", "a1", "w2", "h2"), helper.make_node("Flatten", ["h2"], ["f"]), *quant2,
              helper.make_node("Gemm", ["a2", "wf", "bf"], ["g"], name="fc", transB=gemm_trans_b),
              helper.make_node("Relu", ["g"], ["rg"]),
              helper.make_node("Gemm", ["rg", "wo", "bo"], ["y"], name="out", transB=1)]
    return nodes, inits


def quantized_weight(model, node_name):
    node = next(n for n in model.graph.node if n.name == node_name)
    dq = next(n for n in model.graph.node if node.input[1] in n.output)
    return get_initializer(model.graph, dq.input[0]), get_initializer(model.graph, dq.input[1])


@pytest.mark.parametrize("trans_b", [1, 0])
def test_quantized_graph_is_cut_in_its_integer_codes(trans_b):
    nodes, inits = _qdq_lenet(trans_b)
    model = build(nodes, inits, [2, 1, 6, 6], out_rank=2)
    out, stats = shrink(model)  # onnxruntime oracle inside: outputs unchanged
    q1, s1 = quantized_weight(out, "c1")
    assert q1.dtype == np.int8 and q1.shape == (4, 1, 3, 3)  # dead filters 1 and 4 (relu(b) = 0 or unread) go
    np.testing.assert_array_equal(s1, np.delete(inits["w1.s"], [1, 4]))
    q2, s2 = quantized_weight(out, "c2")
    assert q2.shape == (3, 4, 3, 3)  # filter 3 dead at 0, channel 0 read by no fc column
    qf, sf = quantized_weight(out, "fc")
    assert qf.shape == ((3, 12) if trans_b else (12, 3)) and sf.shape == (3,)
    assert stats["removed"]["fc"]["out_channels"] == 1


def test_constant_channel_does_not_fold_into_a_quantized_bias():
    nodes, inits = _qdq_lenet(1)
    inits["w2.q"][:, 1] = RNG.integers(1, 3, (5, 3, 3))  # c2 now reads c1's dead filter 1: relu(0) = 0, goes
    inits["b1.q"][4] = 7  # and dead filter 4 = relu(7·s) > 0, which a float bias of c2 would absorb
    inits["w2.q"][:, 4] = 1
    inits["b2.q"], inits["b2.s"] = np.zeros(5, np.int32), np.full(5, 0.01, np.float32)
    node, _ = _dq("b2", inits["b2.q"], inits["b2.s"], axis=0)
    nodes.insert(0, node)
    next(n for n in nodes if n.name == "c2").input.append("b2")
    out, stats = shrink(build(nodes, inits, [1, 1, 6, 6], out_rank=2))
    assert quantized_weight(out, "c2")[0].shape[1] == 5  # only filter 1 went from c2's inputs
    assert any("quantized bias" in s["reason"] for s in stats["skipped"])


def test_scale_per_input_channel_leaves_the_layer_alone():
    nodes, inits = _qdq_lenet(1)
    inits["w2.s"], inits["w2.z"] = RNG.uniform(0.05, 0.2, 6).astype(np.float32), np.zeros(6, np.int8)
    next(n for n in nodes if n.output == ["w2"]).attribute[0].i = 1
    out, _ = shrink(build(nodes, inits, [1, 1, 6, 6], out_rank=2))
    assert quantized_weight(out, "c2")[0].shape == (5, 6, 3, 3)


def test_onnxruntime_quantize_static_output_is_cut_exactly(tmp_path):
    """The QDQ graph onnxruntime's own quantizer writes (per-channel s8 weights, s32 biases, u8 activations)."""
    from pimc.runtime.ort_graph import quantize_static_baseline

    nodes, inits = _vgg_nodes("flatten")
    onnx.save(build(nodes, inits, [1, 3, 8, 8], out_rank=2), tmp_path / "f.onnx")
    calibration = RNG.standard_normal((16, 3, 8, 8)).astype(np.float32)
    quantize_static_baseline(tmp_path / "f.onnx", tmp_path / "q.onnx", calibration)
    out, stats = shrink(normalize(onnx.load(str(tmp_path / "q.onnx"))))
    # c2's filters 0 and 6 (zero after the Relu) and 5 (unread) go; filter 3 = relu(0.7) stays, because fc1's
    # int32 bias cannot take 0.7·ΣW exactly
    assert quantized_weight(out, "c2")[0].shape == (5, 6, 3, 3)
    assert quantized_weight(out, "fc1")[0].shape == (6, 20)
    assert any("quantized bias" in s["reason"] for s in stats["skipped"])
