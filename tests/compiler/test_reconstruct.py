"""Layer-wise reconstruction against reference oracles: im2col against onnxruntime's Conv, the batched
masked ridge solve against per-row numpy least squares, and the statistics' error against a direct sum."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pimc.compiler.reconstruct import (
    ConvGeometry,
    capture,
    conv_stats,
    dense_stats,
    im2col,
    relative_error,
    solve,
)
from pimc.compiler.sessions import make_session


def _conv_model(weight: np.ndarray, x_shape: tuple[int, ...], **attrs) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attrs)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("strides,pads,dilations", [
    ((1, 1), (0, 0, 0, 0), (1, 1)), ((2, 1), (1, 0, 2, 1), (1, 1)), ((1, 2), (1, 1, 1, 1), (2, 1)),
])
def test_im2col_times_weight_equals_onnxruntime_conv(strides, pads, dilations):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((5, 3, 3, 2)).astype(np.float32)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    model = _conv_model(weight, x.shape, strides=list(strides), pads=list(pads), dilations=list(dilations))
    y = make_session(model).run(None, {"x": x})[0]
    geo = ConvGeometry((3, 2), strides, pads, dilations)
    rows = im2col(x, geo) @ weight.reshape(5, -1).T
    n, c, oh, ow = y.shape
    np.testing.assert_allclose(rows.reshape(n, oh, ow, c).transpose(0, 3, 1, 2), y, rtol=1e-4, atol=1e-4)


def test_same_upper_pads_follow_onnx():
    node = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])
    geo = ConvGeometry.of(node, (3, 3), (8, 7))
    assert geo.pads == (0, 1, 1, 1)


def test_masked_solve_matches_per_row_least_squares():
    rng = np.random.default_rng(1)
    x_comp = rng.standard_normal((400, 12))
    x_ref = x_comp + 0.1 * rng.standard_normal(x_comp.shape)
    w, b = rng.standard_normal((12, 5)), rng.standard_normal(5)
    support = rng.random((5, 12)) > 0.5
    weights, bias = solve(dense_stats(x_comp, x_ref, w, b), support, ridge=0.0)
    design = np.hstack([x_comp, np.ones((400, 1))])
    target = x_ref @ w + b
    for o in range(5):
        cols = np.append(np.flatnonzero(support[o]), 12)
        oracle = np.linalg.lstsq(design[:, cols], target[:, o], rcond=None)[0]
        np.testing.assert_allclose(weights[o, support[o]], oracle[:-1], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(bias[o], oracle[-1], rtol=1e-7, atol=1e-9)
        assert not weights[o, ~support[o]].any()


def test_full_support_recovers_the_reference_layer_exactly():
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((4, 3, 3, 3))
    bias = rng.standard_normal(4)
    x = rng.standard_normal((3, 3, 7, 7))
    stats = conv_stats(x, x, weight, bias, ConvGeometry((3, 3), pads=(1, 1, 1, 1)))
    fitted, fitted_bias = solve(stats, np.ones((4, 27), dtype=bool), ridge=0.0)
    np.testing.assert_allclose(fitted, weight.reshape(4, -1), atol=1e-8)
    np.testing.assert_allclose(fitted_bias, bias, atol=1e-8)
    assert relative_error(stats, fitted, fitted_bias) < 1e-12


def test_relative_error_equals_the_direct_sum():
    rng = np.random.default_rng(3)
    x_comp, x_ref = rng.standard_normal((300, 6)), rng.standard_normal((300, 6))
    w, b = rng.standard_normal((6, 4)), rng.standard_normal(4)
    stats = dense_stats(x_comp, x_ref, w, b)
    guess_w, guess_b = rng.standard_normal((4, 6)), rng.standard_normal(4)
    y = x_ref @ w + b
    direct = np.sum((x_comp @ guess_w.T + guess_b - y) ** 2) / np.sum(y**2)
    assert relative_error(stats, guess_w, guess_b) == pytest.approx(direct, rel=1e-9)


def test_refit_beats_pruning_alone_on_a_corrupted_input():
    rng = np.random.default_rng(4)
    weight = rng.standard_normal((6, 4, 3, 3))
    x_ref = rng.standard_normal((4, 4, 8, 8))
    x_comp = x_ref * 0.8 + 0.05  # what the compressed layers before hand on
    stats = conv_stats(x_comp, x_ref, weight, None, ConvGeometry((3, 3), pads=(1, 1, 1, 1)))
    keep = np.abs(weight.reshape(6, -1)) > 0.5
    pruned = np.where(keep, weight.reshape(6, -1), 0.0)
    refit, refit_bias = solve(stats, keep)
    assert relative_error(stats, refit, refit_bias) < 0.5 * relative_error(stats, pruned, np.zeros(6))
    assert not refit[~keep].any()


def test_capture_returns_inputs_and_intermediates():
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((2, 1, 1, 1)).astype(np.float32)
    model = _conv_model(weight, (1, 1, 2, 2))
    feeds = [{"x": rng.standard_normal((1, 1, 2, 2)).astype(np.float32)} for _ in range(3)]
    got = capture(model, ["x", "y"], feeds)
    assert got["x"].shape == (3, 1, 2, 2) and got["y"].shape == (3, 2, 2, 2)
    np.testing.assert_allclose(got["y"][1, 0], weight[0, 0, 0, 0] * feeds[1]["x"][0, 0], rtol=1e-6)
