"""Every simulator costs every compute layer kind: Conv (1-D, 2-D, 3-D, grouped, dilated), ConvTranspose
(scatter form), Gemm, MatMul with a constant, and lists an activation × activation MatMul as costed
or skipped with a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pimc.app.compile import CompileOptions, compile_model
from pimc.compiler.loader import load_model
from pimc.compiler.workload import COMPUTE_OPS, extract_workload

PASSES = "fold-constants,cleanup"


def _all_kinds(path: Path) -> Path:
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv", pads=[1, 1, 1, 1], dilations=[1, 1]),
        helper.make_node("ConvTranspose", ["a", "w2"], ["b"], name="deconv", strides=[2, 2], group=2),
        helper.make_node("Conv", ["b", "w3"], ["c"], name="grouped_dilated", group=2, dilations=[2, 2]),
        helper.make_node("Reshape", ["c", "s1"], ["c1"], name="to_1d"),
        helper.make_node("Conv", ["c1", "w4"], ["d"], name="conv1d", pads=[1, 1]),
        helper.make_node("Reshape", ["d", "s3"], ["d3"], name="to_3d"),
        helper.make_node("Conv", ["d3", "w5"], ["e"], name="conv3d", pads=[1] * 6),
        helper.make_node("Reshape", ["e", "s2"], ["t"], name="tokens"),
        helper.make_node("MatMul", ["t", "w6"], ["q"], name="proj"),
        helper.make_node("Transpose", ["q"], ["qt"], name="qt", perm=[1, 0]),
        helper.make_node("MatMul", ["q", "qt"], ["g"], name="gram"),
        helper.make_node("Gemm", ["g", "w7"], ["y"], name="fc", transB=1),
    ]
    inits = [w("w1", 4, 2, 3, 3), w("w2", 4, 2, 2, 2), w("w3", 4, 2, 3, 3), w("w4", 3, 4, 3),
             w("w5", 2, 3, 3, 3, 3), w("w6", 12, 5), w("w7", 3, 4),
             numpy_helper.from_array(np.array([1, 4, 144], np.int64), "s1"),
             numpy_helper.from_array(np.array([1, 3, 4, 6, 6], np.int64), "s3"),
             numpy_helper.from_array(np.array([4, 12], np.int64), "s2")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])
    graph = helper.make_graph(nodes, "kinds", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("target", ["escalate", "cim", "cmp-pim"])
def test_every_compute_layer_is_costed_or_skipped(target: str, tmp_path: Path):
    src = _all_kinds(tmp_path / "m.onnx")
    records = {r.name: r for r in extract_workload(load_model(src)).layers}
    assert set(records) == {"conv", "deconv", "grouped_dilated", "conv1d", "conv3d", "proj", "gram", "fc"}
    model, report = compile_model(CompileOptions(input=str(src), target=target, passes=PASSES,
                                                 output=str(tmp_path / "o.onnx")))
    cost = report["cost"]
    rows = {row["name"]: row for row in cost["layers"]}
    skipped = {s["node"]: s["reason"] for s in cost["skipped"] if "node" in s}
    compute = {n.name for n in model.graph.node if n.op_type in COMPUTE_OPS}
    assert compute == set(records) and compute <= set(rows) | set(skipped)
    assert all(skipped.values())
    assert report["model"]["macs"] == sum(r.macs for r in records.values())
    deconv = records["deconv"]
    assert deconv.macs == 1 * 4 * 8 * 8 * 2 * 2 * 2
    for name, row in rows.items():
        if target == "cmp-pim":
            assert row["ops"] == 2 * records[name].effective_macs
        else:
            assert row["macs"] == records[name].macs
    if target == "cim":
        assert set(skipped) == {"gram"}
        assert rows["deconv"]["k_rows"] == 2 and rows["deconv"]["positions"] == 64
    else:
        assert "gram" in rows
    if target == "escalate":
        assert rows["deconv"]["lowered_from"] == "ConvTranspose"
