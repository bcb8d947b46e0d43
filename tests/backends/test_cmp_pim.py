"""cmp-pim target: op-cycle formulas, lowering of LBC blocks, the cnn / lbcnn baselines, configs."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pimc.app.compile import CompileOptions, compile_model
from pimc.backends.cmp_pim import (
    CmpPimConfig,
    CmpPimTarget,
    acc_bits,
    add_cycles,
    group_cycles,
    mac_cycles,
    mult_cycles,
    ternary_add_cycles,
)
from pimc.compiler import annotations as ann
from pimc.compiler.baselines import cost_with_baselines
from pimc.compiler.errors import PimcError
from pimc.compiler.loader import infer_shapes
from pimc.compiler.target import get_target
from pimc.compiler.verify import run_model
from pimc.compiler.workload import extract_workload


def lbc_block_model(cin: int = 16, cout: int = 32, q: int = 2, hw: int = 8, comparator: str = "binary"):
    """x → depthwise ternary anchor (Cin·q) → comparator → 1×1 (Cin·q → Cout), annotated like the pass."""
    rng = np.random.default_rng(0)
    anchor = rng.choice([-1.0, 0.0, 1.0], size=(cin * q, 1, 3, 3), p=[0.45, 0.1, 0.45]).astype(np.float32)
    pw = rng.standard_normal((cout, cin * q, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "a"], ["t"], name="anchor", group=cin, kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1])]
    if comparator == "binary":
        nodes += [helper.make_node("Greater", ["t", "zero"], ["g"], name="cmp"),
                  helper.make_node("Cast", ["g"], ["h"], name="cast", to=TensorProto.FLOAT)]
    else:
        nodes.append(helper.make_node("Relu", ["t"], ["h"], name="cmp"))
    nodes.append(helper.make_node("Conv", ["h", "p"], ["y"], name="pw", kernel_shape=[1, 1]))
    inits = [numpy_helper.from_array(anchor, "a"), numpy_helper.from_array(pw, "p"),
             numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    a_node, pw_node = model.graph.node[0], model.graph.node[-1]
    ann.set_node_annotation(a_node, "role", "anchor")
    ann.set_node_annotation(a_node, "layer", "conv")
    for key, value in {"role": "lbc_pointwise", "layer": "conv", "original_cin": cin, "original_cout": cout,
                       "kernel": [3, 3], "original_groups": 1, "comparator": comparator}.items():
        ann.set_node_annotation(pw_node, key, value)
    if comparator == "binary":
        ann.set_node_annotation(pw_node, "act_bits", 1)
    return model, anchor


def full_cost(model: onnx.ModelProto, hw: CmpPimConfig):
    """The target's cost of ``model`` with its cnn / lbcnn baselines costed on the same model as input."""
    return cost_with_baselines(get_target("cmp-pim"), model, model, hw)


def test_cycle_formulas_match_the_documented_equations():
    assert add_cycles(8) == 9
    for n in (1, 2, 4, 8, 16):
        assert mult_cycles(n, n) == n * n + 5 * n - 2
    assert mult_cycles(8, 1) == mult_cycles(1, 8) == 11
    assert acc_bits(8, 8, 576) == 26
    assert mac_cycles(8, 8, 576) == 102 + 27
    assert ternary_add_cycles(8, 9) == 13


def test_one_bit_input_mac_is_one_predicated_accumulate():
    for k in (16, 64, 512):
        accumulate = add_cycles(acc_bits(8, 1, k))
        assert mac_cycles(8, 1, k) == mac_cycles(1, 8, k) == 1 + accumulate
        assert mac_cycles(8, 1, k) < mult_cycles(8, 1) + accumulate
    assert mac_cycles(8, 2, 64) == mult_cycles(8, 2) + add_cycles(acc_bits(8, 2, 64))


def test_lbc_block_lowering_counts_adds_compares_and_pointwise_macs():
    model, anchor = lbc_block_model()
    hw = CmpPimConfig()
    schedule = CmpPimTarget().lower(model, hw)
    kinds = [g.kind for g in schedule.cmpnet]
    assert kinds == ["add", "compare", "mac"]
    add, compare, mac = schedule.cmpnet
    assert add.outputs == 32 * 64 and add.per_output * add.outputs == np.count_nonzero(anchor) * 64
    assert add.cycles_per_op == ternary_add_cycles(8, 9)
    assert compare.outputs == 32 * 64 and compare.cycles_per_op == 1
    assert mac.cycles_per_op == mac_cycles(8, 1, 32)
    assert mac.move_bits == 32 * 64 * 1
    cnn, = schedule.cnn
    assert cnn.outputs == 32 * 64 and cnn.per_output == 16 * 9 and cnn.cycles_per_op == mac_cycles(8, 8, 144)
    assert cnn.move_bits == 16 * 64 * 8 * 9
    lb_anchor, lb_relu, lb_pw = schedule.lbcnn
    assert lb_anchor.kind == "add" and lb_anchor.work() == add.work() and lb_anchor.move_bits == add.move_bits
    assert lb_relu.cycles_per_op == 9 and lb_pw.cycles_per_op == mac_cycles(8, 8, 32)
    assert lb_pw.move_bits == 32 * 64 * 8


