"""Builders for small ONNX graphs (onnx.helper only, no torch) shared by the compiler tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper


def conv_bn_net(opset: int = 17, seed: int = 0, batch: int = 1) -> onnx.ModelProto:
    """Conv→BN→Relu→Conv(bias)→BN→Relu→GlobalAveragePool→Flatten→Gemm on a 3×12×12 input."""
    rng = np.random.default_rng(seed)

    def t(name: str, *shape: int, positive: bool = False) -> onnx.TensorProto:
        arr = rng.uniform(0.5, 1.5, shape) if positive else rng.standard_normal(shape)
        return numpy_helper.from_array(arr.astype(np.float32), name)

    inits = [
        t("w1", 8, 3, 3, 3), t("g1", 8, positive=True), t("b1", 8), t("m1", 8), t("v1", 8, positive=True),
        t("w2", 6, 8, 3, 3), t("c2", 6), t("g2", 6, positive=True), t("b2", 6), t("m2", 6),
        t("v2", 6, positive=True), t("fc", 4, 6), t("fcb", 4),
        numpy_helper.from_array(np.array([batch, -1], np.int64), "flat_shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "g1", "b1", "m1", "v1"], ["n1"], epsilon=1e-3, name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "c2"], ["c2o"], strides=[2, 2], name="conv2"),
        helper.make_node("BatchNormalization", ["c2o", "g2", "b2", "m2", "v2"], ["n2"], name="bn2"),
        helper.make_node("Relu", ["n2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="gap"),
        helper.make_node("Reshape", ["p", "flat_shape"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "conv_bn_net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model, full_check=True)
    return model


def run_ort(model: onnx.ModelProto | str | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in names})


def feeds_for(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    inits = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def assert_close(reference: list[np.ndarray], got: list[np.ndarray], rel: float = 1e-5) -> None:
    assert len(reference) == len(got)
    for ref, new in zip(reference, got, strict=True):
        assert ref.shape == new.shape
        scale = max(float(np.max(np.abs(ref))), 1e-12)
        assert float(np.max(np.abs(ref - new))) / scale <= rel


@pytest.fixture
def save(tmp_path: Path):
    def _save(model: onnx.ModelProto, name: str = "model.onnx") -> Path:
        path = tmp_path / name
        onnx.save(model, str(path))
        return path

    return _save
