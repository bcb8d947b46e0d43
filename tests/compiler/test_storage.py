"""Weight storage: the cheapest of dense, bitmap, CSR and relative index at the annotated bits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from pimc.app.inspect_model import inspect_model
from pimc.compiler.annotations import set_node_annotation
from pimc.compiler.storage import layer_storage, relative_index_bits


def _codes(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Uniform non-zero 8-bit codes ±1..±127 (entropy ~8 bits: nothing for an entropy coder to gain)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(1, 128, shape) * rng.choice([-1, 1], shape)).astype(float)


def test_dense_weights_store_dense():
    s = layer_storage(_codes((4, 8)), 8.0)
    assert s["format"] == "dense" and s["bits"] == 4 * 8 * 8 and s["dense_fp32_bits"] == 4 * 8 * 32
    assert s["candidates"]["huffman"] > s["bits"]  # computed, never chosen when not cheaper


def test_half_dense_weights_use_a_bitmap_and_very_sparse_ones_an_index():
    rng = np.random.default_rng(0)
    w = _codes((16, 16)) * (rng.random((16, 16)) < 0.6)
    half = layer_storage(w, 8.0)
    nnz = np.count_nonzero(w)
    assert half["format"] in ("bitmap", "relative") and half["bits"] <= nnz * 8 + w.size
    sparse = np.zeros((100, 400))
    sparse[np.arange(100), np.arange(100) * 4] = _codes((100,))
    s = layer_storage(sparse, 3.0)  # > 2^3 − 1 distinct values: no value codebook, Huffman gaps only
    csr = 100 * (3 + math.ceil(math.log2(400))) + 101 * math.ceil(math.log2(101))
    relative, _ = relative_index_bits(sparse.reshape(-1) != 0, 3.0)
    assert s["candidates"]["csr"] == csr and s["candidates"]["relative"] == relative
    assert s["bits"] == min(s["candidates"].values()) and s["format"] in ("csr", "relative", "huffman")


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
    from pimc.app.inspect_model import break_even_info
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
    from pimc.backends.escalate.config import EscalateConfig
    from pimc.backends.escalate.cost import BREAK_EVEN_STEPS, break_even_sparsity, dense_cost, sparse_cost
    from pimc.backends.escalate.lower import LayerPlan, WeightStats, lower_dense
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


def test_huffman_lengths_match_a_hand_built_code():
    from pimc.compiler.storage import huffman_lengths

    # counts a5 b2 c1 d1: merge c+d (2), then b+cd (4), then a+bcd (9): a=1, b=2, c=d=3 → 5+4+3+3 = 15 bits
    assert huffman_lengths([5, 2, 1, 1]) == [1, 2, 3, 3]
    assert huffman_lengths([0, 3, 0]) == [0, 1, 0]  # one symbol still takes a bit
    assert huffman_lengths([0, 0]) == [0, 0]


@pytest.mark.parametrize("seed", range(5))
def test_huffman_is_within_one_bit_of_the_entropy(seed):
    from pimc.compiler.storage import huffman_lengths

    counts = np.random.default_rng(seed).integers(1, 200, 20)
    lengths = np.array(huffman_lengths(counts.tolist()))
    p = counts / counts.sum()
    entropy = float(-(p * np.log2(p)).sum())
    mean = float((p * lengths).sum())
    assert entropy <= mean < entropy + 1 and (2.0 ** -lengths).sum() == pytest.approx(1.0)  # complete prefix code


def test_codebook_takes_the_cheaper_layout():
    from pimc.compiler.storage import CODEBOOK_HEADER_BITS, codebook_bits

    # lengths up to 3 → w = 2 bits; all 7 symbols: 7·2 = 14; the 4 used: 4·(3 + 2) = 20
    assert codebook_bits([1, 2, 3, 3, 0, 0, 0], 7) == CODEBOOK_HEADER_BITS + 14
    # 2 used of 1,025 symbols, w = 1: all: 1,025; listed: 2·(11 + 1) = 24
    assert codebook_bits([1, 1] + [0] * 1023, 1025) == CODEBOOK_HEADER_BITS + 24


def test_huffman_gaps_and_values_by_hand():
    from pimc.compiler.storage import CODEBOOK_HEADER_BITS, huffman_bits, huffman_gap_bits, huffman_value_bits

    gaps = np.array([0, 0, 5, 9])
    # r = 2: symbols 0, 0, E 1, E E 1 → counts s0 2, s1 2, E 3 → E 1 bit, s0 and s1 2 bits: 3 + 4 + 4 = 11;
    # codebook over 5 symbols, w = 2: min(5·2, 3·(3 + 2)) = 10
    assert huffman_gap_bits(gaps, 2) == 11 + CODEBOOK_HEADER_BITS + 10
    # values a a a b on a 3-bit grid (7 non-zero codes): 1 bit each = 4; codebook w = 1: min(7, 2·(3 + 1)) = 7
    assert huffman_value_bits(np.array([0.5, 0.5, 0.5, -1.0]), 3.0) == 4 + CODEBOOK_HEADER_BITS + 7
    # more distinct values than the grid has codes (or fp32): raw b bits each, no codebook
    assert huffman_value_bits(np.arange(1.0, 9.0), 3.0) == 8 * 3
    assert huffman_value_bits(np.array([0.1, 0.2]), 32.0) == 64
    flat = np.zeros(20)
    flat[[0, 1, 7, 17]] = [0.5, 0.5, 0.5, -1.0]  # gaps 0, 0, 5, 9
    cost, r = huffman_bits(flat, 3.0)
    # r = 4, k = 2: symbols (g mod 16) >> 2 = 0, 0, 1, 2 (no escape) → 2, 1, 1 → 1, 2, 2 bits = 6, + 2·4 raw;
    # codebook over 4 + 1 symbols, w = 2: min(5·2, 3·(3 + 2)) = 10
    assert huffman_gap_bits(gaps, 4, 2) == 6 + 8 + CODEBOOK_HEADER_BITS + 10
    per_rk = {(a, b): huffman_gap_bits(gaps, a, b) for a in range(1, 17) for b in range(a + 1)}
    count = 5  # n stored in ⌈log2(20 + 1)⌉ bits
    assert r == min(per_rk, key=lambda k: per_rk[k]) and cost == per_rk[r] + 4 + CODEBOOK_HEADER_BITS + 7 + count


def test_huffman_is_chosen_when_cheaper_and_its_bits_are_the_count():
    from pimc.compiler.storage import huffman_bits

    rng = np.random.default_rng(1)
    w = np.zeros((500, 800))
    keep = rng.random(w.shape) < 0.0025  # LeNet-5 fc1 at ~400x
    w[keep] = rng.choice([-0.2, 0.2, 0.4], keep.sum(), p=[0.45, 0.45, 0.1])
    s = layer_storage(w, 3.0)
    assert s["format"] == "huffman" and s["bits"] == huffman_bits(w.reshape(-1), 3.0)[0]
    assert s["bits"] < min(v for k, v in s["candidates"].items() if k != "huffman")
    assert s["huffman_index_bits"] is not None and s["relative_index_bits"] is None


def test_a_nonzero_never_needs_the_zero_code():
    from pimc.compiler.storage import nonzero_value_bits

    assert nonzero_value_bits(1) == 0 and nonzero_value_bits(2) == 2 and nonzero_value_bits(3) == 3
    assert nonzero_value_bits(32) == 32 and nonzero_value_bits(2.5) == 2.5
    w = np.zeros((4, 64))
    w[:, 0] = 1.0  # one non-zero level at 1 bit: the bitmap stores presence only
    assert layer_storage(w, 1.0)["candidates"]["bitmap"] == 4 * 64


def test_fixed_length_ratio_leaves_the_entropy_coder_out():
    from pimc.compiler.storage import model_storage

    rng = np.random.default_rng(1)
    w = np.zeros((500, 800), np.float32)
    keep = rng.random(w.shape) < 0.0025
    w[keep] = rng.choice([-0.2, 0.2, 0.4], keep.sum(), p=[0.45, 0.45, 0.1])
    store = model_storage(_gemm_model(w, None, np.full(500, 0.2)))
    layer = store["layers"]["fc"]
    assert layer["format"] == "huffman"
    fixed = min(v for k, v in layer["candidates"].items() if k != "huffman")
    assert store["weights_ratio_fixed_length"] == pytest.approx(w.size * 32 / fixed, rel=1e-4)
    assert store["weights_ratio"] == pytest.approx(w.size * 32 / layer["candidates"]["huffman"], rel=1e-4)


def _mlp_with_dead_units() -> tuple:
    """x → Gemm(8→6, units 1 and 4 with no weights and zero bias) → Relu → Gemm(6→3)."""
    rng = np.random.default_rng(3)
    w1, w2 = rng.standard_normal((6, 8)), rng.standard_normal((3, 6))
    w1[[1, 4]] = 0
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in
             (("W1", w1), ("b1", np.where(np.isin(np.arange(6), [1, 4]), 0, 0.1)), ("W2", w2), ("b2", np.zeros(3)))]
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["y"], name="fc2", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), w1, w2


def test_storage_stays_against_the_model_as_brought_after_shrink():
    from pimc.compiler.passbase import PassContext, get_pass
    from pimc.compiler.pipeline import PassManager
    from pimc.compiler.storage import REFERENCE_KEY, model_storage

    model, w1, w2 = _mlp_with_dead_units()
    before = model_storage(model)
    assert before["reference"] == "this model" and before["dense_fp32_bits"] == 32 * (48 + 6 + 18 + 3)
    shrunk = PassManager([get_pass("shrink")()], PassContext()).run(model)
    after = model_storage(shrunk)
    assert [p.key for p in shrunk.metadata_props] == [REFERENCE_KEY]
    assert after["dense_fp32_bits"] == before["dense_fp32_bits"] and REFERENCE_KEY in after["reference"]
    assert after["dense_fp32_bits_this_model"] == 32 * (32 + 4 + 12 + 3)  # two units fewer
    assert after["bits"] < before["bits"] and after["ratio"] == round(after["dense_fp32_bits"] / after["bits"], 3)
    assert after["weights_ratio"] == round(32 * (48 + 18) / after["breakdown"]["weights_and_index"], 3)
    again = PassManager([get_pass("shrink")()], PassContext()).run(shrunk)  # the first record stays
    assert len(again.metadata_props) == 1 and model_storage(again)["dense_fp32_bits"] == before["dense_fp32_bits"]


@pytest.mark.parametrize("text", ["not json", '{"dense_fp32_bits": -1, "dense_fp32_weight_bits": 5}', "[]", "{}"])
def test_a_malformed_reference_is_ignored(text):
    from pimc.compiler.storage import REFERENCE_KEY, model_storage

    model, _, _ = _mlp_with_dead_units()
    model.metadata_props.add(key=REFERENCE_KEY, value=text)
    store = model_storage(model)
    assert store["reference"] == "this model" and store["dense_fp32_bits"] == store["dense_fp32_bits_this_model"]
