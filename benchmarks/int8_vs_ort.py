"""pimc int8 (quantize, layout=int8) vs onnxruntime's quantize_static (QDQ, per-channel, u8/s8) vs fp32 (issue 14).

For each model (ResNet-18 and ResNet-20 zoo exports, the bundled digits CNN) it writes the fp32 model, the
quantize_static output (calibrated on the same digits calibration split) and pimc's output, then times all
three interleaved in one process (``pimc bench``'s runner, session threads fixed) at batch 1 and 64 and
prints pimc/ort latency ratios (≤ 1 = pimc as fast or faster) and '× faster than fp32'.

    OMP_NUM_THREADS=2 python benchmarks/int8_vs_ort.py --out /tmp/int8 [--repeats 30]
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import numpy as np
import onnx

from pimc.models import bundled_model_path
from pimc.runtime.bench import compare_models
from pimc.runtime.datasets import data_splits

PASSES = "fold-constants,eliminate-identity,fold-batchnorm,quantize,cleanup"


def ort_quantize(src: Path, dst: Path, calib: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    name = onnx.load(str(src)).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{name: calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def prepare(name: str, out: Path) -> list[Path]:
    fp32 = out / f"{name}.onnx"
    if name == "digits_cnn":
        fp32.write_bytes(bundled_model_path().read_bytes())
    else:
        subprocess.run(["pimc", "models", "export", name, "-o", str(fp32)], check=True, capture_output=True)
    dims = [d.dim_value for d in onnx.load(str(fp32)).graph.input[0].type.tensor_type.shape.dim][1:]
    calib = data_splits("digits", tuple(dims), 0, None).calibration.x[:64].astype(np.float32)
    ort_q, pimc_q = out / f"{name}.ort_int8.onnx", out / f"{name}.pimc_int8.onnx"
    ort_quantize(fp32, ort_q, calib)
    subprocess.run(["pimc", "compile", str(fp32), "-t", "onnxruntime", "--passes", PASSES, "--data", "digits",
                    "--max-accuracy-drop", "100", "-o", str(pimc_q)], check=True, capture_output=True)
    return [fp32, ort_q, pimc_q]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/int8"))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print("model       batch  pimc/ort latency  ort × faster than fp32  pimc × faster than fp32  acc fp32/ort/pimc")
    for name in ("resnet18", "resnet20", "digits_cnn"):
        rows = compare_models(prepare(name, args.out), "digits", (1, 64), args.repeats, threads=args.threads)
        acc = "/".join(f"{r['accuracy']:.2%}" for r in rows)
        for b in (1, 64):
            fp, oq, pq = (r[f"latency_ms_b{b}"] for r in rows)
            print(f"{name:<11} {b:>5}  {pq / oq:>16.2f}  {fp / oq:>22.2f}  {fp / pq:>23.2f}  {acc}")


if __name__ == "__main__":
    main()
