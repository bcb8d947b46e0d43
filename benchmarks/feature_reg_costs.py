"""What Feature Regularization's activation zeros buy on each simulator target.

Given the exporter's regularized model and its dense twin (``pimc export feature-reg ... -o r.onnx
--dense-output d.onnx``), compile both for every simulator target with ``--data`` and compare their cost,
both *with* activation skipping (each target's default), so the figure is the regularization's own gain and
not ReLU's natural zeros. Two pipelines per target:

* ``measure``: only the exact normalisations and ``activation-sparsity`` — the two models as exported;
* ``default``: the target's default pipeline (its lossy passes run under the accuracy budget on both).

For every compile it records accuracy (held-out test split), energy and cycles with and without skipping,
and the mean / minimum input zero fraction of the convs after the first (on the calibration data). Prints
every command and writes ``costs.json`` and ``costs.csv`` into ``--out``.

    python benchmarks/feature_reg_costs.py --regularized r.onnx --dense d.onnx --data digits --out /tmp/fr

A model with a symbolic image size (super-resolution) needs ``--input-shape input=1x3x48x48``; its "accuracy"
is then PSNR in dB.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

TARGETS = ("escalate", "cim", "cmp-pim")
MEASURE = "fold-constants,eliminate-identity,fold-batchnorm,fuse-relu,cleanup,activation-sparsity"


def compile_once(model: Path, target: str, pipeline: str, data: str, out: Path,
                 extra: tuple[str, ...] = ()) -> dict | str:
    """The compile report, or pimc's one-line error (e.g. the final accuracy-budget check failed)."""
    report = out / f"{model.stem}.{target}.{pipeline}.json"
    cmd = [sys.executable, "-m", "pimc", "compile", str(model), "-t", target, "--data", data,
           "-o", str(report.with_suffix(".onnx")), "--report", str(report), *extra]
    if pipeline == "measure":
        cmd += ["--passes", MEASURE]
    print("$", shlex.join(cmd), flush=True)
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        print("  failed:", message, flush=True)
        return message
    return json.loads(report.read_text())


def zero_fractions(report: dict) -> list[float]:
    """Input zero fractions of every measured conv after the first, in graph order."""
    convs = [layer for layer in report["cost"]["layers"] if layer.get("input_density") is not None
             and "Gemm" not in layer["name"] and "MatMul" not in layer["name"]]
    return [1.0 - layer["input_density"] for layer in convs[1:]]


def row(model: str, target: str, pipeline: str, report: dict | str) -> dict:
    if isinstance(report, str):
        return {"model": model, "target": target, "pipeline": pipeline, "failed": report}
    skip = report["cost"]["activation_skipping"]
    zeros = zero_fractions(report)
    return {
        "model": model, "target": target, "pipeline": pipeline,
        "accuracy": report["accuracy"].get("output"), "drop_points": report["accuracy"].get("drop_points"),
        "energy_j": skip.get("energy_with_j"), "energy_without_skipping_j": skip.get("energy_without_j"),
        "cycles": skip.get("cycles_with"), "cycles_without_skipping": skip.get("cycles_without"),
        "mean_conv_input_zeros": sum(zeros) / len(zeros) if zeros else None,
        "min_conv_input_zeros": min(zeros) if zeros else None,
        "decomposed_layers": report["cost"].get("decomposed_layers"),
        "energy_breakdown_j": report["cost"].get("energy_breakdown_j"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regularized", type=Path, required=True)
    parser.add_argument("--dense", type=Path, required=True)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pipelines", default="measure,default")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--input-shape", default=None, help="passed to pimc compile (a symbolic model)")
    args = parser.parse_args()
    extra = ("--input-shape", args.input_shape) if args.input_shape else ()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for target in args.targets.split(","):
        for pipeline in args.pipelines.split(","):
            reports = {name: compile_once(path, target, pipeline, args.data, args.out, extra)
                       for name, path in (("dense", args.dense), ("regularized", args.regularized))}
            pair = [row(name, target, pipeline, report) for name, report in reports.items()]
            dense, reg = pair
            rows += pair
            if "failed" in dense or "failed" in reg:
                print(f"{target:9s} {pipeline:8s} no ratio: a compile failed", flush=True)
                continue
            for entry in pair:
                entry["energy_vs_dense"] = entry["energy_j"] / dense["energy_j"]
                entry["cycles_vs_dense"] = entry["cycles"] / dense["cycles"]
            print(f"{target:9s} {pipeline:8s} energy r/d {reg['energy_vs_dense']:.3f}  cycles r/d "
                  f"{reg['cycles_vs_dense']:.3f}  accuracy d {dense['accuracy']:.4f} r {reg['accuracy']:.4f}  "
                  f"conv-input zeros d {dense['mean_conv_input_zeros']:.3f} r {reg['mean_conv_input_zeros']:.3f} "
                  f"(min r {reg['min_conv_input_zeros']:.3f})  decomposed d {dense['decomposed_layers']} "
                  f"r {reg['decomposed_layers']}", flush=True)
    (args.out / "costs.json").write_text(json.dumps(rows, indent=2))
    with (args.out / "costs.csv").open("w", newline="") as handle:
        fields = list(dict.fromkeys(key for entry in rows for key in entry))
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
