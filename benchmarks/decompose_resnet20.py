"""End-to-end PENNI measurement on ResNet-20 / digits.

Runs, printing every command:
  1. OMP_NUM_THREADS=2 pimc export decompose --model resnet20 --data digits ... --dense-output dense.onnx
     --threads 2   (skipped with --reuse; the dense baseline is the pre-trained model PENNI starts from)
  2. pimc compile penni.onnx --target onnxruntime --verify    (shrink + recompose, exact)
  3. pimc compile penni.onnx --target escalate --report        (the accelerator path)
  4. pimc run dense.onnx / penni.onnxruntime.onnx --data digits --json
  5. pimc bench dense.onnx penni.onnxruntime.onnx --data digits --batches 1,64
and prints the conv-parameter reduction (``stored_conv_params``: a decomposed layer stores its d·kh·kw
shared basis once plus the non-zero coefficients, every other conv its non-zero weights; the dense
model's weights are all counted), the accuracies, the onnxruntime speed-ups and the ESCALATE report's
speedup_vs / energy_gain_vs against its baselines (dense = the dense export, --baseline-model).

    python -m pimc.benchmarks.decompose_resnet20 --out /tmp/penni [--reuse] [--pretrain-epochs 4 ...]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
from pathlib import Path

import onnx

from pimc.passes.decompose._common import stored_conv_params


def sh(args: list[str]) -> str:
    print("$ " + " ".join(shlex.quote(a) for a in args), flush=True)
    done = subprocess.run(args, check=True, capture_output=True, text=True)
    return done.stdout


def conv_params(path: Path) -> int:
    return stored_conv_params(onnx.load(str(path)))


EXPORT_OPTIONS = {
    "pretrain-epochs": "15", "epochs": "12", "swap-every": "2", "prune-rounds": "3", "finetune-epochs": "6",
    "threshold": "1.0", "group-l1": "1e-2", "group-threshold": "1.0", "residual-l1": "1e-2",
    "residual-threshold": "1.1", "threads": "2", "seed": "0",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/penni"))
    parser.add_argument("--reuse", action="store_true", help="reuse dense.onnx / penni.onnx in --out")
    for option, default in EXPORT_OPTIONS.items():  # passed on to `pimc export decompose` as given
        parser.add_argument(f"--{option}", default=default)
    parser.add_argument("--repeats", default="50")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    dense, penni = out / "dense.onnx", out / "penni.onnx"
    ort_model, esc_model = out / "penni.onnxruntime.onnx", out / "penni.escalate.onnx"
    if not args.reuse:
        passed = [text for option in EXPORT_OPTIONS for text in (f"--{option}", getattr(args, option.replace("-", "_")))]
        print(sh(["pimc", "export", "decompose", "--model", "resnet20", "--data", "digits", "-o", str(penni),
                  "--dense-output", str(dense), *passed, "--no-progress"]))
    sh(["pimc", "compile", str(penni), "--target", "onnxruntime", "-o", str(ort_model), "--verify",
        "--report", str(out / "ort_report.json")])
    try:
        sh(["pimc", "compile", str(penni), "--target", "escalate", "-o", str(esc_model),
            "--baseline-model", f"dense={dense}", "--report", str(out / "escalate_report.json")])
        escalate_error = None
    except subprocess.CalledProcessError as exc:
        escalate_error = (exc.stderr or "").strip().splitlines()[-1:] or ["failed"]
    runs = {p.name: json.loads(sh(["pimc", "run", str(p), "--data", "digits", "--json"])) for p in (dense, ort_model)}
    bench = json.loads(sh(["pimc", "bench", str(dense), str(ort_model), "--data", "digits", "--batches", "1,64",
                           "--repeats", args.repeats, "--json"]))
    before, after = conv_params(dense), conv_params(penni)
    acc_dense, acc_penni = runs[dense.name]["accuracy"], runs[ort_model.name]["accuracy"]
    print(f"conv parameters: dense {before}, compressed {after}, removed {1 - after / before:.2%}")
    print(f"test accuracy (pimc run, onnxruntime): dense {acc_dense:.2%}, compressed {acc_penni:.2%}, "
          f"loss {100 * (acc_dense - acc_penni):.2f} points")
    for batch in (1, 64):
        key = f"latency_ms_b{batch}"
        print(f"batch {batch}: dense {bench[0][key]:.3f} ms, compressed+recomposed {bench[1][key]:.3f} ms, "
              f"speed-up {bench[0][key] / bench[1][key]:.2f}x")
    if escalate_error:
        print(f"escalate compile failed: {escalate_error[0]}")
        return
    esc = json.loads((out / "escalate_report.json").read_text())
    cost = esc.get("cost", esc)
    for key in ("speedup_vs", "energy_gain_vs"):
        print(f"escalate {key}: " + ", ".join(f"{k} {v:.2f}x" for k, v in sorted(cost.get(key, {}).items())))


if __name__ == "__main__":
    main()
