"""Simulator speed of the escalate target: layers evaluated per second on a decomposed ResNet-50.

The model is the zoo ResNet-50 (224×224, random weights) after the target's own pipeline with
``decompose.prune`` (pruned coefficients exercise the sparse bookkeeping). The workload is extracted
once; ``lower`` (pairing, zero statistics per tile and row group) + ``cost`` are then timed over
``--repeats`` runs. A second figure includes ``extract_workload`` (reading every weight from the ONNX
protobuf), i.e. ``Target.lower`` + ``Target.cost`` exactly as ``pimc compile`` calls them.

    python benchmarks/escalate_bench.py                       # ResNet-50, prune 1.0, 20 repeats
    python benchmarks/escalate_bench.py --model my.onnx --repeats 50
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import onnx

from pimc.backends.escalate import EscalateConfig, cost_schedule, lower_workload
from pimc.compiler.loader import load_model
from pimc.compiler.passbase import PassContext
from pimc.compiler.pipeline import PassManager, build_pipeline
from pimc.compiler.target import get_target
from pimc.compiler.workload import extract_workload


def prepared_model(path: str | None, prune: float) -> onnx.ModelProto:
    if path is None:
        from pimc.models.train import export_onnx
        from pimc.models.zoo import MODELS, build_model

        folder = Path(tempfile.mkdtemp(prefix="pimc-escalate-bench-"))
        path = str(folder / "resnet50.onnx")
        export_onnx(build_model("resnet50"), path, MODELS["resnet50"].input_shape)
    target = get_target("escalate")
    sets = [f"decompose.prune={prune}"] if prune > 0 else []
    passes = build_pipeline(target.default_pipeline(), sets=sets)
    return PassManager(passes, PassContext(target="escalate")).run(load_model(path))


def timed(fn, repeats: int) -> tuple[float, float]:
    """Seconds per call: (CPU time of this process, wall time). On a shared machine the CPU time is the
    simulator's cost; the wall time also counts waiting for a core."""
    fn()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.process_time() - cpu) / repeats, (time.perf_counter() - wall) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="ONNX model (default: zoo ResNet-50 at 224x224)")
    parser.add_argument("--prune", type=float, default=1.0, help="decompose.prune threshold (0: none)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    start = time.perf_counter()
    model = prepared_model(args.model, args.prune)
    print(f"pipeline: {time.perf_counter() - start:.1f} s")
    hw = EscalateConfig()
    target = get_target("escalate")
    workload = extract_workload(model)
    schedule = lower_workload(workload, hw)
    layers = len(schedule.layers)
    records = len(workload.layers)
    decomposed = sum(p.kind == "decomposed" for p in schedule.layers)
    print(f"{layers} layers ({decomposed} decomposed, {records} compute nodes)")

    runs = {
        "lower+cost (workload extracted once)": (lambda: cost_schedule(lower_workload(workload, hw), hw), 1),
        "lower alone": (lambda: lower_workload(workload, hw), 1),
        "extract_workload+lower+cost (as pimc compile)": (lambda: target.cost(target.lower(model, hw), hw), 4),
    }
    for label, (fn, divisor) in runs.items():
        cpu, wall = timed(fn, max(3, args.repeats // divisor))
        print(f"{label}: CPU {cpu * 1e3:.1f} ms / model = {layers / cpu:,.0f} layers/s "
              f"({records / cpu:,.0f} compute nodes/s); wall {wall * 1e3:.1f} ms = {layers / wall:,.0f} layers/s")


if __name__ == "__main__":
    main()
