"""Pattern pruning on digits: LeNet-5 (≥ 20× fewer conv non-zeros) and ResNet-20 (4-of-9 + 50 % connectivity).

Each case trains the dense model exactly as ``pimc models train`` does (same seed, epochs, lr), writes
it, ADMM-prunes a copy with ``pimc export pattern`` and evaluates both ONNX files on onnxruntime
(the numbers ``pimc run X.onnx --data digits`` prints). Conv non-zeros are counted in the ONNX files.

    python benchmarks/pattern_digits.py [--case lenet5|resnet20|all] [--out DIR]

ResNet-20 is trained on the digits' native 8×8 resolution with one input channel (the zoo default
3×32×32 only up-samples the same 8×8 images and costs 16× more per epoch on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import numpy as np
import onnx

CASES: dict[str, list[str]] = {
    "lenet5": [
        "--model", "lenet5", "--nonzeros", "4", "--patterns", "8", "--connectivity", "0.7", "--library", "derived",
        "--epochs", "30", "--admm-epochs", "20", "--retrain-epochs", "20", "--rho", "5e-2", "--prune-lr", "2e-3",
    ],
    "resnet20": [
        "--model", "resnet20", "--in-channels", "1", "--input-size", "8", "--nonzeros", "4", "--patterns", "8",
        "--connectivity", "0.5", "--epochs", "12", "--admm-epochs", "8", "--retrain-epochs", "6",
        "--rho", "5e-2", "--prune-lr", "2e-3",
    ],
}


def conv_nonzeros(path: Path) -> tuple[int, int]:
    """(non-zero, total) Conv weights of an ONNX file."""
    model = onnx.load(str(path))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    weights = [inits[n.input[1]] for n in model.graph.node if n.op_type == "Conv" and n.input[1] in inits]
    return sum(int(np.count_nonzero(w)) for w in weights), sum(int(w.size) for w in weights)


def run_case(name: str, out: Path) -> dict:
    from click.testing import CliRunner

    from pimc.cli.main import cli
    from pimc.runtime.datasets import load_dataset
    from pimc.runtime.session import evaluate, model_input

    dense, pruned = out / f"{name}_dense.onnx", out / f"{name}_pattern.onnx"
    args = ["export", "pattern", *CASES[name], "--data", "digits", "-o", str(pruned), "--dense-output", str(dense),
            "--dense-checkpoint", str(out / f"{name}_dense.pt"), "--json", "--no-progress"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(result.output)
    summary = json.loads(result.output)
    row = {"case": name, "command": "pimc " + shlex.join(args)}
    for label, path in (("dense", dense), ("pattern", pruned)):
        _, shape, _ = model_input(path)
        row[f"{label}_accuracy"] = evaluate(path, load_dataset("digits", shape), repeats=1)["accuracy"]
        row[f"{label}_conv_nonzero"], row["conv_params"] = conv_nonzeros(path)
    row["accuracy_loss_points"] = round(100 * (row["dense_accuracy"] - row["pattern_accuracy"]), 2)
    row["conv_compression"] = round(row["dense_conv_nonzero"] / max(row["pattern_conv_nonzero"], 1), 2)
    row["layers"] = {k: {f: v[f] for f in ("kernels", "kernels_removed", "nonzero_after", "patterns_used")}
                     for k, v in summary["layers"].items()}
    row["skipped"] = summary["skipped"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--out", type=Path, default=Path("pattern_bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run_case(name, args.out) for name in (CASES if args.case == "all" else [args.case])]
    print(json.dumps(rows, indent=2))
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
