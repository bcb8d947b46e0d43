"""CiM target: peak figures, hand-computed lowering, ReLU fusion, pattern packing, bits, reports."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pimc.app.compile import CompileOptions, compile_model
from pimc.backends.cim import CimConfig, CimTarget, tile_assignment
from pimc.compiler import annotations as ann
from pimc.compiler.errors import PimcError
from pimc.compiler.loader import infer_shapes
from pimc.compiler.passbase import all_passes
from pimc.models import bundled_model_path

BASIC = "fold-constants,eliminate-identity,fold-batchnorm,fuse-relu,cleanup"


def conv_model(cin: int, cout: int, k: int, hw: int, seed: int = 0, relu: bool = False,
               weight: np.ndarray | None = None) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = weight if weight is not None else rng.standard_normal((cout, cin, k, k)).astype(np.float32)
    pad = k // 2
    nodes = [helper.make_node("Conv", ["x", "w"], ["y" if not relu else "c"], name="conv",
                              kernel_shape=[k, k], pads=[pad] * 4)]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"], name="relu"))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, hw, hw])],
        [numpy_helper.from_array(w, "w")],
    )
    return infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "test")


def lean(**changes) -> CimConfig:
    """Default macro with buffer/digital/write energies zeroed: only the macro itself costs."""
    base = dict(digital_add_energy_pj=0.0, input_buffer_pj_per_bit=0.0, output_buffer_pj_per_bit=0.0,
                weight_buffer_pj_per_bit=0.0, weight_write_energy_fj_per_bit=0.0)
    base.update(changes)
    return CimConfig(**base)


def cost_of(model: onnx.ModelProto, hw: CimConfig):
    target = CimTarget()
    return target.cost(target.lower(model, hw), hw)


def test_default_peak_matches_paper_to_three_digits():
    hw = CimConfig()
    assert f"{hw.peak_gops:.3g}" == "51.2"
    assert f"{hw.peak_tops_per_w:.3g}" == "10.3"
    assert hw.cycle_energy_j * 400e6 == pytest.approx(51.2e9 / 10.3e12, rel=1e-3)  # 4.97 mW


@pytest.mark.parametrize("rows,clock,e_row,e_adc,macros", [
    (128, 400.0, 116.5, 4.971, 1), (64, 200.0, 116.5, 4.971, 1), (64, 400.0, 200.0, 4.971, 1),
    (64, 400.0, 116.5, 10.0, 1), (256, 100.0, 50.0, 2.0, 4),
])
def test_peak_follows_rows_clock_energies(rows, clock, e_row, e_adc, macros):
    hw = CimConfig(rows=rows, clock_mhz=clock, array_energy_per_row_fj=e_row, adc_energy_pj=e_adc, macros=macros)
    assert hw.peak_gops == pytest.approx(2 * rows * clock * 1e6 * macros / 1e9)
    assert hw.peak_tops_per_w == pytest.approx(2 * rows / (rows * e_row * 1e-15 + e_adc * 1e-12) / 1e12)


def test_peak_reached_by_a_perfectly_mapped_resident_layer():
    # 1×1 conv, K = 64 = N, Cout = 16 = columns, one block → weights resident, no rewrites
    model = conv_model(64, 16, 1, 8)
    hw = lean()
    cost = cost_of(model, hw)
    assert cost.extra["weights_resident"]
    assert cost.latency_cycles == 64 * 16
    assert cost.throughput_gops == pytest.approx(hw.peak_gops)
    assert cost.tops_per_w == pytest.approx(hw.peak_tops_per_w)
    assert cost.layers[0]["utilization"] == pytest.approx(1.0)


def test_lowering_of_a_tiled_layer_by_hand():
    # K = 16·9 = 144 → 3 row tiles (64, 64, 16); Cout = 32 → 96 column-tiles = 6 blocks of 16
    model = conv_model(16, 32, 3, 6)
    hw = CimConfig()
    cost = cost_of(model, hw)
    layer = cost.layers[0]
    p = 36
    assert layer["row_tiles_max"] == 3 and layer["column_tiles"] == 96 and layer["blocks"] == 6
    assert not cost.extra["weights_resident"] and layer["weight_loads"] == 6
    assert layer["compute_cycles"] == p * 96
    assert layer["write_cycles"] == 6 * 64
    assert layer["conversions"] == p * 96 and layer["partial_sum_conversions"] == p * 64
    assert layer["row_utilization"] == pytest.approx(144 / 192)
    e = layer["energy_breakdown_j"]
    assert e["array"] == pytest.approx(p * 96 * 64 * 116.5e-15)
    assert e["adc"] == pytest.approx(p * 96 * 4.971e-12)
    assert e["weight_writes"] == pytest.approx(6 * 64 * 16 * 8 * 30e-15)
    assert e["digital"] == pytest.approx((p * 64 + p * 32) * 0.1e-12)
    util = p * 32 * 144 / ((p * 96 + 6 * 64) * 64)
    assert layer["utilization"] == pytest.approx(util)


def test_more_macros_replicate_and_keep_weights_resident():
    model = conv_model(16, 32, 3, 6)
    one = cost_of(model, CimConfig())
    many = cost_of(model, CimConfig(macros=6))
    assert many.extra["weights_resident"] and many.energy_breakdown_j["weight_writes"] == 0
    assert many.latency_cycles == 36 * 16
    assert one.latency_cycles / many.latency_cycles > 5.5
    hw = CimConfig(macros=4)
    cost = cost_of(conv_model(16, 32, 3, 6), hw)
    assert cost.layers[0]["replication"] == 1 and cost.layers[0]["weight_loads"] == 2


def test_small_layer_is_replicated_over_idle_macros():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], name="big", kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Conv", ["h", "w2"], ["y"], name="small", kernel_shape=[1, 1])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 6, 6])],
        [numpy_helper.from_array(rng.standard_normal((32, 16, 3, 3)).astype(np.float32), "w1"),
         numpy_helper.from_array(rng.standard_normal((16, 32, 1, 1)).astype(np.float32), "w2")],
    )
    model = infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "test")
    cost = cost_of(model, CimConfig(macros=4))  # 6 + 1 blocks > 4 macros: not resident
    big, small = cost.layers
    assert not cost.extra["weights_resident"]
    assert big["replication"] == 1 and big["weight_loads"] == 2
    assert small["replication"] == 4 and small["compute_cycles"] == 9 * 16
    assert small["energy_breakdown_j"]["weight_writes"] == pytest.approx(4 * 64 * 16 * 8 * 30e-15)


def _fused(p_neg: float) -> onnx.ModelProto:
    model = conv_model(16, 32, 3, 6, relu=True)
    node = model.graph.node[0]
    ann.set_node_annotation(node, "fused_activation", "Relu")
    ann.set_node_annotation(node, "neg_fraction", p_neg)
    ann.set_node_annotation(node, "neg_fraction_source", "digits")
    return model


def test_relu_fusion_saves_adc_energy_in_proportion_to_negative_fraction():
    hw = CimConfig()
    savings = {}
    for p in (0.0, 0.25, 0.5):
        cost = cost_of(_fused(p), hw)
        fusion = cost.extra["relu_fusion"]
        last = 36 * 32
        assert fusion["adc_saving_j"] == pytest.approx(last * 4.971e-12 * p * (1 - 1 / 8))
        assert fusion["adc_saving_fraction"] == pytest.approx(fusion["predicted_saving_fraction"])
        savings[p] = fusion["adc_saving_j"]
        assert cost.baselines["no_relu_fusion"]["energy_j"] - cost.energy_j == pytest.approx(savings[p])
    assert savings[0.0] == 0 and savings[0.5] == pytest.approx(2 * savings[0.25])
    off = cost_of(_fused(0.5), CimConfig(relu_fusion=False))
    assert off.extra["relu_fusion"]["adc_saving_j"] == 0


def test_missing_neg_fraction_gives_no_saving_and_a_note():
    model = conv_model(16, 32, 3, 6, relu=True)
    ann.set_node_annotation(model.graph.node[0], "fused_activation", "Relu")
    cost = cost_of(model, CimConfig())
    assert cost.extra["relu_fusion"]["adc_saving_j"] == 0
    assert "not measured" in cost.layers[0]["notes"][0]


def _pattern_model(cin=16, cout=32, pruned=0.5, seed=0):
    rng = np.random.default_rng(seed)
    library = [[0, 1, 4, 7], [1, 3, 4, 5], [2, 4, 6, 8], [4, 5, 7, 8]]
    ids = rng.integers(0, len(library), (cout, cin)).astype(np.int16)
    ids[rng.random((cout, cin)) < pruned] = -1
    w = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)
    mask = np.zeros((cout, cin, 9), bool)
    for o in range(cout):
        for i in range(cin):
            if ids[o, i] >= 0:
                mask[o, i, library[ids[o, i]]] = True
    w *= mask.reshape(w.shape)
    model = conv_model(cin, cout, 3, 6, weight=w)
    node = model.graph.node[0]
    ann.set_node_annotation(node, "pattern_library", library)
    ann.set_node_map(model, node, "pattern", ids)
    return model, mask.reshape(cout, -1), ids


def test_pattern_packing_skips_rows_and_tiles():
    model, mask, ids = _pattern_model()
    dense = cost_of(conv_model(16, 32, 3, 6), CimConfig())
    packed = cost_of(model, CimConfig())
    layer = packed.layers[0]
    kept = mask.sum(axis=1)
    tiles = -(-kept // 64)
    assert layer["packing"] == "pattern"
    assert layer["column_tiles"] == int(tiles.sum())
    assert layer["compute_cycles"] == 36 * int(tiles.sum())
    assert layer["conversions"] == 36 * int(tiles.sum())
    assert packed.latency_cycles < dense.latency_cycles
    assert packed.energy_breakdown_j["adc"] < dense.energy_breakdown_j["adc"]
    # 4-of-9 with half the kernels pruned keeps ~2/9 of the rows: ~1 tile instead of 3
    assert layer["column_tiles"] < 0.5 * dense.layers[0]["column_tiles"]


def test_tile_assignment_packs_each_column():
    _, mask, _ = _pattern_model(cin=40, pruned=0.1)
    w = np.ones((1, 32, 360), np.float32)
    tiles = tile_assignment(w, 64, mask)
    for c in range(32):
        kept = np.flatnonzero(mask[c])
        assert (tiles[0, c, kept] == np.arange(len(kept)) // 64).all()
        assert (tiles[0, c, ~mask[c]] == -1).all()
    dense = tile_assignment(w, 64, None)
    assert (dense[0, 5] == np.arange(360) // 64).all()


def test_fully_pruned_filter_costs_nothing():
    model, _, ids = _pattern_model(pruned=0.0)
    ids = ids.copy()
    ids[:8] = -1
    node = model.graph.node[0]
    ann.set_node_map(model, node, "pattern", ids)
    layer = cost_of(model, CimConfig()).layers[0]
    assert layer["column_tiles"] == 24 * 1  # 16 kernels × 4 rows = 64 rows = one tile per live filter


def test_wide_bits_take_several_passes_and_low_bits_cost_the_same():
    base = cost_of(conv_model(16, 32, 3, 6), CimConfig()).layers[0]
    for wb, ab, passes in ((4, 4, 1), (16, 8, 2), (16, 16, 4)):
        model = conv_model(16, 32, 3, 6)
        ann.set_node_annotation(model.graph.node[0], "weight_bits", wb)
        ann.set_node_annotation(model.graph.node[0], "act_bits", ab)
        layer = cost_of(model, CimConfig()).layers[0]
        assert layer["bit_passes"] == passes and not layer["bits_assumed"]
        assert layer["compute_cycles"] == passes * base["compute_cycles"]
    assert base["bits_assumed"]


def test_hw_file_and_bad_values(tmp_path):
    path = tmp_path / "hw.toml"
    path.write_text("rows = 128\nclock_mhz = 200.0\n")
    hw = CimConfig.from_file(path)
    assert hw.peak_gops == pytest.approx(51.2)
    with pytest.raises(PimcError):
        CimConfig.from_dict({"rows": 0})
    with pytest.raises(PimcError):
        CimConfig.from_dict({"clock_mhz": 0.0})


def test_every_default_field_has_a_source():
    for field in CimConfig.describe():
        assert field["source"] and field["unit"], field["name"]


def test_compile_digits_report_has_peak_and_measured_fusion(tmp_path):
    report_path = tmp_path / "r.json"
    _, report = compile_model(CompileOptions(
        input=str(bundled_model_path()), target="cim", output=str(tmp_path / "o.onnx"), report=str(report_path),
        data="digits", passes=BASIC, calibration_samples=16,
    ))
    cost = json.loads(report_path.read_text())["cost"]
    assert cost["peak_gops"] == pytest.approx(51.2) and f"{cost['peak_tops_per_w']:.3g}" == "10.3"
    assert 0 < cost["throughput_gops"] < cost["peak_gops"]
    assert 0 < cost["tops_per_w"] < cost["peak_tops_per_w"]
    fusion = cost["relu_fusion"]
    assert fusion["fused_layers"] == 3 and fusion["sources"] == ["digits"]
    assert 0 < fusion["adc_saving_fraction"] == pytest.approx(fusion["predicted_saving_fraction"])
    assert set(cost["energy_breakdown_j"]) == {"array", "adc", "digital", "buffers", "weight_writes"}
    assert sum(cost["energy_breakdown_j"].values()) == pytest.approx(cost["energy_j"])
    assert sum(layer["cycles"] for layer in cost["layers"]) == cost["latency_cycles"]


@pytest.mark.skipif("quantize" not in all_passes(), reason="the quantize pass (passes/quantize) is not available yet")
def test_default_pipeline_quantizes_to_signed_8b(tmp_path):
    _, report = compile_model(CompileOptions(
        input=str(bundled_model_path()), target="cim", output=str(tmp_path / "o.onnx"), data="digits",
        calibration_samples=16,
    ))
    assert [p["name"] for p in report["passes"]] == [n for n, _ in CimTarget().default_pipeline()]
    layers = report["cost"]["layers"]
    assert all(layer["weight_bits"] == 8 and layer["act_bits"] == 8 and not layer["bits_assumed"]
               for layer in layers)
    assert report["cost"]["relu_fusion"]["fused_layers"] == 3
    assert math.isfinite(report["cost"]["tops_per_w"])


def test_pattern_library_with_mixed_sizes():
    rng = np.random.default_rng(5)
    library = [[0, 1, 4, 7], [4, 5, 8], [4]]
    ids = rng.integers(-1, 3, (8, 30)).astype(np.int16)
    sizes = np.array([0, 4, 3, 1])[ids.astype(int) + 1]
    model = conv_model(30, 8, 3, 4)
    node = model.graph.node[0]
    ann.set_node_annotation(node, "pattern_library", library)
    ann.set_node_map(model, node, "pattern", ids)
    layer = cost_of(model, CimConfig()).layers[0]
    assert layer["column_tiles"] == int((-(-sizes.sum(axis=1) // 64)).sum())
    bad = conv_model(30, 8, 3, 4)
    ann.set_node_annotation(bad.graph.node[0], "pattern_library", library)
    ann.set_node_map(bad, bad.graph.node[0], "pattern", ids[:, :10])
    with pytest.raises(PimcError):
        cost_of(bad, CimConfig())
