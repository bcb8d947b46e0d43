"""bitmap pass: block layout, per-block grids, patch moments, allocation, map contract, accuracy."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from test_quantize import feeds, init, node, ort_run, run_pass, small_cnn

from pimc.app.compile import CompileOptions, compile_model
from pimc.app.inspect_model import inspect_model
from pimc.compiler import annotations as ann
from pimc.compiler.errors import PimcError
from pimc.compiler.passbase import get_pass
from pimc.compiler.workload import extract_workload
from pimc.models import bundled_model_path
from pimc.passes.quantize.bitmap import Layout, allocate, block_quantize, make_layout, patch_moments
from pimc.runtime.datasets import load_dataset
from pimc.runtime.session import evaluate


def conv_node(**attrs) -> onnx.NodeProto:
    return helper.make_node("Conv", ["x", "w"], ["y"], name="c", **attrs)


@pytest.mark.parametrize("shape,op,attrs", [
    ((10, 20, 3, 3), "Conv", {}),
    ((12, 1, 3, 3), "Conv", {"group": 4}),
    ((7, 33), "Gemm", {"transB": 1}),
    ((33, 7), "Gemm", {}),
    ((33, 7), "MatMul", {}),
])
def test_layout_round_trip_and_sizes(shape, op, attrs):
    n = helper.make_node(op, ["x", "w"], ["y"], name="n", **attrs)
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    layout = make_layout(n, w, 3, 16)
    blocks = layout.to_blocks(layout.canonical(w))
    np.testing.assert_array_equal(layout.from_blocks(blocks), w)
    assert layout.sizes().sum() == w.size
    assert blocks.shape[:2] == layout.grid


def test_block_values_lie_on_each_blocks_b_bit_grid():
    rng = np.random.default_rng(0)
    layout = Layout("Conv", (4, 32, 3, 3), False, 4, 32, 1, (3, 3), 1, 16)
    w = rng.standard_normal((4, 32, 3, 3)).astype(np.float32)
    tiles = layout.to_blocks(layout.canonical(w))
    scale = (np.abs(w).reshape(4, -1).max(1) / 127).reshape(4, 1, 1, 1).astype(np.float32)
    for bits in (2, 3, 4, 6, 8):
        codes, steps, err = block_quantize(tiles, scale, bits)
        limit = 2 ** (bits - 1) - 1
        assert codes.dtype == np.int8 and steps.shape == (4, 2)
        i = codes / steps[:, :, None, None]
        np.testing.assert_array_equal(i, np.round(i))
        assert np.abs(i).max() <= limit and (steps.astype(int) * limit <= 127).all()
        uniform_err = ((w - np.clip(np.round(w / (scale.ravel()[:, None, None, None] * 127 / limit)),
                                    -limit, limit) * scale.ravel()[:, None, None, None] * 127 / limit) ** 2).sum()
        block_err = ((tiles - codes * scale) ** 2).sum()
        assert block_err <= uniform_err * 1.0001
        np.testing.assert_allclose(err.sum(), block_err, rtol=1e-4)


def test_patch_moments_match_torch_unfold():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 6, 9, 9)).astype(np.float32)
    n = conv_node(pads=[1, 0, 2, 1], strides=[2, 1], dilations=[1, 2])
    w = np.zeros((4, 6, 3, 3), np.float32)
    layout = make_layout(n, w, 1, 4)
    moments = patch_moments(n, x, layout, max_rows=10**6, seed=0)
    padded = torch.nn.functional.pad(torch.from_numpy(x), (0, 1, 1, 2))
    cols = torch.nn.functional.unfold(padded, (3, 3), dilation=(1, 2), stride=(2, 1))  # [N, C·9, L]
    rows = cols.permute(0, 2, 1).reshape(-1, 6, 9).numpy().astype(np.float64)
    for col, (lo, hi) in enumerate([(0, 4), (4, 6)]):
        p = rows[:, lo:hi].reshape(len(rows), -1)
        ref = p.T @ p / len(p)
        np.testing.assert_allclose(moments[0, col, : ref.shape[0], : ref.shape[1]], ref, rtol=1e-5, atol=1e-6)


def test_allocation_is_optimal_on_convex_instances_and_meets_the_budget():
    rng = np.random.default_rng(2)
    cands = [2, 3, 4, 6, 8]
    for _ in range(20):
        blocks = 5
        base = rng.uniform(0.1, 10, blocks)[:, None]
        sens = base * 4.0 ** -np.asarray(cands, np.float64)[None, :]  # convex, decreasing in bits
        sizes = np.full(blocks, 9.0)
        mean = float(rng.uniform(2, 6))
        choice = allocate(sens, sizes, cands, mean)
        bits = np.asarray(cands)[choice]
        assert (bits * sizes).sum() <= mean * sizes.sum() + 1e-9
        best = min(
            sum(sens[b, c] for b, c in enumerate(combo))
            for combo in itertools.product(range(len(cands)), repeat=blocks)
            if (np.asarray(cands)[list(combo)] * sizes).sum() <= mean * sizes.sum() + 1e-9
        )
        got = sum(sens[b, c] for b, c in enumerate(choice))
        assert got <= best * 1.35  # greedy hull allocation; equal when the budget is used up exactly


def test_map_contract_save_load_and_onnxruntime(tmp_path):
    q, stats = run_pass(small_cnn(), "bitmap", mean_bits=3.5, block_cin=4)
    onnx.checker.check_model(q, full_check=True)
    path = tmp_path / "b.onnx"
    onnx.save(q, path)
    loaded = onnx.load(path)
    conv2 = node(loaded, "conv2")
    bits = ann.get_node_map(loaded, conv2, "bits")
    steps = ann.get_node_map(loaded, conv2, "step")
    assert bits.dtype == np.uint8 and bits.shape == (6, 2)
    assert set(np.unique(bits)) <= {2, 3, 4, 6, 8}
    assert ann.get_node_annotation(conv2, "bitmap_block") == {"cout": 1, "cin": 4, "kernel": [3, 3]}
    assert ann.get_node_annotation(conv2, "weight_bits") == int(bits.max())
    assert ann.get_node_annotation(conv2, "act_bits") == 8
    assert ann.get_node_annotation(conv2, "mean_bits") == pytest.approx(bits.mean(), abs=1e-3)
    dq = next(n for n in loaded.graph.node if n.output[0] == conv2.input[1])
    codes = init(loaded, dq.input[0]).reshape(6, 2, 4, 9)
    i = codes / steps[:, :, None, None]
    np.testing.assert_array_equal(i, np.round(i))
    assert (np.abs(i).max(axis=(2, 3)) <= 2 ** (bits.astype(int) - 1) - 1).all()
    sizes = {"conv1": 8 * 3 * 9, "conv2": 6 * 8 * 9, "fc": 4 * 6}
    total = sum(ann.get_node_annotation(node(loaded, k), "mean_bits") * v for k, v in sizes.items())
    assert total / sum(sizes.values()) <= 3.5 + 1e-3
    assert stats["mean_bits"] == pytest.approx(total / sum(sizes.values()), abs=1e-3)
    outs = ort_run(loaded, feeds(1)[0]["x"])
    assert len(outs) == len(loaded.graph.output) and np.isfinite(outs[0]).all()
    rec = extract_workload(loaded).by_name()["conv2"]
    np.testing.assert_array_equal(rec.maps["bits"], bits)
    summary = next(n for n in inspect_model(loaded)["node_annotations"] if n["name"] == "conv2")
    assert set(summary["maps"]["bits"]["histogram"]) <= {"2", "3", "4", "6", "8"}


def test_more_bits_to_the_more_sensitive_layer():
    model = small_cnn()
    fc_w = init(model, "fc_w") * 20.0  # a hot classifier: its error dominates the outputs
    next(i for i in model.graph.initializer if i.name == "fc_w").CopyFrom(numpy_helper.from_array(fc_w, "fc_w"))
    _, stats = run_pass(model, "bitmap", mean_bits=3.0, candidates=["2", "4", "8"], sensitivity="probe")
    assert stats["nodes"]["fc"]["mean_bits"] >= stats["nodes"]["conv1"]["mean_bits"]


def test_hybrid_fixed_bits_and_errors():
    model = small_cnn()
    ann.set_node_annotation(node(model, "conv1"), "role", "basis")
    q, stats = run_pass(model, "bitmap", mean_bits=3.0, basis_bits=8, sensitivity="local")
    conv1 = node(q, "conv1")
    assert (ann.get_node_map(q, conv1, "bits") == 8).all()
    assert ann.get_node_annotation(conv1, "role") == "basis"
    with pytest.raises(PimcError):
        get_pass("bitmap")(mean_bits=2.0, candidates=["3", "4"]).candidate_bits()
    with pytest.raises(PimcError):
        get_pass("bitmap")(candidates=["1", "4"]).candidate_bits()


def test_bitmap_beats_uniform_three_bits_on_bundled_digits(tmp_path):
    data = load_dataset("digits", (1, 8, 8))
    acc = {}
    for label, sets in (("uniform", ["quantize.weight_bits=3", "quantize.act_bits=8"]),
                        ("bitmap", ["bitmap.mean_bits=3"])):
        out = tmp_path / f"{label}.onnx"
        compile_model(CompileOptions(input=str(bundled_model_path()), target="onnxruntime", output=str(out),
                                     data="digits", passes=sets[0].split(".")[0], sets=tuple(sets),
                                     max_accuracy_drop=100.0))
        acc[label] = evaluate(str(out), data, repeats=1)["accuracy"]
    assert acc["bitmap"] > acc["uniform"] + 0.02


def decomposed_model() -> onnx.ModelProto:
    """A decompose-shaped layer: depthwise basis Conv (3 → 3·2, group 3) then a 1×1 coefficient Conv."""
    from pimc.compiler.loader import normalize

    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 1, 3, 3)).astype(np.float32), "basis_w"),
             numpy_helper.from_array(rng.standard_normal((5, 6, 1, 1)).astype(np.float32), "coef_w")]
    nodes = [helper.make_node("Conv", ["x", "basis_w"], ["b"], name="basis", group=3, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["b", "coef_w"], ["y"], name="coef")]
    graph = helper.make_graph(nodes, "dec", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 5, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model = normalize(model)
    for name, role in (("basis", "basis"), ("coef", "coefficient")):
        n = node(model, name)
        ann.set_node_annotation(n, "role", role)
        ann.set_node_annotation(n, "rank", 2)
        ann.set_node_annotation(n, "layer", "conv")
    return model


def test_grouped_patch_moments_and_hybrid_decomposed_layers():
    model = decomposed_model()
    layout = make_layout(node(model, "basis"), init(model, "basis_w"), 1, 16)
    assert layout.bci == 1 and layout.grid == (6, 1)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    moments = patch_moments(node(model, "basis"), x, layout, 10**6, 0)
    cols = torch.nn.functional.unfold(torch.from_numpy(x), (3, 3), padding=1)  # [2, 27, 64]
    rows = cols.permute(0, 2, 1).reshape(-1, 3, 9).numpy().astype(np.float64)
    for g in range(3):
        np.testing.assert_allclose(moments[g, 0], rows[:, g].T @ rows[:, g] / len(rows), rtol=1e-5, atol=1e-6)
    calib = [{"x": f["x"]} for f in (
        {"x": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)} for i in range(8))]
    q, stats = run_pass(decomposed_model(), "bitmap", calib=calib, mean_bits=3.0, coefficient_bits=6)
    basis, coef = node(q, "basis"), node(q, "coef")
    assert (ann.get_node_map(q, coef, "bits") == 6).all()
    assert ann.get_node_map(q, basis, "bits").shape == (6, 1)
    assert ann.get_node_annotation(basis, "mean_bits") <= 3.0 + 1e-6
    assert ann.get_node_annotation(basis, "role") == "basis" and ann.get_node_annotation(coef, "rank") == 2
    q2, _ = run_pass(decomposed_model(), "quantize", calib=calib, bits=8, basis_bits=8, coefficient_bits=4)
    assert ann.get_node_annotation(node(q2, "basis"), "weight_bits") == 8
    assert ann.get_node_annotation(node(q2, "coef"), "weight_bits") == 4