def test_baseline_bits_change_only_the_cnn_baseline():
    model, _ = lbc_block_model()
    target = get_target("cmp-pim")
    low, high = CmpPimConfig(), CmpPimConfig(baseline_bits=16)
    a, b = (full_cost(model, hw) for hw in (low, high))
    assert a.energy_j == pytest.approx(b.energy_j)
    assert a.baselines["lbcnn"]["energy_j"] == pytest.approx(b.baselines["lbcnn"]["energy_j"])
    cnn, = target.lower(model, high).cnn
    assert cnn.cycles_per_op == mac_cycles(16, 16, 144) and cnn.move_bits == 16 * 64 * 16 * 9
    assert b.energy_gain_vs["cnn"] > a.energy_gain_vs["cnn"]


def test_report_has_baselines_and_the_comparator_mapping_wins_on_energy():
    model, _ = lbc_block_model()
    hw = CmpPimConfig()
    report = full_cost(model, hw)
    assert set(report.baselines) == {"cnn", "lbcnn"}
    assert report.baselines["cnn"]["model"] == "input" and report.baselines["cnn"]["reference"]
    assert report.energy_gain_vs["cnn"] > 5 and report.energy_gain_vs["lbcnn"] > 2
    assert report.speedup_vs["cnn"] > 1
    assert report.energy_j == pytest.approx(sum(report.energy_breakdown_j.values()))
    assert report.latency_s == pytest.approx(report.latency_cycles / hw.clock_hz)
    data = report.to_dict()
    assert data["cmp_pim"]["lbc_blocks"] == ["conv"]


def test_energy_equation_by_hand_for_one_group():
    model, _ = lbc_block_model(q=1)
    hw = CmpPimConfig(static_power_w=0.0)
    target = get_target("cmp-pim")
    report = target.cost(target.lower(model, hw), hw)
    e_col = (hw.e_sense_fj + hw.e_write_fj) * 1e-15
    mac = next(row for row in report.layers if row["kind"] == "mac")
    expected = 32 * 64 * 16 * mac_cycles(8, 1, 16) * e_col + 16 * 64 * hw.e_move_fj_per_bit * 1e-15
    assert mac["energy_j"] == pytest.approx(expected)


def test_relu_comparator_costs_more_than_the_binary_bit():
    hw = CmpPimConfig()
    binary = full_cost(lbc_block_model(comparator="binary")[0], hw)
    relu = full_cost(lbc_block_model(comparator="relu")[0], hw)
    assert relu.energy_j > binary.energy_j
    assert relu.baselines["cnn"]["energy_j"] == pytest.approx(binary.baselines["cnn"]["energy_j"])


def test_plain_model_baselines_equal_the_model():
    model = lbc_block_model()[0]
    for node in model.graph.node:
        del node.metadata_props[:]
    report = full_cost(model, CmpPimConfig())
    assert report.speedup_vs == {"cnn": pytest.approx(1.0), "lbcnn": pytest.approx(1.0)}


def test_compute_splits_small_layers_over_idle_columns():
    from pimc.backends.cmp_pim import OpGroup

    hw = CmpPimConfig(subarrays=1, cols=256)
    big = OpGroup("big", "mac", 512, 100, 10, 20, 0.0, 0.0)
    assert group_cycles(big, hw)[0] == 2 * 100 * 10
    small = OpGroup("small", "mac", 64, 100, 10, 20, 0.0, 0.0)
    assert group_cycles(small, hw)[0] == math.ceil(100 / 4) * 10 + 2 * 21


def test_hw_file_overrides_and_rejects_unknown_keys(tmp_path):
    good = tmp_path / "hw.toml"
    good.write_text("bus_bits = 512\nweight_bits = 4\n")
    target = get_target("cmp-pim")
    hw = target.config(str(good))
    assert hw.bus_bits == 512 and hw.weight_bits == 4
    bad = tmp_path / "bad.toml"
    bad.write_text("warp_drive = 1\n")
    with pytest.raises(PimcError, match="unknown hardware parameter"):
        target.config(str(bad))
    with pytest.raises(PimcError, match="at least 1"):
        CmpPimConfig.from_dict({"subarrays": 0})


def test_every_parameter_has_a_unit_and_a_source():
    for item in CmpPimConfig.describe():
        assert item["unit"] and item["source"]


def small_conv_net(path) -> str:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def test_default_pipeline_keeps_a_conv_whose_lbc_block_would_cost_more(tmp_path):
    path = small_conv_net(tmp_path / "m.onnx")
    model, report = compile_model(CompileOptions(input=path, target="cmp-pim", write_output=False,
                                                 sets=("comparator-conv.variant=lbc",)))
    stats = next(p["stats"] for p in report["passes"] if p["name"] == "comparator-conv")
    assert stats["replaced"] == [] and "more energy on cmp-pim" in stats["skipped"][0]["reason"]
    assert report["cost"]["energy_gain_vs"]["cnn"] == pytest.approx(1.0)


def test_compile_any_conv_net_substitutes_and_runs_on_onnxruntime(tmp_path):
    path = small_conv_net(tmp_path / "m.onnx")
    out = tmp_path / "m.cmp.onnx"
    sets = ("comparator-conv.variant=separable", "comparator-conv.comparator=binary")
    model, report = compile_model(CompileOptions(input=path, target="cmp-pim", output=str(out), sets=sets))
    assert [r.role for r in extract_workload(model).layers] == ["anchor", "lbc_pointwise"]
    cost = report["cost"]
    assert cost["baselines"]["cnn"]["energy_j"] > 0 and cost["energy_gain_vs"]["cnn"] > 1
    x = {"x": np.ones((1, 3, 8, 8), np.float32)}
    assert run_model(onnx.load(str(out)), [x])[0][0].shape == (1, 8, 8, 8)
