"""quantize pass: QDQ structure, grids, calibration, annotations, opset handling, accuracy on digits."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pimc.app.compile import CompileOptions, compile_model
from pimc.compiler import annotations as ann
from pimc.compiler.errors import PimcError
from pimc.compiler.loader import normalize
from pimc.compiler.passbase import PassContext, get_pass
from pimc.compiler.pipeline import PassManager
from pimc.compiler.workload import extract_workload
from pimc.models import bundled_model_path
from pimc.runtime.datasets import load_dataset
from pimc.runtime.session import evaluate


def small_cnn(opset: int = 17, seed: int = 0) -> onnx.ModelProto:
    """Conv(3→8) → Relu → Conv(8→6, stride 2) → Relu → GAP → Flatten → Gemm(6→4)."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w1"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b1"),
        numpy_helper.from_array(rng.standard_normal((6, 8, 3, 3)).astype(np.float32) * 0.2, "w2"),
        numpy_helper.from_array(rng.standard_normal(6).astype(np.float32) * 0.1, "b2"),
        numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32) * 0.1, "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return normalize(model)


def feeds(n: int = 32, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def run_pass(model: onnx.ModelProto, name: str = "quantize", calib=None, **opts) -> tuple[onnx.ModelProto, dict]:
    p = get_pass(name)(**opts)
    manager = PassManager([p], PassContext(calibration=calib or feeds(), seed=0, data_spec="test"))
    out = manager.run(model)
    return out, manager.records[0].stats


def ort_run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


def test_int8_structure_annotations_and_accuracy(tmp_path):
    x = np.concatenate([f["x"] for f in feeds(16, seed=5)])
    ref = ort_run(small_cnn(), x)[0]
    fused, _ = run_pass(small_cnn())
    assert [n.op_type for n in fused.graph.node].count("QuantizeLinear") > 3  # outputs quantized too
    q, stats = run_pass(small_cnn(), layout="inputs", reduce_range=True)  # onnxruntime's kernels run it
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("QuantizeLinear") == 3 and ops.count("DequantizeLinear") == 3 + 3 + 3
    onnx.checker.check_model(q, full_check=True)
    out = ort_run(q, x)[0]
    assert np.abs(out - ref).max() / np.abs(ref).max() < 0.03
    assert np.abs(out - ref).max() > 0  # it really quantizes
    path = tmp_path / "q.onnx"
    onnx.save(q, path)
    loaded = onnx.load(path)
    for name in ("conv1", "conv2", "fc"):
        n = node(loaded, name)
        assert ann.get_node_annotation(n, "weight_bits") == 7  # reduce_range: the 7-bit grid
        assert ann.get_node_annotation(n, "act_bits") == 8
    tensors = ann.tensor_annotations(loaded)
    assert tensors[node(loaded, "conv2").input[1]] == {"dtype": "INT7", "bits": 7}
    assert tensors[node(loaded, "conv2").input[0]] == {"dtype": "UINT8", "bits": 8}
    assert tensors[node(loaded, "conv1").input[2]] == {"dtype": "INT32", "bits": 32}
    assert {s["node"] for s in stats["skipped"]} == set()


def test_weight_codes_lie_on_the_n_bit_grid():
    w2 = init(small_cnn(), "w2")
    q, _ = run_pass(small_cnn(), bits=4, act_bits=8)
    dq = next(n for n in q.graph.node if n.output[0] == node(q, "conv2").input[1])
    codes, scale = init(q, dq.input[0]), init(q, dq.input[1])
    assert codes.dtype == np.int8 and scale.shape == (6,)
    assert np.abs(codes).max() == 7
    assert (np.abs(codes).reshape(6, -1).max(axis=1) == 7).all()
    expected = np.clip(np.round(w2 / (np.abs(w2).reshape(6, -1).max(1) / 7).reshape(6, 1, 1, 1)), -7, 7)
    np.testing.assert_array_equal(codes, expected)
    assert ann.get_node_annotation(node(q, "conv2"), "weight_bits") == 4
    assert ann.tensor_annotations(q)[dq.input[0]] == {"dtype": "INT4", "bits": 4}


def test_gemm_matches_an_independent_numpy_reference():
    model = small_cnn()
    q, _ = run_pass(small_cnn(), calib=feeds(8), bits=8, quantize_bias=False)
    probe = onnx.ModelProto()
    probe.CopyFrom(q)
    fc = node(q, "fc")
    probe.graph.output.append(helper.make_empty_tensor_value_info(fc.input[0]))
    probe.graph.output.append(helper.make_empty_tensor_value_info("f"))
    x = feeds(1, seed=9)[0]["x"]
    y, act_dq, f = ort_run(probe, x)
    f_range = np.concatenate([np.asarray(ort_run(model_with_output(model, "f"), fd["x"])[1]) for fd in feeds(8)])
    lo, hi = min(f_range.min(), 0.0), max(f_range.max(), 0.0)
    scale = (hi - lo) / 255
    zero = np.clip(np.round(-lo / scale), 0, 255)
    x_hat = (np.clip(np.round(f / scale) + zero, 0, 255) - zero) * scale
    np.testing.assert_allclose(act_dq, x_hat, rtol=1e-5, atol=1e-6)
    w = init(model, "fc_w")
    s = np.abs(w).max(axis=1) / 127
    w_hat = np.clip(np.round(w / s[:, None]), -127, 127) * s[:, None]
    np.testing.assert_allclose(y, x_hat @ w_hat.T + init(model, "fc_b"), rtol=1e-4, atol=1e-5)


def model_with_output(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_empty_tensor_value_info(tensor))
    return probe


@pytest.mark.parametrize("scheme,levels", [("asymmetric", 16), ("symmetric", 15)])
def test_low_bit_activations_take_at_most_2_to_the_n_values(scheme, levels):
    q, stats = run_pass(small_cnn(), bits=4, act_scheme=scheme)
    conv2 = node(q, "conv2")
    probe = model_with_output(q, conv2.input[0])
    x = np.concatenate([f["x"] for f in feeds(8, seed=3)]) * 3.0  # beyond the calibrated range: Clip matters
    values = np.unique(ort_run(probe, x)[1])
    assert 2 < len(values) <= levels
    assert ann.get_node_annotation(conv2, "act_bits") == 4


def test_percentile_range_is_inside_minmax_range():
    _, minmax = run_pass(small_cnn(), calibration="minmax")
    _, pct = run_pass(small_cnn(), calibration="percentile", percentile=99.0)
    for tensor, entry in minmax["activations"].items():
        lo, hi = pct["activations"][tensor]["range"]
        assert entry["range"][0] <= lo and hi <= entry["range"][1]
        assert hi < entry["range"][1]


def test_hybrid_bits_for_decomposed_layers_and_exclude():
    model = small_cnn()
    ann.set_node_annotation(node(model, "conv1"), "role", "basis")
    ann.set_node_annotation(node(model, "conv2"), "role", "coefficient")
    ann.set_node_annotation(node(model, "conv2"), "layer", "conv2_orig")
    q, stats = run_pass(model, bits=8, basis_bits=6, coefficient_bits=3, exclude=["fc"])
    assert ann.get_node_annotation(node(q, "conv1"), "weight_bits") == 6
    conv2 = node(q, "conv2")
    assert ann.get_node_annotation(conv2, "weight_bits") == 3
    assert ann.get_node_annotation(conv2, "role") == "coefficient"
    assert ann.get_node_annotation(conv2, "layer") == "conv2_orig"
    assert ann.get_node_annotation(node(q, "fc"), "weight_bits") is None
    assert node(q, "fc").input[1] == "fc_w"
    assert stats["skipped"] == [{"node": "fc", "reason": "excluded by option"}]
    records = extract_workload(q).by_name()
    assert records["conv2"].weight_bits == 3 and records["conv1"].weight_bits == 6
    assert records["conv2"].act_bits == 8 and records["fc"].weight_bits is None


def test_workload_recovers_the_dequantized_weight():
    q, _ = run_pass(small_cnn(), bits=8)
    rec = extract_workload(q).by_name()["conv2"]
    w = init(small_cnn(), "w2")
    assert rec.weight.shape == w.shape
    assert np.abs(rec.weight - w).max() <= np.abs(w).max() / 127


def test_second_run_skips_quantized_nodes():
    q, _ = run_pass(small_cnn())
    p = get_pass("quantize")()
    result = p.run(q, PassContext(calibration=feeds(4)))
    assert not result.changed
    assert {s["reason"] for s in result.stats["skipped"]} == {"already quantized"}


def test_old_opset_is_converted_to_13():
    model = small_cnn(opset=11)
    q, stats = run_pass(model, bits=8)
    assert stats["opset_converted"] == {"from": 11, "to": 13}
    assert any(o.domain in ("", "ai.onnx") and o.version == 13 for o in q.opset_import)
    onnx.checker.check_model(q, full_check=True)
    assert ann.get_node_annotation(node(q, "conv1"), "weight_bits") == 8


def test_bad_options_are_user_errors():
    with pytest.raises(PimcError):
        get_pass("quantize")(bits=9)
    with pytest.raises(PimcError):
        get_pass("quantize")(calibration="kl")


def test_int8_on_bundled_digits_model_stays_within_one_point(tmp_path):
    out = tmp_path / "q.onnx"
    model, report = compile_model(CompileOptions(
        input=str(bundled_model_path()), target="onnxruntime", output=str(out), data="digits",
        passes="fold-batchnorm,quantize",
    ))
    data = load_dataset("digits", (1, 8, 8))
    fp32 = evaluate(str(bundled_model_path()), data, repeats=1)["accuracy"]
    int8 = evaluate(str(out), data, repeats=1)["accuracy"]
    assert int8 >= fp32 - 0.01
    # int8 layout: inputs and outputs of every fused kernel
    assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(out).graph.node) == 7


