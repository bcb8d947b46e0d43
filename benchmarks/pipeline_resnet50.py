"""ResNet-50 default onnxruntime pipeline time as a ratio to the I/O floor.

    ratio = median time of compile_model(--target onnxruntime, no verify, output written)
            / median time of (onnx.load + onnx.checker.check_model + onnx.save) of the same file

Both are measured in this process on the same file, interleaved, ``--runs`` times each (median). The
model is ResNet-50 (224×224, ``models.zoo``) exported with the legacy exporter at opset 17 with
BatchNorm kept (``training=PRESERVE``), so the pipeline has real work: 53 BatchNorms to fold, the dead
weights to clean up. ``--folded`` exports with BatchNorm folded by torch instead (the passes then
change nothing). ``--model F.onnx`` benchmarks an existing file. Goal: ratio ≤ 3.

    python benchmarks/pipeline_resnet50.py [--runs 5] [--folded] [--model F.onnx] [--passes a,b] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import onnx

from pimc.app.compile import CompileOptions, compile_model


def export_resnet50(path: Path, fold_bn: bool) -> None:
    import torch

    from pimc.models.zoo import build_model

    torch.manual_seed(0)
    model = build_model("resnet50").eval()
    training = torch.onnx.TrainingMode.EVAL if fold_bn else torch.onnx.TrainingMode.PRESERVE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.randn(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17,
            training=training, input_names=["input"], output_names=["logits"],
        )


def floor_once(src: Path, dst: Path) -> float:
    start = time.perf_counter()
    model = onnx.load(str(src))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return time.perf_counter() - start


def pipeline_once(src: Path, dst: Path, passes: str | None = None) -> float:
    start = time.perf_counter()
    compile_model(CompileOptions(input=str(src), target="onnxruntime", output=str(dst), passes=passes))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", type=Path, help="benchmark this ONNX file instead of exporting ResNet-50")
    parser.add_argument("--folded", action="store_true", help="export with BatchNorm folded by torch")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one pipeline run")
    parser.add_argument("--passes", help="run this pass list instead of the target's default pipeline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = args.model or Path(tmp) / "resnet50.onnx"
        if args.model is None:
            export_resnet50(src, args.folded)
        size_mb = src.stat().st_size / 2**20
        pipeline_once(src, Path(tmp) / "warm.onnx", args.passes)  # imports, pass discovery
        floors, pipes = [], []
        for _ in range(args.runs):
            floors.append(floor_once(src, Path(tmp) / "floor.onnx"))
            pipes.append(pipeline_once(src, Path(tmp) / "out.onnx", args.passes))
        floor, pipe = statistics.median(floors), statistics.median(pipes)
        _, report = compile_model(CompileOptions(
            input=str(src), target="onnxruntime", output=str(Path(tmp) / "r.onnx"), passes=args.passes,
        ))
        print(f"model: {src.name} ({size_mb:.1f} MB), {args.runs} runs each, medians")
        for p in report["passes"]:
            print(f"  {p['name']:<20} changed={str(p['changed']):<5} {p['seconds']:.3f} s")
        print(f"floor (load + check_model + save): {floor:.3f} s   runs: {', '.join(f'{t:.3f}' for t in floors)}")
        print(f"pipeline (compile_model, no verify): {pipe:.3f} s   runs: {', '.join(f'{t:.3f}' for t in pipes)}")
        print(f"ratio: {pipe / floor:.2f}x (goal <= 3x)")
        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(pipeline_once, src, Path(tmp) / "prof.onnx", args.passes)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
