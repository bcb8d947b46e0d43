"""compile_warnings: slower / costlier than the input, larger than the input, layers skipped by the cost model."""

from __future__ import annotations

from pimc.app.report_warnings import compile_warnings


def report(speedup: float = 2.0, gain: float = 2.0, macs: int = 100, params: int = 10, skipped=None) -> dict:
    return {
        "target": "escalate",
        "model": {"params_before": 10, "params": params, "macs_before": 100, "macs": macs,
                  "effective_macs_before": 100, "effective_macs": 50},
        "cost": {"baselines": {"dense": {"model": "input", "reference": True}, "sparse": {"model": "input"}},
                 "speedup_vs": {"dense": speedup, "sparse": 1.5}, "energy_gain_vs": {"dense": gain, "sparse": 1.5},
                 "layers": [], "skipped": skipped or []},
    }


def test_no_warning_when_the_output_is_smaller_and_faster_than_the_input():
    assert compile_warnings(report()) == []


def test_slower_and_costlier_than_the_input_say_so_with_a_cause():
    warnings = compile_warnings(report(speedup=0.5, gain=0.8, macs=150))
    assert warnings[0].startswith("the output is 2x slower than the input model on escalate (baseline 'dense')")
    assert "more MACs (150 vs 100)" in warnings[0]
    assert warnings[1].startswith("the output uses 1.25x the energy of the input model")
    assert "the output has more MACs than the input (150 vs 100)" in warnings


def test_only_the_reference_baseline_counts_and_overrides_are_named():
    data = report(speedup=0.5)
    data["cost"]["baselines"]["dense"]["model"] = "d.onnx"
    warnings = compile_warnings(data)
    assert len(warnings) == 1 and "than the baseline model d.onnx" in warnings[0]
    assert "overheads" in warnings[0]


def test_more_params_and_skipped_layers():
    warnings = compile_warnings(report(params=12, skipped=[{"node": "mm", "reason": "no constant weight"}]))
    assert any("more params than the input (12 vs 10" in w for w in warnings)
    assert "1 layer(s) skipped by the escalate cost model (mm: no constant weight)" in warnings


def test_no_cost_section_gives_only_model_warnings():
    data = report(params=11)
    data["cost"] = None
    assert compile_warnings(data) == [compile_warnings(report(params=11))[0]]


def test_escalate_hint_names_the_bounding_stage():
    data = report(speedup=0.5)
    data["cost"]["layers"] = [{"kind": "decomposed", "basis_cycles": 900.0, "coefficient_cycles": 100.0,
                               "coefficient_density": 0.2}]
    assert "the basis stage bounds the decomposed layers (900 basis vs 100 coefficient cycles)" in \
        compile_warnings(data)[0]
    data["cost"]["layers"][0].update(basis_cycles=10.0, coefficient_density=0.9)
    assert "keep 90% of their coefficients" in compile_warnings(data)[0]


def test_another_baseline_beating_the_output_is_reported():
    data = report()
    data["cost"]["speedup_vs"]["sparse"] = 0.5
    data["cost"]["energy_gain_vs"]["sparse"] = 0.25
    data["cost"]["baselines"]["sparse"]["what"] = "zero skipping"
    assert compile_warnings(data) == ["baseline 'sparse' beats the output: 2x faster and 0.25x the energy "
                                      "(zero skipping)"]
    data["cost"]["baselines"]["dense_same_shape"] = {"model": "output"}
    data["cost"]["speedup_vs"]["dense_same_shape"] = 0.1
    assert len(compile_warnings(data)) == 1


def test_layers_left_uncompressed_are_listed_with_reasons():
    data = report()
    data["passes"] = [
        {"name": "fold-constants", "stats": {"skipped": [{"node": "x", "reason": "not constant"}]}},
        {"name": "comparator-conv", "stats": {"skipped": [
            {"node": "c1", "reason": "every candidate breaks the accuracy budget (0.10 points here)", "kind": "budget"},
            {"node": "c2", "reason": "substitution gives more learnable params (275 vs 140)", "kind": "cost"},
            {"node": "c3", "reason": "already has role 'anchor'"}]}},
        {"name": "quantize", "stats": {"skipped": [{"node": "q", "reason": "already quantized"}],
                                        "bit_choice": {"skipped": [{"node": "fc", "reason": "breaks budget",
                                                                    "kind": "budget"}]}}},
    ]
    warnings = compile_warnings(data)
    assert warnings[0] == ("layers left uncompressed by comparator-conv (2): c1: every candidate breaks the "
                           "accuracy budget (0.10 points here); c2: substitution gives more learnable params "
                           "(275 vs 140)")
    assert warnings[1] == "layers left uncompressed by quantize (1): fc: breaks budget"
    assert len(warnings) == 2


def test_budget_nearly_spent_from_eighty_percent_of_the_allowed_drop():
    data = report()
    data["accuracy"] = {"measured": True, "drop_points": 0.79, "max_drop_points": 1.0}
    assert compile_warnings(data) == []
    data["accuracy"]["drop_points"] = 0.8
    assert compile_warnings(data) == ["accuracy budget nearly spent: 0.80 of 1 points (80%) lost on the test "
                                      "split; a different seed or data may exceed it"]
    data["accuracy"] = {"measured": False}
    assert compile_warnings(data) == []


def onnxruntime_report(speedups: dict[int, float], quantized: bool) -> dict:
    data = report()
    data.update(target="onnxruntime", cost=None, passes=[{"name": "quantize", "changed": quantized}])
    data["latency"] = {"measured": True, "batches": list(speedups),
                       **{f"speedup_b{b}": s for b, s in speedups.items()},
                       **{f"batch_b{b}": b for b in speedups}}
    return data


def test_onnxruntime_output_measured_slower_says_so():
    warnings = compile_warnings(onnxruntime_report({1: 0.5, 64: 1.2}, quantized=True))
    assert len(warnings) == 1 and "batch 1: 2.00x slower" in warnings[0] and "batch 64" not in warnings[0]
    assert "quantize.kernels=measured" in warnings[0]
    plain = compile_warnings(onnxruntime_report({1: 0.5, 64: 0.8}, quantized=False))
    assert "batch 64: 1.25x slower" in plain[0] and "kernels" not in plain[0]


def test_onnxruntime_within_the_spread_of_one_run_is_not_slower():
    assert compile_warnings(onnxruntime_report({1: 0.95, 64: 1.0}, quantized=True)) == []
    unmeasured = onnxruntime_report({1: 0.5}, quantized=True)
    unmeasured["latency"] = {"measured": False, "note": "latency not measured: the model has more than one input"}
    assert compile_warnings(unmeasured) == []