def test_auto_weight_bits_without_labelled_data_keep_eight_bits():
    q, stats = run_pass(small_cnn(), weight_bits="auto")
    assert all(v["weight_bits"] == 8 for v in stats["quantized"].values())
    assert stats["bit_choice"]["chosen"] == []
    assert "no accuracy budget" in stats["bit_choice"]["note"]


def test_weight_bits_accepts_auto_or_two_to_eight():
    from pimc.compiler.errors import PimcError

    assert get_pass("quantize")(weight_bits="4").opts["weight_bits"] == 4
    assert get_pass("quantize")(weight_bits="AUTO").opts["weight_bits"] == "auto"
    for bad in ("9", "1", "four"):
        with pytest.raises(PimcError, match="weight_bits"):
            get_pass("quantize")(weight_bits=bad)


def test_auto_weight_bits_on_the_bundled_model_choose_fewer_bits_within_budget(tmp_path):
    from pimc.app.compile import CompileOptions, compile_model
    from pimc.models import bundled_model_path

    _, report = compile_model(CompileOptions(
        input=str(bundled_model_path()), target="onnxruntime", output=str(tmp_path / "o.onnx"), data="digits",
        passes="fold-constants,eliminate-identity,fold-batchnorm,quantize,cleanup", sets=("quantize.weight_bits=auto",),
    ))
    assert report["accuracy"]["drop_points"] <= 1.0 + 1e-9
    stats = next(p for p in report["passes"] if p["name"] == "quantize")["stats"]
    chosen = stats["bit_choice"]["chosen"]
    assert chosen and all(c["weight_bits"] < 8 and "damage" in c for c in chosen)
    for c in chosen:
        assert stats["quantized"][c["node"]]["weight_bits"] == c["weight_bits"]


