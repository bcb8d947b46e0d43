"""Accuracy of uniform QDQ quantization vs the DYNASTY-style bit map on digits (onnxruntime).

For each model: fp32; ``quantize`` at int8 (W8A8); uniform per-channel weights at 4 and 3 bits (A8);
the block-scaled ablation (``bitmap`` with a single candidate, i.e. every block at 4 or 3 bits — isolates
the per-block step from the allocation); and ``bitmap`` at mean 4 and 3 bits (candidates 2,3,4,6,8).
Every quantized variant is compiled with ``fold-batchnorm`` first, calibrated on 256 digits training
samples drawn with each seed, and evaluated on the 450 digits test images.

    python benchmarks/quantize_accuracy.py [MODEL.onnx ...] [--seeds 0,1,2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from pimc.app.compile import CompileOptions, compile_model
from pimc.models import bundled_model_path
from pimc.runtime.datasets import load_dataset
from pimc.runtime.session import evaluate, model_input

VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "int8": ("quantize", ()),
    "uniform_w4": ("quantize", ("quantize.weight_bits=4", "quantize.act_bits=8")),
    "uniform_w3": ("quantize", ("quantize.weight_bits=3", "quantize.act_bits=8")),
    "blocks_all4": ("bitmap", ("bitmap.candidates=4", "bitmap.mean_bits=4")),
    "blocks_all3": ("bitmap", ("bitmap.candidates=3", "bitmap.mean_bits=3")),
    "bitmap_mean4": ("bitmap", ("bitmap.mean_bits=4",)),
    "bitmap_mean3": ("bitmap", ("bitmap.mean_bits=3",)),
}


def measure(model: Path, seeds: list[int]) -> dict[str, list[float]]:
    _, shape, _ = model_input(str(model))
    data = load_dataset("digits", shape)
    results: dict[str, list[float]] = {"fp32": [evaluate(str(model), data, repeats=1)["accuracy"]]}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (pass_name, sets) in VARIANTS.items():
            results[name] = []
            for seed in seeds:
                out = Path(tmp) / f"{name}_{seed}.onnx"
                compile_model(CompileOptions(
                    input=str(model), target="onnxruntime", output=str(out), data="digits",
                    passes=f"fold-batchnorm,{pass_name}", sets=sets, seed=seed,
                ))
                results[name].append(evaluate(str(out), data, repeats=1)["accuracy"])
                print(f"{model.name} {name} seed {seed}: {results[name][-1]:.4f}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    table = {}
    for model in args.models or [bundled_model_path()]:
        table[str(model)] = measure(model, seeds)
    for model, results in table.items():
        print(f"\n{model}")
        for name, accs in results.items():
            print(f"  {name:14s} mean {100 * np.mean(accs):6.2f} %   per seed "
                  + " ".join(f"{100 * a:.2f}" for a in accs))
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
