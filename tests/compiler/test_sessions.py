"""The one session opener: weights handed over from memory give the same outputs as the serialized model,
whatever the initializers' storage (raw bytes, typed fields, float16, unread)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pimc.compiler.errors import PimcError
from pimc.compiler.sessions import open_session


def _conv_model(dtype=np.float32, typed_fields: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(16).astype(dtype)
    weight = numpy_helper.from_array(w, "w")
    if typed_fields:  # values in float_data instead of raw_data
        weight = helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel().tolist())
    unread = numpy_helper.from_array(np.ones((64, 64), dtype), "unread")
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], "g",
        [helper.make_tensor_value_info("x", elem, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", elem, [1, 16, 8, 8])], [weight, numpy_helper.from_array(b, "b"), unread])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("dtype,typed", [(np.float32, False), (np.float32, True), (np.float16, False)])
def test_weights_from_memory_match_the_serialized_model(dtype, typed):
    model = _conv_model(dtype, typed)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(dtype)
    from_memory = open_session(model).run(None, {"x": x})[0]
    from_bytes = open_session(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(from_memory, from_bytes)


def test_the_model_is_left_unchanged():
    model = _conv_model()
    before = model.SerializeToString()
    open_session(model)
    assert model.SerializeToString() == before


def test_a_model_onnxruntime_rejects_is_one_line():
    model = _conv_model()
    model.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(PimcError, match="onnxruntime cannot load the model") as info:
        open_session(model)
    assert "\n" not in str(info.value)
