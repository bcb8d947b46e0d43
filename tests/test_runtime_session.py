"""onnxruntime sessions, input inspection, prediction and evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from pimc.cli.run import run_command
from pimc.compiler.errors import PimcError
from pimc.compiler.sessions import free_batch, make_session, predict, random_feeds, runs_batched
from pimc.models import bundled_model_path
from pimc.runtime.datasets import Dataset
from pimc.runtime.session import dataset_feeds, evaluate, model_input


def _linear_model(batch: int | str = "N", channels: int = 1) -> onnx.ModelProto:
    """Flatten + MatMul over a C x 2 x 2 image, with a weight initializer also listed as an input."""
    weight = numpy_helper.from_array(np.eye(channels * 4, 3, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, 2, 2]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [channels * 4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_model_input_skips_initializers() -> None:
    assert model_input(_linear_model(channels=2)) == ("x", (2, 2, 2), np.float32)


def test_model_input_needs_4d() -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])])
    model = helper.make_model(graph)
    with pytest.raises(PimcError, match="N x C x H x W"):
        model_input(model)
    assert random_feeds(model, 2, seed=0)[0]["x"].shape == (1, 5)


def test_fixed_batch_one_is_fed_one_at_a_time() -> None:
    x = np.random.default_rng(0).standard_normal((5, 1, 2, 2)).astype(np.float32)
    dynamic = predict(make_session(_linear_model()), x, batch=2)
    fixed = predict(make_session(_linear_model(batch=1)), x, batch=64)
    np.testing.assert_allclose(dynamic, x.reshape(5, 4)[:, :3])
    np.testing.assert_allclose(fixed, dynamic)
    assert evaluate(_linear_model(batch=1), Dataset("t", x, None), repeats=2)["batch"] == 1


def test_fixed_batch_larger_than_one_pads_the_tail() -> None:
    x = np.random.default_rng(0).standard_normal((5, 1, 2, 2)).astype(np.float32)
    np.testing.assert_allclose(predict(make_session(_linear_model(batch=4)), x), x.reshape(5, 4)[:, :3])


def test_evaluate_accuracy() -> None:
    x = np.zeros((4, 1, 2, 2), np.float32)
    x[np.arange(4), 0, np.array([0, 0, 0, 0]), np.array([0, 1, 0, 1])] = 1.0
    result = evaluate(_linear_model(), Dataset("t", x, np.array([0, 1, 0, 2])), batch=3, repeats=3)
    assert result["accuracy"] == 0.75 and result["samples"] == 4 and result["batch"] == 3
    assert 0 < result["latency_ms_median"] <= result["latency_ms_p90"]


def test_make_session_wraps_errors(tmp_path: Path) -> None:
    bad = _linear_model()
    bad.graph.node[1].op_type = "NoSuchOp"
    with pytest.raises(PimcError, match="onnxruntime cannot load"):
        make_session(bad)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(PimcError, match="not a valid ONNX"):
        make_session(tmp_path / "junk.onnx")


def test_feeds() -> None:
    path = bundled_model_path()
    feeds = dataset_feeds(path, "digits", count=4, seed=0)
    assert len(feeds) == 4 and feeds[0]["input"].shape == (1, 1, 8, 8)
    assert [f["input"].tolist() for f in feeds] == [f["input"].tolist() for f in dataset_feeds(path, "digits", 4)]
    feeds = random_feeds(path, 3, seed=1)
    assert len(feeds) == 3 and feeds[0]["input"].shape == (1, 1, 8, 8)
    assert not np.array_equal(feeds[0]["input"], feeds[1]["input"])


def test_run_command_json() -> None:
    res = CliRunner().invoke(run_command, [str(bundled_model_path()), "--data", "digits", "--json",
                                           "--repeats", "2"])
    assert res.exit_code == 0, res.output
    assert '"accuracy": 0.9' in res.output and '"samples": 450' in res.output


def test_run_command_errors(tmp_path: Path) -> None:
    res = CliRunner().invoke(run_command, [str(tmp_path / "missing.onnx")])
    assert isinstance(res.exception, PimcError)
    res = CliRunner().invoke(run_command, [str(bundled_model_path()), "--data", "imagenet"])
    assert isinstance(res.exception, PimcError) and "unknown dataset" in str(res.exception)


def test_a_batch_one_export_runs_batched_with_the_same_outputs() -> None:
    model = _linear_model(batch=1)
    x = np.random.default_rng(0).standard_normal((5, 1, 2, 2)).astype(np.float32)
    assert runs_batched(model, x)
    together = predict(make_session(free_batch(model)), x)
    apart = predict(make_session(model), x)
    np.testing.assert_allclose(together, apart, rtol=1e-6)


def test_a_graph_that_builds_its_batch_into_a_shape_stays_at_batch_one() -> None:
    shape = numpy_helper.from_array(np.array([1, 4], dtype=np.int64), "shape")
    weight = numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])],
        "fixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [shape, weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert not runs_batched(model, np.zeros((3, 1, 2, 2), np.float32))
