"""cim-emulate: exact at high ADC resolution, a numpy oracle per row tile, noise, roles, cost, accuracy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pimc.app.compile import CompileOptions, compile_model
from pimc.backends.cim import CimConfig, CimTarget
from pimc.compiler import annotations as ann
from pimc.compiler.errors import PimcError
from pimc.compiler.loader import infer_shapes
from pimc.compiler.passbase import PassContext, get_pass
from pimc.compiler.verify import run_model
from pimc.models import bundled_model_path

EMULATE = get_pass("cim-emulate")


def _model(nodes, inits, x_shape, y_shape, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    return infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), "test")


def mixed_net(seed: int = 0) -> onnx.ModelProto:
    """Conv (bias, stride, pads) → Relu → grouped Conv → Flatten → Gemm (transB, alpha, beta) → MatMul."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 0, 1, 2],
                         strides=[2, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1] * 4, group=4),
        helper.make_node("Flatten", ["c2"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["g"], name="fc", transB=1, alpha=0.5, beta=2.0),
        helper.make_node("MatMul", ["g", "w4"], ["y"], name="mm"),
    ]
    inits = {
        "w1": rng.standard_normal((16, 12, 3, 3)), "b1": rng.standard_normal(16),
        "w2": rng.standard_normal((32, 4, 3, 3)), "w3": rng.standard_normal((10, 32 * 4 * 9)) * 0.1,
        "b3": rng.standard_normal(10), "w4": rng.standard_normal((10, 7)),
    }
    return _model(nodes, inits, [2, 12, 8, 9], [2, 7])


def _feeds(model, count=2, seed=1):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((2, 12, 8, 9)).astype(np.float32)} for _ in range(count)]


def emulate(model, feeds=None, **opts):
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    result = EMULATE(**opts).run(copy, PassContext(calibration=feeds, seed=0))
    out = infer_shapes(result.model, "test")
    onnx.checker.check_model(out, full_check=True)
    return out, result.stats


def test_high_resolution_adc_without_noise_reproduces_the_model():
    model = mixed_net()
    feeds = _feeds(model)
    out, stats = emulate(model, feeds, adc_bits=16, sigma=0.0, full_scale=100.0)
    assert stats["layers"]["conv1"]["tiles"] == 2  # K = 12·9 = 108 → 64 + 44
    assert stats["layers"]["conv2"]["tiles"] == 1
    assert stats["layers"]["fc"]["tiles"] == 18 and stats["skipped"] == []
    ref = run_model(model, feeds)
    got = run_model(out, feeds)
    for a, b in zip(ref, got, strict=True):
        assert np.max(np.abs(a[0] - b[0])) <= 2e-3 * np.max(np.abs(a[0]))


def test_each_row_tile_is_quantized_and_clipped_like_the_numpy_oracle():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 16, 3, 3)).astype(np.float32)
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 3])],
                   {"w": w}, [1, 16, 5, 5], [1, 5, 3, 3])
    x = rng.standard_normal((1, 16, 5, 5)).astype(np.float32)
    bits, pct = 4, 90.0
    out, stats = emulate(model, [{"x": x}], adc_bits=bits, sigma=0.0, full_scale=pct)
    # oracle: im2col, per-channel scale max|W|/127, tiles of 64 rows, one ADC range per layer
    cols = np.stack([x[0, :, i:i + 3, j:j + 3].reshape(-1) for i in range(3) for j in range(3)])  # [9, 144]
    wm = w.reshape(5, -1)
    g = np.abs(wm).max(axis=1) / 127
    parts = np.stack([cols[:, t * 64:(t + 1) * 64] @ (wm[:, t * 64:(t + 1) * 64] / g[:, None]).T
                      for t in range(3)])  # [3, 9, 5]
    fs = np.percentile(np.abs(parts), pct)
    lsb = fs / 2 ** (bits - 1)
    codes = np.clip(np.round(parts / lsb), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    expected = (codes.sum(axis=0) * lsb * g).T.reshape(1, 5, 3, 3)
    assert stats["layers"]["conv"]["full_scale"] == pytest.approx(fs, rel=1e-4)
    assert stats["layers"]["conv"]["calibration_clip_fraction"] > 0
    got = run_model(out, [{"x": x}])[0][0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_temporal_noise_is_seeded_and_scaled_by_sigma():
    rng = np.random.default_rng(0)
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                   {"w": rng.standard_normal((64, 32))}, [4096, 64], [4096, 32])
    feeds = [{"x": rng.standard_normal((4096, 64)).astype(np.float32)}]
    clean, _ = emulate(model, feeds, adc_bits=12, sigma=0.0)
    sigma = 0.01
    noisy, stats = emulate(model, feeds, adc_bits=12, sigma=sigma)
    a = run_model(clean, feeds)[0][0]
    b1 = run_model(noisy, feeds)[0][0]
    b2 = run_model(noisy, feeds)[0][0]
    np.testing.assert_array_equal(b1, b2)  # same seed, new session → same draw
    gain = np.abs(numpy_helper.to_array(model.graph.initializer[0])).max(axis=0) / 127
    err = (b1 - a) / gain  # back to integer-weight units
    fs = stats["layers"]["mm"]["full_scale"]
    assert np.std(err) == pytest.approx(sigma * fs, rel=0.1)
    assert abs(np.mean(err)) < 0.05 * sigma * fs


def test_static_noise_is_a_fixed_pattern_shared_by_samples():
    rng = np.random.default_rng(0)
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 3])],
                   {"w": rng.standard_normal((4, 8, 3, 3))}, [3, 8, 6, 6], [3, 4, 4, 4])
    x = np.repeat(rng.standard_normal((1, 8, 6, 6)).astype(np.float32), 3, axis=0)
    noisy, _ = emulate(model, [{"x": x}], sigma=0.05, noise="static")
    assert not any(n.op_type == "RandomNormalLike" for n in noisy.graph.node)
    y = run_model(noisy, [{"x": x}])[0][0]
    np.testing.assert_array_equal(y[0], y[1])
    clean, _ = emulate(model, [{"x": x}], sigma=0.0)
    assert not np.allclose(run_model(clean, [{"x": x}])[0][0], y)