def _weight_codes(model: onnx.ModelProto) -> list[np.ndarray]:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [inits[n.input[0]] for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.int8]


def test_reduce_range_keeps_u8s8_pair_sums_inside_int16():
    """onnxruntime's x86 u8×s8 kernels without VNNI add two products in int16 (VPMADDUBSW): with codes
    ≤ 63 two products of a uint8 activation stay ≤ 2·255·63 = 32130 < 32767, so nothing saturates."""
    reduced, stats = run_pass(small_cnn(), reduce_range=True)
    assert stats["reduce_range"] is True
    assert max(int(np.abs(c).max()) for c in _weight_codes(reduced)) <= 63
    assert 2 * 255 * 63 <= np.iinfo(np.int16).max
    full, stats = run_pass(small_cnn())
    assert stats["reduce_range"] is False  # the default outside an onnxruntime compile
    assert max(int(np.abs(c).max()) for c in _weight_codes(full)) == 127


def test_only_the_onnxruntime_target_reduces_the_range_by_default():
    for target, reduced in (("cim", False), ("escalate", False), ("onnxruntime", True)):
        result = get_pass("quantize")().run(small_cnn(), PassContext(target=target, calibration=feeds(8)))
        assert result.stats["reduce_range"] is reduced
        bits = {ann.get_node_annotation(n, "weight_bits") for n in result.model.graph.node
                if n.op_type in ("Conv", "Gemm")}
        assert bits == {7 if reduced else 8}
