"""Model comparison: parameter counts, agreement, CSV/PNG output and `pimc bench`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import numpy_helper

from pimc.cli.run import bench_command
from pimc.compiler.errors import PimcError
from pimc.compiler.stats import parameter_counts
from pimc.models import bundled_model_path
from pimc.runtime.bench import compare_models, write_csv, write_plot


def _pruned_copy(tmp_path: Path) -> Path:
    """The bundled model with the smallest half of its final-layer weights set to zero."""
    model = onnx.load(bundled_model_path())
    for tensor in model.graph.initializer:
        if tensor.name == "fc.weight":
            w = numpy_helper.to_array(tensor).copy()
            w[np.abs(w) < np.median(np.abs(w))] = 0
            tensor.CopyFrom(numpy_helper.from_array(w, tensor.name))
    path = tmp_path / "pruned.onnx"
    onnx.save(model, path)
    return path


def test_identical_models_agree(tmp_path: Path) -> None:
    rows = compare_models([bundled_model_path(), bundled_model_path()], "digits", batches=(1, 8), repeats=2)
    assert [r["top1_agreement"] for r in rows] == [1.0, 1.0]
    assert rows[1]["max_abs_diff"] == 0.0
    assert rows[0]["params"] == rows[1]["params"] == rows[0]["nonzero_params"] > 20000
    assert rows[0]["latency_ms_b1"] > 0 and rows[0]["latency_ms_b8"] > 0


def test_pruned_model_counts_and_outputs(tmp_path: Path) -> None:
    pruned = _pruned_copy(tmp_path)
    total, nonzero = parameter_counts(onnx.load(pruned))
    assert nonzero == total - 320
    rows = compare_models([bundled_model_path(), pruned], "digits", batches=(4,), repeats=2)
    assert rows[1]["nonzero_params"] == nonzero and rows[1]["max_abs_diff"] > 0
    assert 0.5 < rows[1]["top1_agreement"] <= 1.0
    write_csv(rows, tmp_path / "b.csv")
    write_plot(rows, tmp_path / "b.png")
    with open(tmp_path / "b.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["model"] for r in table] == ["digits_cnn.onnx", "pruned.onnx"] and "latency_ms_b4" in table[0]
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_command(tmp_path: Path) -> None:
    args = [str(bundled_model_path()), str(_pruned_copy(tmp_path)), "--repeats", "2", "--batches", "1",
            "--csv", str(tmp_path / "o.csv"), "--plot", str(tmp_path / "o.png")]
    res = CliRunner().invoke(bench_command, [*args, "--json"])
    assert res.exit_code == 0, res.output
    assert [r["model"] for r in json.loads(res.output)] == ["digits_cnn.onnx", "pruned.onnx"]
    assert (tmp_path / "o.csv").is_file() and (tmp_path / "o.png").is_file()
    res = CliRunner().invoke(bench_command, args[:2] + ["--repeats", "2"], terminal_width=200)
    assert res.exit_code == 0 and "1.00× faster" in res.output and "× fewer" in res.output


def test_bench_ratios_are_better_when_above_one() -> None:
    from pimc.cli.run import _gain

    assert _gain(2.0, 1.0, "faster") == "2.00× faster"
    assert _gain(1.0, 0.0, "faster") == "-"


def test_bench_rejects_mismatched_inputs(tmp_path: Path) -> None:
    from pimc.models.train import export_onnx
    from pimc.models.zoo import build_model

    other = export_onnx(build_model("lenet5"), tmp_path / "l.onnx", (1, 32, 32))
    res = CliRunner().invoke(bench_command, [str(bundled_model_path()), str(other)])
    assert isinstance(res.exception, PimcError) and "differs" in str(res.exception)
    res = CliRunner().invoke(bench_command, [str(bundled_model_path()), "--batches", "0"])
    assert isinstance(res.exception, PimcError)


def test_quantized_weights_count_as_parameters(tmp_path: Path) -> None:
    """int8 weights and int32 biases behind DequantizeLinear are parameters like the float ones."""
    from pimc.app.compile import CompileOptions, compile_model

    out = tmp_path / "q.onnx"
    compile_model(CompileOptions(input=str(bundled_model_path()), target="onnxruntime", output=str(out),
                                 passes="quantize", data="digits"))
    dense, _ = parameter_counts(onnx.load(bundled_model_path()))
    rows = compare_models([bundled_model_path(), out], "digits", batches=(4,), repeats=1)
    assert rows[1]["params"] == dense
    assert rows[1]["accuracy"] >= rows[0]["accuracy"] - 0.01


def test_interleaved_order_is_a_permutation_that_moves_every_model():
    from pimc.runtime.bench import _order

    orders = [_order(4, r) for r in range(30)]
    assert orders[0] == [0, 1, 2, 3] and all(sorted(o) == [0, 1, 2, 3] for o in orders)
    assert all({o[pos] for o in orders} == {0, 1, 2, 3} for pos in range(4))
    assert orders == [_order(4, r) for r in range(30)]


def test_a_fixed_batch_one_model_is_timed_on_whole_batches(tmp_path: Path, monkeypatch) -> None:
    import pimc.runtime.bench as bench

    model = onnx.load(str(bundled_model_path()))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1  # as a batch-1 export writes it
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, fixed)
    seen: list[int] = []
    monkeypatch.setattr(bench, "time_run", lambda session, chunk: seen.append(len(chunk)) or 1.0)
    compare_models([str(fixed)], batches=(1, 64), repeats=2, limit=64)
    assert set(seen) == {1, 64}
