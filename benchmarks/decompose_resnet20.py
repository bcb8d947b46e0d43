"""End-to-end PENNI measurement on ResNet-20 / digits (issue 3, "Done when").

Runs, printing every command:
  1. pimc export decompose --model resnet20 --data digits ... --dense-output dense.onnx   (skipped with --reuse)
  2. pimc compile penni.onnx --target onnxruntime --verify    (shrink + recompose, exact)
  3. pimc compile penni.onnx --target escalate --report        (the accelerator path)
  4. pimc run dense.onnx / penni.onnxruntime.onnx --data digits --json
  5. pimc bench dense.onnx penni.onnxruntime.onnx --data digits --batches 1,64
and prints the conv-parameter reduction: stored conv weights of the dense model (all non-zero) against
the compressed one, where a decomposed layer stores its d·kh·kw shared basis once plus the non-zero
coefficients, and every other conv its non-zero weights.

    python -m pimc.benchmarks.decompose_resnet20 --out /tmp/penni [--reuse] [--pretrain-epochs 3 ...]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
from pathlib import Path

import numpy as np
import onnx

from pimc.compiler.annotations import get_node_annotation
from pimc.compiler.graph import get_initializer


def sh(args: list[str]) -> str:
    print("$ " + " ".join(shlex.quote(a) for a in args), flush=True)
    done = subprocess.run(args, check=True, capture_output=True, text=True)
    return done.stdout


def conv_params(path: Path) -> int:
    model = onnx.load(str(path))
    total = 0
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        weight = get_initializer(model.graph, node.input[1])
        if get_node_annotation(node, "role") == "basis":
            total += int(get_node_annotation(node, "rank")) * weight.shape[2] * weight.shape[3]
        else:
            total += int(np.count_nonzero(weight))
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/penni"))
    parser.add_argument("--reuse", action="store_true", help="reuse dense.onnx / penni.onnx in --out")
    parser.add_argument("--pretrain-epochs", default="3")
    parser.add_argument("--epochs", default="4")
    parser.add_argument("--swap-every", default="1")
    parser.add_argument("--finetune-epochs", default="2")
    parser.add_argument("--threshold", default="1.0")
    parser.add_argument("--seed", default="0")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    dense, penni = out / "dense.onnx", out / "penni.onnx"
    ort_model, esc_model = out / "penni.onnxruntime.onnx", out / "penni.escalate.onnx"
    if not args.reuse:
        print(sh(["pimc", "export", "decompose", "--model", "resnet20", "--data", "digits", "-o", str(penni),
                  "--dense-output", str(dense), "--pretrain-epochs", args.pretrain_epochs, "--epochs", args.epochs,
                  "--swap-every", args.swap_every, "--finetune-epochs", args.finetune_epochs,
                  "--threshold", args.threshold, "--seed", args.seed, "--no-progress"]))
    sh(["pimc", "compile", str(penni), "--target", "onnxruntime", "-o", str(ort_model), "--verify",
        "--report", str(out / "ort_report.json")])
    sh(["pimc", "compile", str(penni), "--target", "escalate", "-o", str(esc_model),
        "--report", str(out / "escalate_report.json")])
    runs = {p.name: json.loads(sh(["pimc", "run", str(p), "--data", "digits", "--json"])) for p in (dense, ort_model)}
    bench = json.loads(sh(["pimc", "bench", str(dense), str(ort_model), "--data", "digits", "--batches", "1,64",
                           "--repeats", "50", "--json"]))
    before, after = conv_params(dense), conv_params(penni)
    acc_dense, acc_penni = runs[dense.name]["accuracy"], runs[ort_model.name]["accuracy"]
    print(f"conv parameters: dense {before}, compressed {after}, removed {1 - after / before:.2%}")
    print(f"test accuracy (pimc run, onnxruntime): dense {acc_dense:.2%}, compressed {acc_penni:.2%}, "
          f"loss {100 * (acc_dense - acc_penni):.2f} points")
    for batch in (1, 64):
        key = f"latency_ms_b{batch}"
        print(f"batch {batch}: dense {bench[0][key]:.3f} ms, compressed+recomposed {bench[1][key]:.3f} ms, "
              f"speed-up {bench[0][key] / bench[1][key]:.2f}x")
    esc = json.loads((out / "escalate_report.json").read_text())
    print("escalate report sections:", ", ".join(sorted(esc)))


if __name__ == "__main__":
    main()
