"""PENNI + shrink + recompose + int8 on ResNet-20 (digits) against the dense fp32 model.

Runs, printing every command:
  1. python -m pimc export decompose --model resnet20 --data digits -o penni.onnx --dense-output dense.onnx
     --threads 1 ...                      (skipped with --reuse)
  2. python -m pimc compile penni.onnx -t onnxruntime --data digits -o penni_fp32.onnx
     (the default pipeline: shrink + recompose, exact)
  3. python -m pimc compile penni.onnx -t onnxruntime --data digits --pipeline examples/onnxruntime_int8.toml
     -o penni_int8.onnx                   (shrink + recompose + int8, under the 1-point budget), and the same
     with --set quantize.kernels=measured --set quantize.kernel_threads=T -o penni_measured_tT.onnx (int8 or
     float per layer, whichever this machine runs faster at T threads)
  4. python -m pimc compile dense.onnx ... --pipeline examples/onnxruntime_int8.toml -o dense_pimc_int8.onnx,
     and onnxruntime's quantize_static of dense.onnx (calibrated on 64 calibration images of the training
     split) -> dense_ort_int8.onnx
then times dense fp32, quantize_static(dense), pimc int8(dense), PENNI fp32, PENNI int8 and PENNI measured
interleaved in one process (``pimc bench``'s runner) at batch 1 and 64, and prints each model's latency,
'× faster than dense fp32', top-1 on the 450 held-out digits test images, MACs, and the conv channels left per layer (what
limits the speed-up: the channels shrink could not remove, and the float ops left outside the int8 kernels).
Last, for dense and PENNI fp32, onnxruntime's profiler at batch 64 gives the conv MACs per image as
onnxruntime executes them (its NCHWc convs compute whole 8- or 16-channel blocks, so a 2-channel conv costs
a block; runtime/ort_graph.py), the time in conv kernels and in NCHWc layout reorders: what a channel cut
can and cannot buy on this runtime.

    OMP_NUM_THREADS=2 python benchmarks/penni_int8_resnet20.py --out /tmp/penni_int8 [--reuse] [--repeats 30]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from int8_vs_ort import input_dims

from pimc.compiler.loader import load_model
from pimc.compiler.stats import model_stats
from pimc.runtime.bench import compare_models
from pimc.runtime.datasets import data_splits
from pimc.runtime.ort_graph import (
    CONV_KERNELS,
    executed_conv_macs,
    op_counts,
    optimized_model,
    profile_kernels,
    quantize_static_baseline,
    time_by_op,
)

PIPELINE = Path(__file__).resolve().parent.parent / "examples" / "onnxruntime_int8.toml"
TRAINING = ("pretrain-epochs", "epochs", "swap-every", "prune-rounds", "finetune-epochs", "threshold", "group-l1",
            "group-threshold", "residual-l1", "residual-threshold", "seed")


def pimc_cli(*args: str) -> str:
    cmd = [sys.executable, "-m", "pimc", *args]
    print("$ " + " ".join(shlex.quote(a) for a in cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def train(out: Path, args: argparse.Namespace) -> None:
    options = [x for k in TRAINING for x in (f"--{k}", str(getattr(args, k.replace("-", "_"))))]
    print(pimc_cli("export", "decompose", "--model", "resnet20", "--data", "digits", "-o", str(out / "penni.onnx"),
                   "--dense-output", str(out / "dense.onnx"), "--threads", "1", "--no-progress", *options))


def build(out: Path, threads: int) -> dict[str, Path]:
    paths = {"dense fp32": out / "dense.onnx", "dense ort int8": out / "dense_ort_int8.onnx",
             "dense pimc int8": out / "dense_pimc_int8.onnx", "penni fp32": out / "penni_fp32.onnx",
             "penni int8": out / "penni_int8.onnx", "penni measured": out / f"penni_measured_t{threads}.onnx"}
    common = ["-t", "onnxruntime", "--data", "digits"]
    pimc_cli("compile", str(out / "penni.onnx"), *common, "-o", str(paths["penni fp32"]), "--verify")
    pimc_cli("compile", str(out / "penni.onnx"), *common, "--pipeline", str(PIPELINE), "-o", str(paths["penni int8"]),
             "--report", str(out / "penni_int8_report.json"))
    pimc_cli("compile", str(out / "penni.onnx"), *common, "--pipeline", str(PIPELINE), "--set",
             "quantize.kernels=measured", "--set", f"quantize.kernel_threads={threads}",
             "-o", str(paths["penni measured"]), "--report", str(out / f"penni_measured_t{threads}_report.json"))
    pimc_cli("compile", str(paths["dense fp32"]), *common, "--pipeline", str(PIPELINE),
             "-o", str(paths["dense pimc int8"]))
    calib = data_splits("digits", input_dims(paths["dense fp32"]), 0, None).calibration.x[:64].astype(np.float32)
    quantize_static_baseline(paths["dense fp32"], paths["dense ort int8"], calib)
    return paths


def conv_channels(path: Path) -> list[int]:
    """Output channels of every conv (float Conv or its int8 weight), in graph order."""
    model = onnx.load(str(path))
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    dq = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return [inits[dq.get(n.input[1], n.input[1])][0] for n in model.graph.node if n.op_type == "Conv"]


def float_ops(path: Path) -> dict[str, int]:
    """Op types of onnxruntime's optimized graph that are not integer kernels."""
    ops = op_counts(optimized_model(str(path), "all"))
    return {k: v for k, v in sorted(ops.items()) if not k.startswith("QLinear") and k != "QGemm"}


