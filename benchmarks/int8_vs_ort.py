"""pimc int8 (quantize, layout=int8) vs onnxruntime's quantize_static (QDQ, per-channel, u8/s8) vs fp32.

For each model (ResNet-18 and ResNet-20 zoo exports, the bundled digits CNN, and a LeNet-5 trained on mnist
with ``pimc models train``) it writes the fp32 model, the quantize_static output (calibrated on the first 64
images of the data's calibration split, drawn from the training images) and pimc's output (``pimc compile
--pipeline examples/onnxruntime_int8.toml`` minus the PENNI passes, which change nothing on a dense model),
then times fp32, quantize_static, quantize_static again (an A/A control: the spread of two identical
sessions is the noise floor of the ratio) and pimc interleaved in one process (``pimc bench``'s runner,
session threads fixed) at batch 1 and 64, and prints pimc/ort latency ratios (≤ 1 = pimc as fast or faster)
and '× faster than fp32', for pimc's int8 and for pimc with ``quantize.kernels=measured``. It then compares onnxruntime's
optimized graphs of pimc's and quantize_static's outputs kernel by kernel (runtime/ort_graph.py): the
same kernels run the same work, so their latency ratio is 1 up to the A/A noise. The zoo ResNets are untrained (random weights), so only their latency means
anything; accuracies are top-1 on the held-out test split (digits 450, mnist 1,000 images).

Accuracy table: fp32, quantize_static, quantize_static with ``reduce_range`` (7-bit weights), pimc with
8-bit weights (``reduce_range=false``) and pimc as the onnxruntime target sets it (``reduce_range``,
7-bit weights). On CPUs without VNNI, onnxruntime's
u8×s8 kernel sums pairs of products in 16 bits with saturation (255 · 127 · 2 > 32767), which costs the
8-bit variants accuracy that the unfused QDQ graph does not lose; 7-bit weights cannot saturate.

    OMP_NUM_THREADS=2 python benchmarks/int8_vs_ort.py --out /tmp/int8 [--repeats 30] [--mnist-model lenet5.onnx] [--reuse]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx

from pimc.models import bundled_model_path
from pimc.runtime.bench import compare_models
from pimc.runtime.datasets import data_splits, load_dataset
from pimc.runtime.ort_graph import kernel_difference, optimized_model, quantize_static_baseline
from pimc.runtime.session import model_accuracy

PASSES = "fold-constants,eliminate-identity,fold-batchnorm,quantize,cleanup"
PIPELINE = Path(__file__).resolve().parent.parent / "examples" / "onnxruntime_int8.toml"
MODELS = {"resnet18": "digits", "resnet20": "digits", "digits_cnn": "digits", "lenet5_mnist": "mnist"}


def pimc_cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pimc", *args], check=True, capture_output=True)


def input_dims(path: Path) -> tuple[int, int, int]:
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value for d in dims[1:])


def fp32_model(name: str, out: Path, mnist_model: Path | None) -> Path:
    fp32 = out / f"{name}.onnx"
    if name == "digits_cnn":
        fp32.write_bytes(bundled_model_path().read_bytes())
    elif name == "lenet5_mnist" and mnist_model is not None:
        fp32.write_bytes(mnist_model.read_bytes())
    elif name == "lenet5_mnist":
        pimc_cli("models", "train", "lenet5", "--data", "mnist", "--epochs", "15", "--threads", "1", "-o", str(fp32))
    else:
        pimc_cli("models", "export", name, "-o", str(fp32))
    return fp32


def prepare(name: str, out: Path, mnist_model: Path | None, reuse: bool = False, threads: int = 2) -> dict[str, Path]:
    """fp32, quantize_static (plain and reduce_range), pimc 8-bit weights, pimc as the pipeline file sets it,
    and the same with ``quantize.kernels=measured`` (int8 or float per layer, timed at ``threads``)."""
    data = MODELS[name]
    fp32 = out / f"{name}.onnx" if reuse else fp32_model(name, out, mnist_model)
    paths = {"fp32": fp32, "ort": out / f"{name}.ort_int8.onnx", "ort_rr": out / f"{name}.ort_int8_rr.onnx",
             "pimc_w8": out / f"{name}.pimc_int8_w8.onnx", "pimc": out / f"{name}.pimc_int8.onnx",
             "pimc_measured": out / f"{name}.pimc_measured_t{threads}.onnx"}
    if reuse and all(p.exists() for p in paths.values()):
        return paths
    calib = data_splits(data, input_dims(fp32), 0, None).calibration.x[:64].astype(np.float32)
    quantize_static_baseline(fp32, paths["ort"], calib)
    quantize_static_baseline(fp32, paths["ort_rr"], calib, reduce_range=True)
    common = ["compile", str(fp32), "-t", "onnxruntime", "--data", data, "--max-accuracy-drop", "100"]
    pimc_cli(*common, "--passes", PASSES, "--set", "quantize.reduce_range=false", "-o", str(paths["pimc_w8"]))
    pimc_cli(*common, "--pipeline", str(PIPELINE), "-o", str(paths["pimc"]))
    pimc_cli(*common, "--pipeline", str(PIPELINE), "--set", "quantize.kernels=measured", "--set",
             f"quantize.kernel_threads={threads}", "-o", str(paths["pimc_measured"]))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/int8"))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--mnist-model", type=Path, default=None,
                        help="LeNet-5 trained on mnist (pimc models train lenet5 --data mnist); trained if absent")
    parser.add_argument("--reuse", action="store_true", help="reuse the models a previous run wrote to --out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.models.split(",") if n]
    prepared = {name: prepare(name, args.out, args.mnist_model, args.reuse, args.threads) for name in names}
    print("model          batch  pimc/ort  measured/ort  ort/ort (A/A)  × faster than fp32: ort  pimc  measured")
    for name, paths in prepared.items():
        timed = [paths["fp32"], paths["ort"], paths["ort"], paths["pimc"], paths["pimc_measured"]]
        rows = compare_models(timed, MODELS[name], (1, 64), args.repeats, threads=args.threads)
        for b in (1, 64):
            fp, oq, oq2, pq, mq = (r[f"latency_ms_b{b}"] for r in rows)
            print(f"{name:<14} {b:>5}  {pq / oq:>8.2f}  {mq / oq:>12.2f}  {oq2 / oq:>13.2f}  "
                  f"{fp / oq:>23.2f}  {fp / pq:>4.2f}  {fp / mq:>8.2f}", flush=True)
    print("\nonnxruntime's optimized graphs (kernel signatures: op, constant shapes and dtypes, attributes):")
    for name, paths in prepared.items():
        only_ort, only_pimc = kernel_difference(optimized_model(str(paths["ort"])), optimized_model(str(paths["pimc"])))
        same = "the same kernels" if not (only_ort or only_pimc) else "the same kernels except"
        print(f"{name:<14} {same}" + "".join(f"\n    only quantize_static: {k}" for k in only_ort)
              + "".join(f"\n    only pimc:            {k}" for k in only_pimc))
    print("\ntop-1 on the held-out test split:")
    print("model          data    fp32     ort      ort rr   pimc w8  pimc (w7)  measured")
    for name, paths in prepared.items():
        test = load_dataset(MODELS[name], input_dims(paths["fp32"]), split="test")
        keys = ("fp32", "ort", "ort_rr", "pimc_w8", "pimc", "pimc_measured")
        accs = [model_accuracy(onnx.load(str(paths[k])), test) for k in keys]
        print(f"{name:<14} {MODELS[name]:<6} " + "  ".join(f"{a:>7.2%}" for a in accs))


if __name__ == "__main__":
    main()
