"""runtime/ort_graph: onnxruntime's optimized graph, kernel signatures and the conv MACs it executes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pimc.compiler.loader import load_model
from pimc.compiler.stats import model_stats
from pimc.models import bundled_model_path
from pimc.runtime.datasets import data_splits
from pimc.runtime.ort_graph import (
    executed_conv_macs,
    kernel_difference,
    optimized_model,
    profile_kernels,
    quantize_static_baseline,
)
from pimc.runtime.session import model_input

PASSES = "fold-constants,eliminate-identity,fold-batchnorm,quantize,cleanup"


def _conv(c_in: int, c_out: int, size: int = 8) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_out, size, size])],
                              [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_executed_macs_equal_the_models_without_nchwc():
    model = _conv(2, 3)
    kernels = profile_kernels(model, np.ones((1, 2, 8, 8), np.float32), runs=2, level="basic")
    assert executed_conv_macs(kernels) == 3 * 2 * 9 * 64


def test_nchwc_pads_output_channels_to_a_block():
    model = _conv(2, 3)
    kernels = profile_kernels(model, np.ones((1, 2, 8, 8), np.float32), runs=2, level="all")
    ratio = executed_conv_macs(kernels) / (3 * 2 * 9 * 64)
    if ratio == 1.0:
        pytest.skip("this CPU runs convs outside the NCHWc layout")
    assert ratio in (8 / 3, 16 / 3)  # AVX2 or AVX-512 blocks


def test_a_different_weight_shape_is_a_different_kernel():
    same = kernel_difference(optimized_model(_conv(4, 8)), optimized_model(_conv(4, 8)))
    assert same == ([], [])
    only_a, only_b = kernel_difference(optimized_model(_conv(4, 8)), optimized_model(_conv(4, 6)))
    assert [s[0] for s in only_a] == ["Conv"] and [s[0] for s in only_b] == ["Conv"]


def test_pimc_int8_runs_the_kernels_of_quantize_static(tmp_path):
    """Every int8 kernel onnxruntime builds from pimc's graph is one it builds from its own quantizer's;
    the one difference allowed: pimc's QGemm classifier writes float logits (no output Q + DequantizeLinear)."""
    ours = tmp_path / "pimc.onnx"
    subprocess.run([sys.executable, "-m", "pimc", "compile", str(bundled_model_path()), "-t", "onnxruntime",
                    "--data", "digits", "--passes", PASSES, "-o", str(ours)], check=True, capture_output=True)
    theirs = tmp_path / "ort.onnx"
    _, shape, _ = model_input(str(bundled_model_path()))
    calibration = data_splits("digits", shape, 0, None).calibration.x[:32].astype(np.float32)
    quantize_static_baseline(bundled_model_path(), theirs, calibration)
    only_ort, only_pimc = kernel_difference(optimized_model(str(theirs)), optimized_model(str(ours)))
    assert sorted(s[0] for s in only_ort) == ["DequantizeLinear", "QGemm"]
    assert [s[0] for s in only_pimc] == ["QGemm"]
    assert only_pimc[0][2] == only_ort[[s[0] for s in only_ort].index("QGemm")][2][: len(only_pimc[0][2])]
    assert model_stats(load_model(str(ours))).macs == model_stats(load_model(str(bundled_model_path()))).macs
