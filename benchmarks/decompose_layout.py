"""Measure onnxruntime latency of a dense k×k conv vs its basis (depthwise) + coefficient (1×1) form.

Prints, per shape, the MACs of both forms, their median latencies and the *layout penalty*
    penalty = (t_decomposed / MACs_decomposed) / (t_dense / MACs_dense),
the extra time per MAC of the two-conv form, which the recompose pass's cost rule uses.

    python -m pimc.benchmarks.decompose_layout [--repeats 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from pimc.compiler.sessions import session_options

SHAPES = [  # batch, cin, cout, hw, d
    (1, 16, 16, 32, 5), (1, 32, 32, 16, 5), (1, 64, 64, 8, 5), (1, 64, 64, 8, 2),
    (64, 16, 16, 32, 5), (64, 32, 32, 16, 5), (64, 64, 64, 8, 5), (64, 64, 64, 8, 2), (64, 16, 16, 32, 2),
]


def _model(nodes, inits, batch, cin, hw):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, cin, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def dense_model(batch, cin, cout, hw, rng):
    w = numpy_helper.from_array(rng.standard_normal((cout, cin, 3, 3)).astype(np.float32), "w")
    return _model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], [w], batch, cin, hw)


def decomposed_model(batch, cin, cout, hw, d, rng):
    b = numpy_helper.from_array(rng.standard_normal((cin * d, 1, 3, 3)).astype(np.float32), "b")
    c = numpy_helper.from_array(rng.standard_normal((cout, cin * d, 1, 1)).astype(np.float32), "c")
    nodes = [helper.make_node("Conv", ["x", "b"], ["m"], pads=[1, 1, 1, 1], group=cin),
             helper.make_node("Conv", ["m", "c"], ["y"])]
    return _model(nodes, [b, c], batch, cin, hw)


def median_ms(model: onnx.ModelProto, x: np.ndarray, repeats: int, threads: int | None) -> float:
    opts = session_options()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    for _ in range(3):
        sess.run(None, {"x": x})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(None, {"x": x})
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("batch cin cout hw d | dense MMAC decomp MMAC | dense ms decomp ms | time ratio  penalty/MAC")
    penalties = []
    for batch, cin, cout, hw, d in SHAPES:
        x = rng.standard_normal((batch, cin, hw, hw)).astype(np.float32)
        dense_macs = batch * hw * hw * cout * cin * 9
        dec_macs = batch * hw * hw * (cin * d * 9 + cout * cin * d)
        t_dense = median_ms(dense_model(batch, cin, cout, hw, rng), x, args.repeats, args.threads)
        t_dec = median_ms(decomposed_model(batch, cin, cout, hw, d, rng), x, args.repeats, args.threads)
        penalty = (t_dec / dec_macs) / (t_dense / dense_macs)
        penalties.append(penalty)
        print(f"{batch:5d} {cin:3d} {cout:4d} {hw:2d} {d} | {dense_macs / 1e6:10.2f} {dec_macs / 1e6:11.2f} | "
              f"{t_dense:8.3f} {t_dec:9.3f} | {t_dec / t_dense:10.2f}  {penalty:11.2f}")
    print(f"median penalty per MAC: {statistics.median(penalties):.2f}")


if __name__ == "__main__":
    main()