def executed(path: Path, threads: int) -> tuple[float, float, float]:
    """(conv MACs per image onnxruntime executes at its channel blocks, ms per batch-64 run in conv kernels,
    ms in layout reorders), from onnxruntime's profiler (runtime/ort_graph.py)."""
    x = np.random.default_rng(0).random((64, *input_dims(path)), dtype=np.float32)
    kernels = profile_kernels(str(path), x, runs=10, threads=threads)
    spent = time_by_op(kernels)
    reorder = sum(t for op, t in spent.items() if op.startswith("Reorder"))
    return executed_conv_macs(kernels), sum(spent.get(op, 0.0) for op in CONV_KERNELS) / 1e3, reorder / 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/penni_int8"))
    parser.add_argument("--reuse", action="store_true", help="reuse dense.onnx / penni.onnx in --out")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    defaults = {"pretrain-epochs": 8, "epochs": 12, "swap-every": 2, "prune-rounds": 3, "finetune-epochs": 6,
                "threshold": 1.0, "group-l1": 1e-2, "group-threshold": 1.0, "residual-l1": 1e-2,
                "residual-threshold": 1.1, "seed": 0}
    for key in TRAINING:
        parser.add_argument(f"--{key}", type=type(defaults[key]), default=defaults[key])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.reuse:
        train(args.out, args)
    paths = build(args.out, args.threads)
    rows = compare_models(list(paths.values()), "digits", (1, 64), args.repeats, threads=args.threads)
    base = {b: rows[0][f"latency_ms_b{b}"] for b in (1, 64)}
    print(f"\n{'model':<16} {'acc':>7} {'MACs':>11} {'b1 ms':>8} {'b1 ×':>6} {'b64 ms':>8} {'b64 ×':>6}")
    for (name, path), row in zip(paths.items(), rows, strict=True):
        macs = model_stats(load_model(str(path))).macs
        b1, b64 = row["latency_ms_b1"], row["latency_ms_b64"]
        print(f"{name:<16} {row['accuracy']:>7.2%} {macs:>11,} {b1:>8.3f} {base[1] / b1:>6.2f} "
              f"{b64:>8.2f} {base[64] / b64:>6.2f}")
    print("\nconv output channels, dense:", conv_channels(paths["dense fp32"]))
    print("conv output channels, penni:", conv_channels(paths["penni fp32"]))
    for name in ("dense ort int8", "penni int8"):
        print(f"non-integer ops in onnxruntime's optimized {name}: {float_ops(paths[name])}")
    print("\nfp32 as onnxruntime runs it (profiler, batch 64): NCHWc convs compute whole channel blocks")
    print(f"{'model':<12} {'MACs':>11} {'executed MACs':>14} {'conv ms':>8} {'reorder ms':>11}")
    for name in ("dense fp32", "penni fp32"):
        macs = model_stats(load_model(str(paths[name]))).macs
        done, conv_ms, reorder_ms = executed(paths[name], args.threads)
        print(f"{name:<12} {macs:>11,} {done:>14,.0f} {conv_ms:>8.2f} {reorder_ms:>11.2f}")


if __name__ == "__main__":
    main()
