"""Weight storage: the cheapest of dense, bitmap, CSR and relative index at the annotated bits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from pimc.compiler.annotations import set_node_annotation
from pimc.compiler.inspect_model import inspect_model
from pimc.compiler.storage import layer_storage, relative_index_bits


def test_dense_weights_store_dense():
    s = layer_storage(np.ones((4, 8)), 8.0)
    assert s["format"] == "dense" and s["bits"] == 4 * 8 * 8 and s["dense_fp32_bits"] == 4 * 8 * 32


def test_half_dense_weights_use_a_bitmap_and_very_sparse_ones_an_index():
    w = (np.random.default_rng(0).random((16, 16)) < 0.6).astype(float)
    half = layer_storage(w, 8.0)
    assert half["format"] in ("bitmap", "relative") and half["bits"] <= w.sum() * 8 + w.size
    sparse = np.zeros((100, 400))
    sparse[np.arange(100), np.arange(100) * 4] = 1.0
    s = layer_storage(sparse, 3.0)
    csr = 100 * (3 + math.ceil(math.log2(400))) + 101 * math.ceil(math.log2(101))
    relative, _ = relative_index_bits(sparse.reshape(-1) != 0, 3.0)
    assert s["bits"] == min(csr, relative) and s["format"] in ("csr", "relative")


def test_relative_index_counts_filler_zeros():
    flat = np.zeros(40, dtype=bool)
    flat[[0, 1, 39]] = True  # gaps 0, 0, 37
    cost, r = relative_index_bits(flat, 2.0)
    assert cost == min(sum(1 + g // 2**k for g in (0, 0, 37)) * (2 + k) for k in range(1, 17))
    assert r >= 1


def test_inspect_reports_storage_with_annotated_bits():
    w = np.zeros((10, 20), np.float32)
    w[0, :5] = 1
    node = helper.make_node("Gemm", ["x", "W"], ["y"], name="fc", transB=1)
    set_node_annotation(node, "weight_bits", 4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 20])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(w, "W")])
    info = inspect_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    store = info["storage"]
    assert store["dense_fp32_bits"] == 200 * 32
    assert store["bits"] == pytest.approx(store["layers"]["fc"]["bits"]) and store["layers"]["fc"]["weight_bits"] == 4
    assert store["ratio"] == pytest.approx(6400 / store["bits"], rel=1e-3)


def test_break_even_on_escalate_and_none_on_cim():
    from pimc.compiler.inspect_model import break_even_info
    from pimc.compiler.loader import load_model
    from pimc.models import bundled_model_path

    model = load_model(str(bundled_model_path()))
    info = break_even_info(model, "escalate", None)
    assert len(info["layers"]) == 4
    for row in info["layers"]:
        assert 0.0 <= row["break_even_sparsity"] < 1.0
        assert row["break_even_ratio"] == pytest.approx(1 / (1 - row["break_even_sparsity"]), rel=1e-3)
        assert row["sparse_pays"] is False
    assert break_even_info(model, "cim", None)["layers"] == []


def test_break_even_is_where_the_sparse_path_stops_being_slower():
    from pimc.backends.escalate import (
        BREAK_EVEN_STEPS,
        EscalateConfig,
        LayerPlan,
        WeightStats,
        break_even_sparsity,
        dense_cost,
        lower_dense,
        sparse_cost,
    )
    from pimc.compiler.loader import load_model
    from pimc.compiler.workload import extract_workload
    from pimc.models import bundled_model_path

    hw = EscalateConfig()
    plan = lower_dense(extract_workload(load_model(str(bundled_model_path()))), hw).layers[1]
    s = break_even_sparsity(plan, hw)
    per_row = (plan.geometry.cin // plan.geometry.groups) * plan.geometry.k2

    def cycles(sparsity: float) -> float:
        rows = np.full(plan.geometry.cout, max(1, int(round((1 - sparsity) * per_row))))
        trial = LayerPlan(plan.name, "dense", plan.geometry, WeightStats(plan.dense.params, int(rows.sum()), rows,
                                                                          plan.dense.bits), plan.act_bits, plan.members)
        return sparse_cost(trial, hw)["cycles"]

    dense = dense_cost(plan, hw)["cycles"]
    assert cycles(s) <= dense < cycles(s - 1 / BREAK_EVEN_STEPS)


def _gemm_model(w: np.ndarray, bias: np.ndarray | None, scale: np.ndarray | None):
    """y = x·Wᵀ (+ b), W as an initializer or behind DequantizeLinear(int8 codes, per-row scale)."""
    inits, nodes, weight = [], [], "W"
    if scale is None:
        inits.append(numpy_helper.from_array(w.astype(np.float32), "W"))
    else:
        codes = np.round(w / scale[:, None]).astype(np.int8)
        inits += [numpy_helper.from_array(codes, "Wq"), numpy_helper.from_array(scale.astype(np.float32), "Ws"),
                  numpy_helper.from_array(np.zeros(len(scale), np.int8), "Wz")]
        nodes.append(helper.make_node("DequantizeLinear", ["Wq", "Ws", "Wz"], ["Wd"], axis=0))
        weight = "Wd"
    inputs = ["x", weight]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias.astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node("Gemm", inputs, ["y"], name="fc", transB=1)
    set_node_annotation(node, "weight_bits", 3 if scale is not None else 32)
    rows, cols = w.shape
    graph = helper.make_graph([*nodes, node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cols])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, rows])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_biases_count_in_the_stored_and_the_dense_bits():
    from pimc.compiler.storage import model_storage

    w = np.zeros((10, 20), np.float32)
    w[0, :5] = 1
    plain = model_storage(_gemm_model(w, None, None))
    biased = model_storage(_gemm_model(w, np.ones(10), None))
    assert biased["breakdown"]["biases"] == 10 * 32 and plain["breakdown"]["biases"] == 0
    assert biased["bits"] == pytest.approx(plain["bits"] + 320)
    assert biased["dense_fp32_bits"] == (200 + 10) * 32
    assert biased["ratio"] == pytest.approx(210 * 32 / biased["bits"], rel=1e-3)
    assert biased["weights_ratio"] == plain["weights_ratio"] == pytest.approx(6400 / plain["bits"], rel=1e-3)
    mostly_zero = np.zeros(10)
    mostly_zero[3] = 0.5
    sparse_bias = model_storage(_gemm_model(w, mostly_zero, None))
    assert sparse_bias["breakdown"]["biases"] == 32 + 10  # one value + a 10-bit presence map
    assert sparse_bias["dense_fp32_bits"] == biased["dense_fp32_bits"]


def test_quantization_scales_count_once_per_distinct_value():
    from pimc.compiler.storage import model_storage

    w = np.zeros((4, 50), np.float32)
    w[:, ::10] = np.array([1, 2, 3, -3], np.float32)[:, None] * 0.5
    per_channel = model_storage(_gemm_model(w, None, np.array([0.5, 0.25, 0.5, 0.125])))
    per_layer = model_storage(_gemm_model(w, None, np.full(4, 0.5)))
    assert per_channel["breakdown"]["scales"] == 3 * 32  # 0.5 twice: one value stored
    assert per_layer["breakdown"]["scales"] == 32
    layer = per_layer["layers"]["fc"]
    assert layer["weight_bits"] == 3 and layer["bits"] == pytest.approx(layer["weight_storage_bits"] + 32)
    assert per_layer["bits"] == pytest.approx(per_layer["breakdown"]["weights_and_index"] + 32)
