"""Workload records: ConvTranspose (scatter MACs), Conv1d/Conv3d, grouped/dilated, auto_pad, MatMul rows,
and the MAC statistics that count them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pimc.compiler.loader import infer_shapes
from pimc.compiler.stats import model_stats
from pimc.compiler.workload import extract_workload, scatter_record


def _model(nodes, inputs, inits, opset: int = 17) -> onnx.ModelProto:
    outs = [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "g", inputs, outs, inits)
    return infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), "test")


def _w(name: str, *shape: int, zeros: int = 0) -> onnx.TensorProto:
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32).ravel()
    w[:zeros] = 0.0
    return numpy_helper.from_array(w.reshape(shape), name)


def _x(*shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))


@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose_macs_scatter_each_input_pixel(group: int):
    cin, cout, k, h = 4, 6, 3, 5
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", strides=[2, 2], group=group,
                            pads=[1, 1, 1, 1], output_padding=[1, 1])
    model = _model([node], [_x(2, cin, h, h)], [_w("w", cin, cout // group, k, k, zeros=10)])
    (rec,) = extract_workload(model).layers
    assert (rec.op, rec.out_h, rec.out_w, rec.groups) == ("ConvTranspose", 10, 10, group)
    assert rec.macs == 2 * cin * h * h * (cout // group) * k * k
    assert rec.effective_macs == 2 * h * h * (rec.params - 10)
    stats = model_stats(model)
    assert (stats.macs, stats.effective_macs) == (rec.macs, rec.effective_macs)


def test_scatter_record_is_a_grouped_1x1_conv_with_the_same_macs():
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", strides=[2, 2], group=2)
    model = _model([node], [_x(1, 4, 3, 3)], [_w("w", 4, 3, 2, 2)])
    (rec,) = extract_workload(model).layers
    gemm = scatter_record(rec)
    assert (gemm.op, gemm.kernel, gemm.groups, gemm.cout, gemm.out_h) == ("Conv", (1, 1), 2, 2 * 3 * 4, 3)
    assert gemm.weight.shape == (24, 2, 1, 1)
    assert (gemm.macs, gemm.effective_macs) == (rec.macs, rec.effective_macs)
    # group 1 of the scattered weight holds input channels 2, 3 and the kernels of output channels 3..5
    w = numpy_helper.to_array(model.graph.initializer[0])
    assert np.array_equal(gemm.weight[12:, :, 0, 0], w[2:].reshape(2, 12).T)
    assert gemm.annotations["lowered_from"] == "ConvTranspose"


def test_conv1d_and_conv3d_records_keep_exact_macs():
    c1 = helper.make_node("Conv", ["x", "w"], ["y"], name="c1", pads=[1, 1], dilations=[2], group=2)
    model = _model([c1], [_x(1, 4, 20)], [_w("w", 6, 2, 3)])
    (rec,) = extract_workload(model).layers
    assert (rec.h, rec.out_h, rec.kernel, rec.out_w, rec.spatial_dims) == (1, 1, (1, 3), 18, 1)
    assert rec.macs == 18 * 6 * 2 * 3
    c3 = helper.make_node("Conv", ["x", "w"], ["y"], name="c3", strides=[1, 2, 2], pads=[1] * 6)
    model = _model([c3], [_x(1, 2, 4, 8, 8)], [_w("w", 3, 2, 3, 3, 3)])
    (rec,) = extract_workload(model).layers
    assert (rec.out_h, rec.out_w, rec.kernel, rec.spatial_dims) == (4 * 4, 4, (9, 3), 3)
    assert rec.macs == 4 * 4 * 4 * 3 * 2 * 27


@pytest.mark.parametrize(("mode", "pads"), [("SAME_UPPER", (0, 0, 1, 1)), ("SAME_LOWER", (1, 1, 0, 0)),
                                            ("VALID", (0, 0, 0, 0))])
def test_auto_pad_gives_the_effective_pads(mode: str, pads):
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c", auto_pad=mode, strides=[2, 2])
    model = _model([node], [_x(1, 1, 8, 8)], [_w("w", 2, 1, 3, 3)])
    (rec,) = extract_workload(model).layers
    assert rec.pads == pads
    assert rec.out_h == (4 if mode != "VALID" else 3)


def test_matmul_rows_come_from_the_output_shape():
    """A 2-D activation times a batched constant, a 3-D activation, and a 1-D (vector) weight."""
    nodes = [helper.make_node("MatMul", ["x", "w3"], ["a"], name="bmm"),
             helper.make_node("MatMul", ["a", "w2"], ["b"], name="mm"),
             helper.make_node("MatMul", ["b", "w1"], ["y"], name="mv")]
    model = _model(nodes, [_x(5, 8)], [_w("w3", 2, 8, 4), _w("w2", 4, 6), _w("w1", 6)])
    bmm, mm, mv = extract_workload(model).layers
    assert (bmm.h, bmm.cin, bmm.cout, bmm.macs) == (10, 8, 4, 2 * 5 * 8 * 4)
    assert (mm.h, mm.macs) == (10, 10 * 4 * 6)
    assert (mv.h, mv.cout, mv.macs) == (10, 1, 10 * 6)
