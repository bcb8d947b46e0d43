"""Every training-aware exporter on a user's own ONNX model, on real MNIST.

The user's model is defined here (not a zoo model): conv 1→16, BN, ReLU, pool, conv 16→32, BN, ReLU, pool,
conv 32→32, BN, ReLU, Flatten, FC 1568→10, trained on the 4,000-image train split of ``--data mnist`` and
exported by ``torch.onnx.export`` with the input/output names ``pixels`` / ``scores``. Then, with every
option at its default, ``python -m pimc export METHOD --model yours.onnx --data mnist -o METHOD.onnx``
for each method (the ONNX model is taken as trained: no dense pre-training), and for the input and every
output ``pimc run --data mnist`` (accuracy on the 1,000 held-out test images, onnxruntime) and
``pimc inspect`` (params, non-zero params, MACs, storage vs dense fp32, input/output names). Prints every
command and one table; writes the models and ``results.json`` into ``--out``.

    OMP_NUM_THREADS=1 python benchmarks/exporters_user_onnx.py --out /tmp/userexp [--methods decompose,prune]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

METHODS = ("decompose", "pattern", "prune", "quantize", "comparator")


def build_user_cnn():
    """The user's own network (torch)."""
    from torch import nn

    def block(cin: int, cout: int) -> list:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(1, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2), *block(32, 32),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


def train_and_export(path: Path, epochs: int, seed: int = 0) -> None:
    """Train on the mnist train split and export with the user's own I/O names."""
    import torch

    from pimc.models.train import train_classifier, training_data

    torch.manual_seed(seed)
    model = build_user_cnn()
    data = training_data("mnist", (1, 28, 28), 64, seed)
    train_classifier(model, data.loader, epochs, lr=3e-3, seed=seed, progress=False)
    model.eval()
    torch.onnx.export(model, (torch.randn(2, 1, 28, 28),), str(path), dynamo=False, input_names=["pixels"],
                      output_names=["scores"], dynamic_axes={"pixels": {0: "n"}, "scores": {0: "n"}})


def sh(args: list[str]) -> str:
    print("$", shlex.join(args), flush=True)
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def measure(path: Path) -> dict:
    pimc = [sys.executable, "-m", "pimc"]
    run = json.loads(sh([*pimc, "run", str(path), "--data", "mnist", "--json"]))
    info = json.loads(sh([*pimc, "inspect", str(path), "--json"]))
    return {"accuracy": run["accuracy"], "samples": run["samples"], "params": info["params"],
            "nonzero_params": info["nonzero_params"], "macs": info["macs"],
            "effective_macs": info["effective_macs"], "storage_ratio": info["storage"]["ratio"],
            "io": [[i["name"] for i in info["inputs"]], [o["name"] for o in info["outputs"]]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=10, help="Training epochs of the user's model.")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--reuse", action="store_true", help="Keep an existing yours.onnx.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    source = args.out / "yours.onnx"
    if not (args.reuse and source.exists()):
        train_and_export(source, args.epochs)
    results = {"input": measure(source)}
    for method in args.methods.split(","):
        out = args.out / f"{method}.onnx"
        summary = json.loads(sh([sys.executable, "-m", "pimc", "export", method, "--model", str(source),
                                 "--data", "mnist", "-o", str(out), "--no-progress", "--json"]))
        results[method] = measure(out) | {"exporter": summary}
        (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    base = results["input"]
    print(f"{'model':12s} {'acc':>7s} {'Δ pts':>6s} {'params':>8s} {'non-zero':>9s} {'MACs':>9s} {'eff. MACs':>9s} "
          f"{'storage×':>8s}  io")
    for name, r in results.items():
        print(f"{name:12s} {r['accuracy']:7.2%} {100 * (r['accuracy'] - base['accuracy']):+6.2f} {r['params']:8d} "
              f"{r['nonzero_params']:9d} {r['macs']:9d} {r['effective_macs']:9d} {r['storage_ratio']:8.2f}  "
              f"{r['io'][0]}→{r['io'][1]}")


if __name__ == "__main__":
    main()
