"""Post-training quantization vs STE QAT vs ADMM quantization (``pimc export quantize``) on digits.

For each bit width (weights; activations 8 bits) and seed: train digits_cnn in float, fold BatchNorm,
then (a) the ``quantize`` pass on that float model, (b) QAT fine-tuning, (c) ADMM quantization, each
exported as QDQ ONNX and evaluated on onnxruntime (450 test images).

    python benchmarks/quantize_qat.py [--bits 4,3,2] [--seeds 0,1] [--model digits_cnn] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from pimc.cli.export.quantize import command, run_export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--bits", default="4,3,2")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--quant-epochs", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bits in (int(b) for b in args.bits.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                row = {"bits": bits, "seed": seed}
                for mode in ("qat", "admm"):
                    options = ["--model", args.model, "-o", str(Path(tmp) / f"{mode}.onnx"), "--bits", str(bits),
                               "--act-bits", "8", "--mode", mode, "--epochs", str(args.epochs),
                               "--quant-epochs", str(args.quant_epochs), "--seed", str(seed), "--no-progress"]
                    result = run_export(**command.make_context("quantize", options).params)
                    row.update(float=result["float_accuracy_torch"], ptq=result["ptq_accuracy"])
                    row[mode] = result["onnx_accuracy"]
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
