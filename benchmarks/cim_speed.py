"""CiM simulator speed: lowered + costed layers per second (target ≥ 1,000 layers/s).

Times ``lower_workload`` + ``schedule_cost`` on the workloads of ResNet-20, ResNet-18 and VGG-16 zoo
exports (after the default pipeline's fold-batchnorm), dense and with a synthetic 4-of-9 pattern map
(so the pattern-packing path is timed too), and separately the workload extraction from ONNX.

Run: python benchmarks/cim_speed.py [--out DIR] [--seconds 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pimc.app.compile import CompileOptions, compile_model
from pimc.backends.cim import CimConfig, lower_workload, schedule_cost
from pimc.compiler.workload import extract_workload

LIBRARY = [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8], [1, 3, 4, 5], [1, 4, 5, 7], [3, 4, 5, 7],
           [1, 3, 4, 7]]


def with_patterns(layers, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for layer in layers:
        if layer.op == "Conv" and layer.kernel == (3, 3) and layer.groups == 1:
            ids = rng.integers(-1, len(LIBRARY), (layer.cout, layer.cin)).astype(np.int16)
            notes = {**layer.annotations, "pattern_library": LIBRARY}
            layer = dataclasses.replace(layer, annotations=notes, maps={"pattern": ids})
        out.append(layer)
    return out


def rate(layers, hw, seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        schedule_cost(lower_workload(layers, hw), hw)
        count += len(layers)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="cim_reports")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    hw = CimConfig()
    for name in ("resnet20", "resnet18", "vgg16"):
        src = out / f"{name}.onnx"
        if not src.exists():
            subprocess.run([sys.executable, "-m", "pimc.cli.main", "models", "export", name, "-o", str(src)],
                           check=True, capture_output=True)
        model, _ = compile_model(CompileOptions(input=str(src), target="cim", write_output=False,
                                                passes="fold-constants,eliminate-identity,fold-batchnorm,cleanup"))
        start = time.perf_counter()
        layers = extract_workload(model).layers
        extract = len(layers) / (time.perf_counter() - start)
        dense = rate(layers, hw, args.seconds)
        pattern = rate(with_patterns(layers), hw, args.seconds)
        print(f"{name}: {len(layers)} layers; lower+cost {dense:,.0f} layers/s dense, {pattern:,.0f} layers/s "
              f"pattern-packed; workload extraction {extract:,.0f} layers/s", flush=True)


if __name__ == "__main__":
    main()
