"""The escalate target: cost equations on hand-computed cases, monotonicity, baselines, config, pipeline."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import tomllib
from test_escalate_fixtures import conv_model, decompose_model, pair_model, rows_with_nnz

from pimc.backends.escalate import EscalateConfig, cost_schedule, lower_workload, sram_pj_per_bit
from pimc.compiler import annotations as ann
from pimc.compiler.errors import PimcError
from pimc.compiler.target import get_target
from pimc.compiler.workload import extract_workload


def run(model: onnx.ModelProto, hw: EscalateConfig | None = None):
    hw = hw or EscalateConfig()
    return cost_schedule(lower_workload(extract_workload(model), hw), hw)


def weights(cout: int, cin: int, k: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((cout, cin, k, k)).astype(np.float32)


def test_dense_cycles_equal_ideal_macs_per_pe_when_perfectly_tiled():
    report = run(conv_model(weights(32, 32), 8, 8))
    layer = report.layers[0]
    assert layer["kind"] == "dense"
    assert layer["macs"] == 32 * 32 * 9 * 64
    assert layer["compute_cycles"] == layer["macs"] / 256
    assert layer["bound"] == "compute"
    assert report.baselines["dense_same_shape"]["latency_cycles"] == layer["macs"] / 256


def test_dense_baseline_of_a_pair_is_the_dense_path_of_its_reconstruction():
    original = conv_model(weights(32, 32), 8, 8)
    dense = run(original).layers[0]
    pair = run(decompose_model(original, rank=9)).layers[0]
    assert pair["kind"] == "decomposed"
    assert pair["baselines"]["dense_same_shape"]["cycles"] == dense["cycles"]
    assert pair["storage_bits"]["dense"] == 32 * 32 * 9 * 8


def test_basis_first_pipeline_hand_computed():
    cin, cout, m, per_row = 16, 16, 4, 10
    basis = np.random.default_rng(1).uniform(0.5, 1.0, (m, 3, 3))
    model = pair_model(basis, rows_with_nnz(cout, cin, m, per_row))
    hw = EscalateConfig(intermediate_buffer_kb=4.0)
    layer = run(model, hw).layers[0]
    b = min(math.ceil(m / 8) * 9 * 64, math.ceil(8 / 8) * m * 9 * 8)
    c = (per_row + 1) * math.ceil(8 / 8) * 8
    assert (b, c) == (288, 88)
    tiles = math.ceil(64 * 2 * cin * m * 16 / (4 * 8192))
    assert layer["spatial_tiles"] == tiles == 4
    expected = (b + tiles * max(b, c) - max(b, c) + c) / tiles
    assert layer["compute_cycles"] == pytest.approx(expected) == 310
    assert layer["basis_cycles"] == b and layer["coefficient_cycles"] == c
    assert layer["stall_cycles"] == pytest.approx(expected - c)
    assert layer["fill_cycles"] == pytest.approx(expected - b)
    assert layer["bottleneck"] == "basis"
    assert layer["basis_macs"] == 64 * cin * m * 9
    assert layer["coefficient_macs"] == 64 * cout * per_row
    mac_pj = layer["basis_macs"] * (0.2 + 0.1 * 16 / 32) + layer["coefficient_macs"] * (0.2 * 16 / 8 + 0.1)
    assert layer["energy_breakdown_j"]["mac"] == pytest.approx(mac_pj * 1e-12)
    index = min(cout * per_row * 6 + cout * 7, cout * cin * m)
    weights_bits = m * 9 * 8 + cout * per_row * 8 + index
    assert layer["offchip_traffic_bits"] == {"input": cin * 64 * 8, "output": cout * 64 * 8, "weights": weights_bits}
    assert "intermediate" not in layer["offchip_traffic_bits"]
    dram_pj = (2 * 64 * 16 * 8 + weights_bits) * 1950 / 64
    assert layer["energy_breakdown_j"]["dram"] == pytest.approx(dram_pj * 1e-12)
    assert layer["buffer_occupancy_bits"]["intermediate"] == 16 * 2 * cin * m * 16


def test_single_tile_pipeline_runs_stages_back_to_back():
    basis = np.ones((4, 3, 3))
    layer = run(pair_model(basis, rows_with_nnz(16, 16, 4, 10))).layers[0]
    assert layer["spatial_tiles"] == 1
    assert layer["compute_cycles"] == layer["basis_cycles"] + layer["coefficient_cycles"]


def test_sram_energy_interpolates_horowitz_points():
    hw = EscalateConfig()
    assert sram_pj_per_bit(hw, 8) == pytest.approx(10 / 64)
    assert sram_pj_per_bit(hw, 32) == pytest.approx(20 / 64)
    assert sram_pj_per_bit(hw, 1024) == pytest.approx(100 / 64)
    assert sram_pj_per_bit(hw, 8) < sram_pj_per_bit(hw, 16) < sram_pj_per_bit(hw, 32) < sram_pj_per_bit(hw, 64)


def test_more_zero_coefficients_mean_fewer_coefficient_cycles():
    original = conv_model(weights(64, 64, seed=3), 16, 16)
    layers = [run(decompose_model(original, 5, t)).layers[0] for t in (0.0, 0.5, 1.0, 1.5)]
    cycles = [layer["coefficient_cycles"] for layer in layers]
    macs = [layer["coefficient_macs"] for layer in layers]
    assert cycles == sorted(cycles, reverse=True) and len(set(cycles)) == 4
    assert macs == sorted(macs, reverse=True)
    storage = [layer["storage_bits"]["escalate"] for layer in layers]
    assert storage == sorted(storage, reverse=True)


def test_pruned_coefficients_beat_the_dense_baseline():
    from pimc.compiler.baselines import cost_with_baselines

    original = conv_model(weights(64, 64, seed=3), 16, 16)
    hw = EscalateConfig()
    report = cost_with_baselines(get_target("escalate"), decompose_model(original, 5, 1.0), original, hw)
    assert report.baselines["dense"]["model"] == "input"
    assert report.baselines["dense"]["latency_cycles"] == run(original).latency_cycles
    assert report.speedup_vs["dense"] > 1.0 and report.speedup_vs["dense_same_shape"] > 1.0
    assert report.energy_gain_vs["dense"] > 1.0
    assert report.extra["compression"]["ratio"] > 2.0


def _with_note(model: onnx.ModelProto, node_name: str, key: str, value) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    node = next(n for n in model.graph.node if n.name == node_name)
    ann.set_node_annotation(node, key, value)
    return model


def test_lower_coefficient_bits_cut_traffic_and_energy():
    model = pair_model(np.ones((4, 3, 3)), rows_with_nnz(32, 32, 4, 40))
    eight = run(model).layers[0]
    four = run(_with_note(model, "conv_coef", "weight_bits", 4)).layers[0]
    assert four["bits"]["coefficient"] == 4
    assert four["offchip_traffic_bits"]["weights"] < eight["offchip_traffic_bits"]["weights"]
    assert four["energy_j"] < eight["energy_j"]
    assert four["energy_breakdown_j"]["mac"] < eight["energy_breakdown_j"]["mac"]
    by_config = run(model, EscalateConfig(coef_bits=4)).layers[0]
    assert by_config["offchip_traffic_bits"]["weights"] == four["offchip_traffic_bits"]["weights"]


def test_hybrid_bits_from_annotations():
    model = pair_model(np.ones((4, 3, 3)), rows_with_nnz(16, 16, 4, 10))
    model = _with_note(model, "conv_basis", "weight_bits", 8)
    model = _with_note(model, "conv_coef", "weight_bits", 4)
    model = _with_note(model, "conv_coef", "act_bits", 8)
    layer = run(model).layers[0]
    assert layer["bits"]["basis"] == 8 and layer["bits"]["coefficient"] == 4
    assert layer["bits"]["intermediate"] == 8


def test_lower_activation_bits_cut_dense_traffic():
    model = conv_model(weights(16, 16), 16, 16)
    eight = run(model).layers[0]
    four = run(_with_note(model, "conv", "act_bits", 4)).layers[0]
    assert four["offchip_traffic_bits"]["input"] == eight["offchip_traffic_bits"]["input"] / 2
    assert four["energy_j"] < eight["energy_j"]


def test_sparse_baseline_skips_zeros_with_index_overhead():
    w = weights(32, 32)
    dense_report = run(conv_model(w, 8, 8))
    pruned = w.copy()
    pruned[np.abs(pruned) < 1.0] = 0.0
    report = run(conv_model(pruned, 8, 8))
    sparse = report.baselines["sparse_same_shape"]
    assert sparse["latency_cycles"] < dense_report.baselines["sparse_same_shape"]["latency_cycles"]
    assert sparse["energy_breakdown_j"]["index"] > 0
    rows = np.count_nonzero(pruned.reshape(32, -1), axis=1)
    expected = sum(min((g.max() + 1) * 8, (math.ceil(g.max() / 16) + 1) * 64) for g in rows.reshape(2, 16))
    assert sparse["latency_cycles"] >= expected or sparse["latency_cycles"] == pytest.approx(expected)
    assert report.layers[0]["cycles"] == dense_report.layers[0]["cycles"]


def test_config_override_from_file_changes_results(tmp_path: Path):
    model = decompose_model(conv_model(weights(32, 32), 16, 16), 5, 1.0)
    target = get_target("escalate")
    base = target.cost(target.lower(model, target.config()), target.config())
    path = tmp_path / "hw.toml"
    path.write_text("clock_mhz = 500.0\nbasis_cols = 8\ncoef_rows = 8\ndram_pj = 1300.0\n")
    hw = target.config(str(path))
    assert isinstance(hw, EscalateConfig) and hw.basis_cols == 8
    other = target.cost(target.lower(model, hw), hw)
    assert other.latency_cycles != base.latency_cycles
    assert other.latency_s > base.latency_s
    assert other.energy_breakdown_j["dram"] < base.energy_breakdown_j["dram"]


def test_narrow_dram_makes_layers_memory_bound():
    model = conv_model(weights(64, 64), 8, 8)
    layer = run(model, EscalateConfig(dram_gbps=0.5)).layers[0]
    assert layer["bound"] == "memory" and layer["cycles"] == layer["dram_cycles"] > layer["compute_cycles"]


def test_onchip_activations_remove_activation_traffic():
    model = conv_model(weights(16, 16), 8, 8)
    layer = run(model, EscalateConfig(onchip_activations=True)).layers[0]
    assert layer["offchip_traffic_bits"]["input"] == 0 and layer["offchip_traffic_bits"]["output"] == 0


def test_bad_config_values_are_user_errors(tmp_path: Path):
    path = tmp_path / "hw.toml"
    path.write_text("pe_count = 3\n")
    with pytest.raises(PimcError, match="unknown hardware parameter"):
        get_target("escalate").config(str(path))
    with pytest.raises(PimcError, match="must be positive"):
        EscalateConfig.from_dict({"basis_rows": 0})


def test_documented_config_file_matches_the_defaults():
    path = Path(__file__).resolve().parents[2] / "backends" / "escalate.toml"
    values = tomllib.loads(path.read_text())
    defaults = {f.name: f.default for f in dataclasses.fields(EscalateConfig)}
    assert values == defaults
    for f in dataclasses.fields(EscalateConfig):
        assert f.metadata["source"], f.name


def test_unmatched_basis_node_falls_back_to_the_dense_path():
    model = pair_model(np.ones((4, 3, 3)), rows_with_nnz(16, 16, 4, 10))
    model = _with_note(model, "conv_coef", "layer", "elsewhere")
    report = run(model)
    assert [layer["kind"] for layer in report.layers] == ["dense", "dense"]
    assert {s["layer"] for s in report.extra["skipped"]} == {"conv", "elsewhere"}


def test_depthwise_and_gemm_take_the_dense_path():
    from onnx import helper, numpy_helper

    from pimc.compiler.loader import infer_shapes

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 32, 16, 16])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(weights(32, 1), "Wd"),
             numpy_helper.from_array(np.ones((10, 32), np.float32), "Wf"),
             numpy_helper.from_array(np.array([1, -1], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "Wd"], ["d"], name="dw", group=32, pads=[1] * 4),
             helper.make_node("GlobalAveragePool", ["d"], ["p"], name="gap"),
             helper.make_node("Reshape", ["p", "shape"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "Wf"], ["y"], name="fc", transB=1)]
    model = infer_shapes(helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                                           opset_imports=[helper.make_opsetid("", 17)]))
    report = run(model)
    dw, fc = report.layers
    assert dw["kind"] == fc["kind"] == "dense"
    assert dw["mapping"] == "output-stationary"
    assert dw["compute_cycles"] == math.ceil(32 / 16) * math.ceil(16 / 16) * 16 * 9
    assert fc["macs"] == 320


def _has_passes(*names: str) -> bool:
    from pimc.compiler.passbase import all_passes

    return all(n in all_passes() for n in names)


def test_default_pipeline_lists_the_decomposition_passes():
    names = [n for n, _ in get_target("escalate").default_pipeline()]
    assert names == ["fold-constants", "eliminate-identity", "fold-batchnorm", "fuse-relu", "decompose",
                     "shrink", "cleanup", "activation-sparsity"]


@pytest.mark.skipif(not _has_passes("decompose", "shrink"), reason="decompose/shrink passes not registered yet")
def test_compile_resnet20_runs_on_onnxruntime(tmp_path: Path):
    from pimc.app.compile import CompileOptions, compile_model
    from pimc.compiler.sessions import make_session
    from pimc.models.train import export_onnx
    from pimc.models.zoo import MODELS, build_model

    src = tmp_path / "resnet20.onnx"
    export_onnx(build_model("resnet20"), src, MODELS["resnet20"].input_shape)
    out = tmp_path / "out.onnx"
    _, report = compile_model(CompileOptions(input=str(src), target="escalate", output=str(out),
                                             sets=("decompose.prune=1.0",)))
    cost = report["cost"]
    assert cost["decomposed_layers"] == 19 and cost["dense_layers"] == 3
    assert cost["speedup_vs"]["dense"] > 1 and cost["energy_gain_vs"]["sparse"] > 1
    assert cost["compression"]["ratio"] > 1
    session = make_session(str(out))
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (2, 10)


@pytest.mark.parametrize("rank", [None, 4])
def test_energy_by_data_kind_adds_up_to_the_total(rank):
    model = conv_model(weights(16, 16), 8, 8)
    if rank:
        model = decompose_model(model, rank=rank)
    report = run(model)
    by_kind = report.extra["energy_by_kind_j"]
    assert set(by_kind) == {"weights", "activations_in", "activations_out", "partial_sums", "intermediate", "macs",
                            "index"}
    assert math.isclose(sum(by_kind.values()), report.energy_j, rel_tol=1e-9)
    assert (by_kind["intermediate"] > 0) == bool(rank)


def test_measured_zeros_give_the_breakdown_with_and_without_skipping():
    model = conv_model(weights(16, 16), 8, 8)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    ann.set_node_annotation(conv, "input_zero_fraction", 0.7)
    skipping = run(model).extra["activation_skipping"]
    with_, without = skipping["energy_by_kind_with_j"], skipping["energy_by_kind_without_j"]
    assert with_["macs"] < without["macs"] and with_["weights"] == pytest.approx(without["weights"])
    assert math.isclose(sum(with_.values()), skipping["energy_with_j"], rel_tol=1e-9)