def test_inserted_nodes_are_annotated_and_the_cost_is_unchanged():
    model = mixed_net()
    ann.set_node_annotation(model.graph.node[0], "fused_activation", "Relu")
    ann.set_node_annotation(model.graph.node[0], "neg_fraction", 0.4)
    out, _ = emulate(model, _feeds(model), sigma=0.01)
    names = {n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
    inserted = [n for n in out.graph.node if n.op_type != "Relu" and n.op_type != "Flatten"]
    assert inserted and all(ann.get_node_annotation(n, "role") == "cim_emulation" for n in inserted)
    stacked = {n.name: n for n in out.graph.node if ann.get_node_annotation(n, "cim_tiles") is not None}
    assert set(stacked) == names
    assert ann.get_node_annotation(stacked["conv1"], "neg_fraction") == 0.4
    target, hw = CimTarget(), CimConfig()
    before = target.cost(target.lower(model, hw), hw)
    after = target.cost(target.lower(out, hw), hw)
    assert after.latency_cycles == before.latency_cycles
    assert after.energy_j == pytest.approx(before.energy_j)
    assert set(after.extra["cim_emulation"]) == names
    mismatch = target.cost(target.lower(out, CimConfig(rows=128)), CimConfig(rows=128))
    assert "rows" in mismatch.extra["warnings"][0]


def test_pattern_packed_layer_uses_fewer_tiles_and_stays_exact():
    rng = np.random.default_rng(2)
    library = [[0, 1, 4, 7], [2, 4, 6, 8]]
    ids = rng.integers(-1, 2, (6, 32)).astype(np.int16)
    mask = np.zeros((6, 32, 9), bool)
    for o in range(6):
        for i in range(32):
            if ids[o, i] >= 0:
                mask[o, i, library[ids[o, i]]] = True
    w = (rng.standard_normal((6, 32, 3, 3)) * mask.reshape(6, 32, 3, 3)).astype(np.float32)
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 3], pads=[1] * 4)],
                   {"w": w}, [1, 32, 5, 5], [1, 6, 5, 5])
    ann.set_node_annotation(model.graph.node[0], "pattern_library", library)
    ann.set_node_map(model, model.graph.node[0], "pattern", ids)
    feeds = [{"x": rng.standard_normal((1, 32, 5, 5)).astype(np.float32)}]
    out, stats = emulate(model, feeds, adc_bits=16, sigma=0.0, full_scale=100.0)
    assert stats["layers"]["conv"]["tiles"] == int(np.max(-(-mask.reshape(6, -1).sum(1) // 64)))
    assert stats["layers"]["conv"]["tiles"] < 5  # dense: ceil(288 / 64) = 5
    ref, got = run_model(model, feeds)[0][0], run_model(out, feeds)[0][0]
    assert np.max(np.abs(ref - got)) <= 2e-3 * np.max(np.abs(ref))
    stacked = next(n for n in out.graph.node if n.name == "conv")
    assert ann.get_node_map(out, stacked, "pattern") is not None


def test_old_opset_and_non_constant_weights():
    model = _model([helper.make_node("MatMul", ["x", "x"], ["y"], name="mm")], {}, [4, 4], [4, 4])
    out, stats = emulate(model, [{"x": np.eye(4, dtype=np.float32)}])
    assert stats["skipped"][0]["node"] == "mm"
    old = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], {}, [4], [4], opset=10)
    with pytest.raises(PimcError):
        EMULATE().run(old, PassContext())


def test_digits_accuracy_degrades_with_sigma(tmp_path):
    from pimc.runtime.datasets import load_dataset
    from pimc.runtime.session import evaluate

    data = load_dataset("digits", (1, 8, 8))
    accuracy = {}
    for sigma in (0.0, 0.3):
        out = tmp_path / f"e{sigma}.onnx"
        compile_model(CompileOptions(
            input=str(bundled_model_path()), target="cim", output=str(out), data="digits",
            passes="fold-constants,fold-batchnorm,fuse-relu,cim-emulate,cleanup", calibration_samples=16, max_accuracy_drop=100.0,
            sets=(f"cim-emulate.sigma={sigma}",),
        ))
        accuracy[sigma] = evaluate(str(out), data, repeats=1)["accuracy"]
    reference = evaluate(str(bundled_model_path()), data, repeats=1)["accuracy"]
    assert accuracy[0.0] >= reference - 0.02
    assert accuracy[0.3] < accuracy[0.0] - 0.05
