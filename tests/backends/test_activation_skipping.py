"""Every simulator target costs MEASURED zero activations the way its header says, and only those."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from test_escalate_fixtures import conv_model, decompose_model

from pimc.backends.cim import CimConfig, schedule_cost
from pimc.backends.cim import lower_workload as cim_lower
from pimc.backends.cmp_pim import CmpPimConfig
from pimc.backends.escalate import EscalateConfig, cost_schedule, lower_workload
from pimc.compiler import annotations as ann
from pimc.compiler.target import get_target
from pimc.compiler.workload import extract_workload


def _weights(cout: int = 16, cin: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((cout, cin, 3, 3)).astype(np.float32)


def _annotate(model: onnx.ModelProto, op: str, **notes) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for node in model.graph.node:
        if node.op_type == op and (op != "Conv" or ann.get_node_annotation(node, "role") in (None, "basis")):
            for key, value in notes.items():
                ann.set_node_annotation(node, key, value)
    return model


def _escalate(model: onnx.ModelProto, skipping: bool = True):
    hw = EscalateConfig(activation_skipping=skipping)
    return cost_schedule(lower_workload(extract_workload(model), hw), hw)


def test_escalate_dense_path_gates_macs_and_compresses_the_input_map():
    model = conv_model(_weights())
    sparse = _annotate(model, "Conv", input_zero_fraction=0.75, output_zero_fraction=0.5)
    on, off, plain = _escalate(sparse), _escalate(sparse, skipping=False), _escalate(model)
    assert off.energy_j == pytest.approx(plain.energy_j)
    layer, base = on.layers[0], off.layers[0]
    assert layer["energy_breakdown_j"]["mac"] == pytest.approx(0.25 * base["energy_breakdown_j"]["mac"])
    assert layer["offchip_traffic_bits"]["input"] == pytest.approx(
        (0.25 + 1 / 8) * base["offchip_traffic_bits"]["input"])
    assert layer["offchip_traffic_bits"]["output"] == pytest.approx(
        (0.5 + 1 / 8) * base["offchip_traffic_bits"]["output"])
    assert layer["cycles"] == base["cycles"]  # lockstep output pixels skip nothing
    # the dense baseline never skips
    assert on.baselines["dense_same_shape"]["energy_j"] == pytest.approx(plain.baselines["dense_same_shape"]["energy_j"])
    section = on.extra["activation_skipping"]
    assert section["energy_without_j"] == pytest.approx(off.energy_j)
    assert section["energy_with_j"] == pytest.approx(on.energy_j)
    assert section["energy_gain"] > 1.0 and section["measured_layers"] == 1



def test_escalate_skips_weight_stationary_steps_whose_input_vector_is_all_zero():
    model = conv_model(_weights(cout=16, cin=32))  # dense path; W = min(Cg, dense_cols) = 16 channels a step
    vectors = _annotate(model, "Conv", input_zero_fraction=0.75, input_channel_chunks={"8": 0.6, "16": 0.5, "32": 0.2})
    plain = _annotate(model, "Conv", input_zero_fraction=0.75)
    on, off, base = _escalate(vectors).layers[0], _escalate(vectors, skipping=False).layers[0], _escalate(plain).layers[0]
    assert on["mapping"] == base["mapping"] == "weight-stationary"
    assert on["compute_cycles"] == pytest.approx(0.5 * base["compute_cycles"])
    assert on["energy_breakdown_j"]["output_buffer"] == pytest.approx(0.5 * base["energy_breakdown_j"]["output_buffer"])
    assert on["energy_breakdown_j"]["mac"] == pytest.approx(base["energy_breakdown_j"]["mac"])  # already gated
    assert off["compute_cycles"] == pytest.approx(_escalate(model, skipping=False).layers[0]["compute_cycles"])


def test_escalate_reads_the_next_wider_vector_and_nothing_when_none_is_as_wide():
    model = conv_model(_weights(cout=16, cin=32))
    wider = _annotate(model, "Conv", input_zero_fraction=0.75, input_channel_chunks={"8": 0.6, "32": 0.2})
    narrow = _annotate(model, "Conv", input_zero_fraction=0.75, input_channel_chunks={"4": 0.9, "8": 0.6})
    base = _escalate(_annotate(model, "Conv", input_zero_fraction=0.75)).layers[0]["compute_cycles"]
    assert _escalate(wider).layers[0]["compute_cycles"] == pytest.approx(0.8 * base)
    assert _escalate(narrow).layers[0]["compute_cycles"] == pytest.approx(base)


def test_escalate_coefficient_stage_skips_psum_updates_of_all_zero_intermediate_tiles():
    model = decompose_model(conv_model(_weights(cout=16, cin=32)), rank=2)
    coef = {"input_zero_fraction": 0.5, "input_channel_chunks": {"32": 0.4}}  # Tc·m = 16·2 = 32 values
    annotated = onnx.ModelProto.FromString(model.SerializeToString())
    for node in annotated.graph.node:
        if ann.get_node_annotation(node, "role") == "coefficient":
            for key, value in coef.items():
                ann.set_node_annotation(node, key, value)
    hw = EscalateConfig()
    on, base = _escalate(annotated).layers[0], _escalate(model).layers[0]
    assert on["kind"] == "decomposed" and on["channel_tiles"] == 2
    geo_words = 16 * 8 * 8  # Cout · P
    per_word = (2 * 2 * hw.psum_bits, hw.act_bits)  # psum reads + writes over nT tiles, the final write
    saved = geo_words * 2 * 2 * 0.4 * hw.psum_bits / (geo_words * (per_word[0] + per_word[1]))
    assert on["energy_breakdown_j"]["output_buffer"] == pytest.approx(
        (1 - saved) * base["energy_breakdown_j"]["output_buffer"])
    assert on["compute_cycles"] == pytest.approx(base["compute_cycles"])  # lockstep pixels


@pytest.mark.parametrize("decomposed", [False, True])
def test_escalate_fetches_the_stored_map_when_the_gate_runs_on_the_way_in(decomposed: bool):
    model = conv_model(_weights(), h=16, w=16)
    if decomposed:
        model = decompose_model(model, rank=2)
    gated = _annotate(model, "Conv", input_zero_fraction=0.75)
    shared = _annotate(model, "Conv", input_zero_fraction=0.75, input_stored_zero_fraction=0.5)
    kind = "decomposed" if decomposed else "dense"
    one = next(layer for layer in _escalate(gated).layers if layer["kind"] == kind)
    two = next(layer for layer in _escalate(shared).layers if layer["kind"] == kind)
    # off chip: the stored map (density 0.5) is fetched; on chip: the gated map (0.25), as without one
    assert two["offchip_traffic_bits"]["input"] == pytest.approx(
        (0.5 + 1 / 8) / (0.25 + 1 / 8) * one["offchip_traffic_bits"]["input"])
    assert two["onchip_traffic_bits"]["input"] == pytest.approx(one["onchip_traffic_bits"]["input"])
    assert two["energy_breakdown_j"]["mac"] == pytest.approx(one["energy_breakdown_j"]["mac"])
    # the sparse baseline fetches the same stored map: dearer by exactly that DRAM difference
    extra_bits = two["offchip_traffic_bits"]["input"] - one["offchip_traffic_bits"]["input"]
    sparse = [_escalate(m).baselines["sparse_same_shape"]["energy_j"] for m in (gated, shared)]
    assert sparse[1] - sparse[0] == pytest.approx(extra_bits * EscalateConfig().dram_pj / 64 * 1e-12, rel=1e-6)
    # a stored map sparser than the gated input cannot be: it is never fetched below the input's density
    odd = _annotate(model, "Conv", input_zero_fraction=0.75, input_stored_zero_fraction=0.9)
    three = next(layer for layer in _escalate(odd).layers if layer["kind"] == kind)
    assert three["offchip_traffic_bits"]["input"] == pytest.approx(one["offchip_traffic_bits"]["input"])

def test_escalate_basis_tiles_wait_for_their_densest_channel():
    density = [0.1] * 16 + [0.1] * 15 + [0.6]  # tile 0 max 0.1, tile 1 max 0.6 (basis_cols = 16)
    pair = decompose_model(conv_model(_weights(), h=16, w=16), rank=2)
    sparse = _annotate(pair, "Conv", input_zero_fraction=1 - float(np.mean(density)),
                       input_channel_density=density)
    on = next(layer for layer in _escalate(sparse).layers if layer["kind"] == "decomposed")
    off = next(layer for layer in _escalate(sparse, skipping=False).layers if layer["kind"] == "decomposed")
    assert on["basis_cycles"] == pytest.approx(off["basis_cycles"] * (0.1 + 0.6) / 2)
    assert on["cycles"] <= off["cycles"]
    assert on["energy_j"] < off["energy_j"]


def test_escalate_unmeasured_model_reports_that_nothing_was_skipped():
    section = _escalate(conv_model(_weights())).extra["activation_skipping"]
    assert section["measured_layers"] == 0 and "cycles_with" not in section


def test_cim_skips_all_zero_row_tiles_and_uncharged_rows():
    model = conv_model(_weights(cin=64))  # K = 576 rows: 9 row tiles of N = 64
    sparse = _annotate(model, "Conv", input_zero_fraction=0.8, input_zero_chunks={"1": 0.8, "64": 0.5})
    hw = CimConfig()
    on = schedule_cost(cim_lower(extract_workload(sparse).layers, hw), hw)
    off = schedule_cost(cim_lower(extract_workload(sparse).layers, hw.replace(activation_skipping=False)),
                        hw.replace(activation_skipping=False))
    a, b = on.layers[0], off.layers[0]
    assert a["conversions"] == pytest.approx(0.5 * b["conversions"], rel=1e-6)
    assert a["compute_cycles"] == pytest.approx(0.5 * b["compute_cycles"], rel=1e-6)
    # array energy follows the non-zero rows: 0.2 of all rows, carried by the evaluated half of the tiles
    assert a["energy_breakdown_j"]["array"] == pytest.approx(0.2 * b["energy_breakdown_j"]["array"], rel=1e-6)
    assert on.extra["activation_skipping"]["speedup"] == pytest.approx(off.latency_cycles / on.latency_cycles)


def test_cim_reads_the_next_larger_measured_chunk():
    model = _annotate(conv_model(_weights(cin=64)), "Conv", input_zero_fraction=0.5,
                      input_zero_chunks={"1": 0.5, "32": 0.4, "128": 0.1})
    record = extract_workload(model).layers[0]
    assert record.input_zero_chunk_fraction(64) == 0.1
    assert record.input_zero_chunk_fraction(512) == 0.0


def test_cmp_pim_predicates_off_zero_operands_without_saving_cycles():
    model = conv_model(_weights())
    sparse = _annotate(model, "Conv", input_zero_fraction=0.6)
    target, hw = get_target("cmp-pim"), CmpPimConfig()
    on = target.cost(target.lower(sparse, hw), hw)
    off = target.cost(target.lower(sparse, hw.replace(activation_skipping=False)), hw.replace(activation_skipping=False))
    assert on.latency_cycles == off.latency_cycles
    assert on.energy_breakdown_j["mac"] == pytest.approx(0.4 * off.energy_breakdown_j["mac"])
    assert on.extra["activation_skipping"]["energy_gain"] == pytest.approx(off.energy_j / on.energy_j)
