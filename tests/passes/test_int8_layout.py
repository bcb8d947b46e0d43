"""The quantize pass's int8 layout: onnxruntime's optimizer replaces every float Conv/Add/pool by int8 kernels."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import pytest

from pimc.models import bundled_model_path
from pimc.runtime.ort_graph import op_counts, optimized_model


def _optimized_ops(path: Path) -> Counter:
    return op_counts(optimized_model(str(path)))


def _quantize_bundled(tmp_path: Path, setting: str) -> Path:
    from click.testing import CliRunner

    from pimc.cli.main import cli

    out = tmp_path / "q.onnx"
    res = CliRunner().invoke(cli, ["compile", str(bundled_model_path()), "-t", "onnxruntime", "--passes",
                                    "fold-constants,eliminate-identity,fold-batchnorm,quantize,cleanup",
                                    "--set", setting, "-o", str(out)])
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.parametrize("layout", ["int8"])
def test_int8_kernels_replace_float_convs(tmp_path: Path, layout: str) -> None:
    ops = _optimized_ops(_quantize_bundled(tmp_path, f"quantize.layout={layout}"))
    assert ops["QLinearConv"] == 3 and ops["Conv"] == 0 and ops["FusedConv"] == 0
    assert ops["QLinearGlobalAveragePool"] == 1 and ops["QGemm"] == 1
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 0


@pytest.mark.parametrize("index", [0, 1, 2])
def test_excluded_conv_stays_float_in_onnxruntime(tmp_path: Path, index: int) -> None:
    """onnxruntime's WeightBiasQuantization would quantize an excluded conv's float weight (per tensor) because it
    reads a DequantizeLinear; the per-axis DequantizeLinear guard keeps it float, the 1-channel first conv too."""
    convs = [n.name for n in onnx.load(str(bundled_model_path())).graph.node if n.op_type == "Conv"]
    out = _quantize_bundled(tmp_path, f"quantize.exclude={convs[index]}")
    ops = _optimized_ops(out)
    assert ops["QLinearConv"] == 2 and ops["Conv"] + ops["FusedConv"] == 1
    model = onnx.load(str(out))
    excluded = next(n for n in model.graph.node if n.name == convs[index])
    source = next((n for n in model.graph.node if excluded.input[0] in n.output), None)
    if index == 0:  # reads the float graph input: no quantized reader asks for its Q/DQ
        assert source is None
    else:
        assert source.op_type == "DequantizeLinear" and any(a.name == "axis" for a in source.attribute)
