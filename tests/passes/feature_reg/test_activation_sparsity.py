"""activation-sparsity: the measured statistics against a torch im2col oracle, and what it leaves alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from pimc.compiler import annotations as ann
from pimc.compiler.loader import infer_shapes
from pimc.compiler.passbase import PassContext, get_pass
from pimc.compiler.verify import run_model


def _model(stride: int = 2, group: int = 2) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((6, 8 // group, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu1"),
        helper.make_node("Conv", ["r", "W2"], ["y"], name="conv2", pads=[1, 1, 1, 1], strides=[stride, stride],
                         group=group),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 9, 9])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")])
    return infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _feeds(count: int = 6) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 3, 9, 9)).astype(np.float32)} for _ in range(count)]


def _run(model: onnx.ModelProto, feeds, **opts):
    ctx = PassContext(calibration=feeds, data_spec="test-data")
    return get_pass("activation-sparsity")(**opts).run(model, ctx)


def _notes(model: onnx.ModelProto, name: str) -> dict:
    return ann.node_annotations(next(n for n in model.graph.node if n.name == name))


def test_statistics_match_a_torch_im2col_oracle():
    model, feeds = _model(), _feeds()
    result = _run(model, feeds, positions=10_000)
    notes = _notes(result.model, "conv2")
    relu = np.concatenate([outs[0] for outs in run_model(_probe(model, "r"), feeds)])
    assert notes["input_zero_fraction"] == pytest.approx(np.mean(relu == 0), abs=1e-6)
    assert notes["input_channel_density"] == pytest.approx(list(np.mean(relu != 0, axis=(0, 2, 3))), abs=1e-4)
    # im2col rows per group in (c, ky, kx) order, padding included: torch's unfold is the oracle
    cols = torch.nn.functional.unfold(torch.from_numpy(relu), 3, padding=1, stride=2).numpy()  # [N, C·9, L]
    rows = cols.transpose(0, 2, 1).reshape(-1, 2, 4 * 9).reshape(-1, 36) != 0
    for g in (1, 2, 4, 8, 16, 32):
        usable = (36 // g) * g
        expected = np.mean(~rows[:, :usable].reshape(len(rows), -1, g).any(axis=2))
        assert notes["input_zero_chunks"][str(g)] == pytest.approx(expected, abs=1e-6), g
    assert "64" not in notes["input_zero_chunks"]  # wider than a row
    # per-pixel channel vectors within each group (Cg = 4), over every pixel
    vectors = np.moveaxis(relu, 1, -1).reshape(-1, 2, 4).reshape(-1, 4) != 0
    for g in (1, 2, 4):
        expected = np.mean(~vectors.reshape(len(vectors), -1, g).any(axis=2))
        assert notes["input_channel_chunks"][str(g)] == pytest.approx(expected, abs=1e-6), g
    assert "8" not in notes["input_channel_chunks"]  # wider than a group
    pixel = np.mean(relu != 0, axis=1).ravel()
    hist = np.histogram(pixel, bins=10, range=(0, 1))[0] / pixel.size
    assert notes["input_pixel_density"] == pytest.approx(list(hist), abs=1e-6)
    assert notes["input_samples"] == len(feeds)
    assert notes["input_sparsity_source"] == "test-data"


def test_output_zeros_after_the_relu_are_measured():
    model, feeds = _model(), _feeds()
    notes = _notes(_run(model, feeds).model, "conv1")
    relu = np.concatenate([outs[0] for outs in run_model(_probe(model, "r"), feeds)])
    assert notes["output_zero_fraction"] == pytest.approx(np.mean(relu == 0), abs=1e-6)
    assert "output_zero_fraction" not in _notes(_run(model, feeds).model, "conv2")  # no Relu reads it


def test_chunk_fractions_fall_with_the_chunk_size():
    chunks = _notes(_run(_model(), _feeds()).model, "conv2")["input_zero_chunks"]
    values = [chunks[str(g)] for g in sorted(map(int, chunks))]
    assert values == sorted(values, reverse=True) and values[0] > values[-1]


def test_without_real_data_nothing_changes():
    model = _model()
    before = model.SerializeToString()
    result = get_pass("activation-sparsity")().run(model, PassContext())
    assert not result.changed and "skipped" in result.stats
    assert result.model.SerializeToString() == before


def test_the_graph_computes_the_same():
    model, feeds = _model(), _feeds()
    reference = run_model(model, feeds)
    after = run_model(_run(model, feeds).model, feeds)
    for ref, new in zip(reference, after, strict=True):
        np.testing.assert_array_equal(ref[0], new[0])
    assert [n.op_type for n in _run(model, feeds).model.graph.node] == ["Conv", "Relu", "Conv"]


def test_position_sampling_is_seeded_and_close_to_the_full_count():
    model, feeds = _model(stride=1, group=1), _feeds()
    full = _notes(_run(model, feeds, positions=10_000).model, "conv2")["input_zero_chunks"]
    sampled = _notes(_run(model, feeds, positions=40).model, "conv2")["input_zero_chunks"]
    again = _notes(_run(model, feeds, positions=40).model, "conv2")["input_zero_chunks"]
    assert sampled == again
    assert sampled["1"] == pytest.approx(full["1"], abs=0.1)


def _probe(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    del probe.graph.output[:]
    probe.graph.output.append(helper.make_empty_tensor_value_info(tensor))
    return probe


def test_a_threshold_gate_after_the_relu_counts_as_the_written_map():
    model = _model()
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), "t"))
    graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    conv2 = next(n for n in graph.node if n.name == "conv2")
    gate = [helper.make_node("Abs", ["r"], ["ra"], name="abs"),
            helper.make_node("Greater", ["ra", "t"], ["keep"], name="greater"),
            helper.make_node("Where", ["keep", "r", "zero"], ["g"], name="where")]
    conv2.input[0] = "g"
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes[:2] + gate + nodes[2:])
    model = infer_shapes(model)
    feeds = _feeds()
    gated = np.concatenate([outs[0] for outs in run_model(_probe(model, "g"), feeds)])
    notes = _notes(_run(model, feeds).model, "conv1")
    assert notes["output_zero_fraction"] == pytest.approx(np.mean(gated == 0), abs=1e-6)
    assert _notes(_run(model, feeds).model, "conv2")["input_zero_fraction"] == pytest.approx(np.mean(gated == 0),
                                                                                               abs=1e-6)


def _gated_twice(model: onnx.ModelProto) -> onnx.ModelProto:
    """conv2 reads a gate on r, and r is also a graph output (a second reader, like a residual)."""
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array(2.0, np.float32), "t"))
    graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    conv2 = next(n for n in graph.node if n.name == "conv2")
    gate = [helper.make_node("Abs", ["r"], ["ra"], name="abs"),
            helper.make_node("Greater", ["ra", "t"], ["keep"], name="greater"),
            helper.make_node("Where", ["keep", "r", "zero"], ["g"], name="where"),
            helper.make_node("Neg", ["r"], ["side"], name="side")]
    conv2.input[0] = "g"
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes[:2] + gate + nodes[2:])
    graph.output.append(helper.make_tensor_value_info("side", onnx.TensorProto.FLOAT, None))
    return infer_shapes(model)


def test_a_gate_on_a_shared_map_records_the_stored_map_zeros():
    model = _gated_twice(_model())
    feeds = _feeds()
    relu = np.concatenate([outs[0] for outs in run_model(_probe(model, "r"), feeds)])
    gated = np.concatenate([outs[0] for outs in run_model(_probe(model, "g"), feeds)])
    result = _run(model, feeds).model
    notes = _notes(result, "conv2")
    assert np.mean(gated == 0) > np.mean(relu == 0) + 0.05  # the gate adds zeros: the two differ
    assert notes["input_zero_fraction"] == pytest.approx(np.mean(gated == 0), abs=1e-6)
    assert notes["input_stored_zero_fraction"] == pytest.approx(np.mean(relu == 0), abs=1e-6)
    # what conv1 writes (r, ungated: the gate is not its only reader) is what conv2 fetches
    assert _notes(result, "conv1")["output_zero_fraction"] == notes["input_stored_zero_fraction"]


def test_a_gate_that_is_the_maps_only_reader_has_no_stored_fraction():
    model = _model()
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), "t"))
    graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    next(n for n in graph.node if n.name == "conv2").input[0] = "g"
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes[:2] + [helper.make_node("Abs", ["r"], ["ra"], name="abs"),
                                   helper.make_node("Greater", ["ra", "t"], ["keep"], name="greater"),
                                   helper.make_node("Where", ["keep", "r", "zero"], ["g"], name="where")] + nodes[2:])
    notes = _notes(_run(infer_shapes(model), _feeds()).model, "conv2")
    assert "input_stored_zero_fraction" not in notes
