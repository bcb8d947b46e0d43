"""quantize.kernels=measured: one-node islands cut from the int8 graph, and the int8-or-float rule."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from pimc.compiler.errors import PimcError
from pimc.compiler.modelio import read_model
from pimc.compiler.passbase import PassContext, get_pass
from pimc.models import bundled_model_path
from pimc.passes.quantize import kernel_choice, quantize
from pimc.runtime.ort_graph import op_counts, optimized_model

PREP = ("fold-constants", "eliminate-identity", "fold-batchnorm")


def _context(**kw) -> PassContext:
    return PassContext(target="onnxruntime", **kw)


def _prepared() -> onnx.ModelProto:
    model = read_model(bundled_model_path())
    ctx = _context()
    for name in PREP:
        model = get_pass(name)().run(model, ctx).model
    return model


def _quantized(**opts) -> tuple[onnx.ModelProto, dict]:
    result = get_pass("quantize")(**opts).run(_prepared(), _context())
    return result.model, result.stats


def _optimized_ops(model: onnx.ModelProto) -> Counter:
    return op_counts(optimized_model(model, "all"))


def _convs(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == "Conv"]


def test_islands_fuse_like_the_graph_and_agree(tmp_path: Path) -> None:
    model, _ = _quantized()
    islands, unmeasured = kernel_choice.cut_islands(model, _convs(model))
    assert len(islands) == 3 and not unmeasured
    for island in islands:
        int8_ops = _optimized_ops(island.int8)
        float_ops = _optimized_ops(island.float)
        assert int8_ops["QLinearConv"] == 1 and int8_ops["Conv"] + int8_ops["FusedConv"] == 0
        assert float_ops["QLinearConv"] == 0 and float_ops["Conv"] + float_ops["FusedConv"] == 1
        # the same arithmetic up to rounding: the int8 kernel requantizes its exact integer sum, the float
        # island quantizes the float sum of the dequantized operands
        outputs = []
        for variant in (island.int8, island.float):
            session = ort.InferenceSession(variant.SerializeToString(), providers=["CPUExecutionProvider"])
            outputs.append(session.run(None, {session.get_inputs()[0].name: island.codes[:8]})[0])
        assert outputs[0].dtype == np.uint8 and outputs[0].shape == outputs[1].shape
        diff = np.abs(outputs[0].astype(int) - outputs[1].astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.05


def test_unquantized_node_is_not_measured() -> None:
    model, _ = _quantized(exclude=[_convs(_prepared())[1]])
    name = _convs(model)[1]
    _, unmeasured = kernel_choice.cut_islands(model, [name, "missing"])
    assert unmeasured == {name: "its weight is not quantized", "missing": "not in the quantized graph"}


@pytest.mark.parametrize(("float_ms", "expected"), [(0.5, "float"), (0.95, "int8"), (2.0, "int8")])
def test_rule_keeps_float_only_beyond_the_margin(monkeypatch, float_ms: float, expected: str) -> None:
    model, _ = _quantized()
    name = _convs(model)[0]

    def fake_times(islands, batches, repeats, threads):
        return [({b: 1.0 for b in batches}, {b: float_ms for b in batches}) for _ in islands]

    monkeypatch.setattr(kernel_choice, "_time_pairs", fake_times)
    chosen, report = kernel_choice.choose_float_kernels(model, [name], [1, 64], 3, None, 0.1)
    assert report["nodes"][name]["choice"] == expected
    assert chosen == ([name] if expected == "float" else [])
    assert report["nodes"][name]["float_over_int8"] == pytest.approx(float_ms)


def test_geometric_mean_weighs_batches_alike() -> None:
    assert kernel_choice.geometric_mean([0.25, 4.0]) == pytest.approx(1.0)


@pytest.mark.parametrize("kept", ["measured", "all_int8", "float"])
def test_pass_keeps_the_whole_model_measured_fastest(monkeypatch, tmp_path: Path, kept: str) -> None:
    first = _convs(_prepared())[0]
    monkeypatch.setattr(quantize, "choose_float_kernels",
                        lambda model, names, *a: ([first], {"nodes": {first: {"float_over_int8": 0.5}}}))
    compared = {}

    def fake_compare(models, *a):
        compared.update(models)
        return {"kept": kept}

    monkeypatch.setattr(quantize, "compare_whole", fake_compare)
    result = get_pass("quantize")(kernels="measured").run(_prepared(), _context())
    model, stats = result.model, result.stats
    assert set(compared) == {"measured", "all_int8", "float"}
    ops = _optimized_ops(model)
    assert stats["kernel_choice"]["whole_model"] == {"kept": kept}
    if kept == "all_int8":
        assert ops["QLinearConv"] == 3 and stats["kernel_choice"]["float"] == []
        assert first in stats["quantized"] and result.changed
    elif kept == "measured":
        assert ops["QLinearConv"] == 2 and ops["Conv"] + ops["FusedConv"] == 1
        assert stats["kernel_choice"]["float"] == [first] and first not in stats["quantized"]
        assert any(s["node"] == first and "measured faster" in s["reason"] for s in stats["skipped"])
    else:
        assert not result.changed and ops["QLinearConv"] == 0 and stats["quantized"] == {}
        assert len(stats["kernel_choice"]["float"]) == 4  # 3 convs and the Gemm
        assert onnx.checker.check_model(model) is None
        assert [n.op_type for n in model.graph.node] == [n.op_type for n in _prepared().graph.node]


def test_measured_choice_runs_end_to_end() -> None:
    model, stats = _quantized(kernels="measured", kernel_repeats=3, kernel_batches=["1", "4"])
    report = stats["kernel_choice"]
    assert set(report["nodes"]) == set(_convs(_prepared())) | {n.name for n in _prepared().graph.node
                                                                  if n.op_type == "Gemm"}
    assert all(report["nodes"][n]["choice"] in ("int8", "float") for n in report["nodes"])
    assert all(f"int8_ms_b{b}" in r for r in report["nodes"].values() for b in (1, 4))


@pytest.mark.parametrize(("opts", "message"), [
    ({"kernels": "measured", "layout": "inputs"}, "needs layout=int8"),
    ({"kernel_batches": ["0"]}, "kernel_batches"),
    ({"kernel_batches": ["x"]}, "kernel_batches"),
])
def test_bad_kernel_options(opts: dict, message: str) -> None:
    with pytest.raises(PimcError, match=message):
        _quantized(**opts)
