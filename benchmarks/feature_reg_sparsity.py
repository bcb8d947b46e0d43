"""Feature Regularization: test accuracy against conv-input sparsity, one multi-level model.

Trains (``pimc export feature-reg``, default schedule) or takes an exported multi-level file and its dense
export, then for every level feeds ``sparsity_level`` on onnxruntime and measures, on the test split, the
top-1 accuracy and the mean / min zero fraction of the inputs of every Conv after the first (the first
reads the image). The dense model's natural (ReLU) zero fraction is the reference point. Writes
``levels.csv``, ``levels.json`` and ``accuracy_vs_sparsity.png`` into ``--out``.

    python benchmarks/feature_reg_sparsity.py --out DIR [--model resnet20] [--data digits] [-- extra exporter options]
    python benchmarks/feature_reg_sparsity.py --out DIR --onnx r.onnx --dense d.onnx [--data digits]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def measure(path: Path, dense: Path, data: str) -> dict:
    """Per level and for the dense model: accuracy and mean / min conv-input zero fraction (test split)."""
    from pimc.cli.export.feature_reg import measure_levels
    from pimc.passes.feature_reg.measure import conv_input_zero_fractions, image_convs, level_metadata
    from pimc.runtime.datasets import load_dataset
    from pimc.runtime.session import evaluate, model_input

    meta = level_metadata(path)
    if meta is None:
        raise SystemExit(f"{path}: not a feature-reg export (no pimc.feature_reg metadata)")
    _, shape, _ = model_input(path)
    test = load_dataset(data, shape, split="test")
    skip = set(image_convs(path))
    rows = []
    for row in measure_levels(path, test, len(meta["levels"]), evaluate):
        gated = [v for k, v in row["zero_fraction"].items() if k not in skip]
        rows.append({"name": f"level {row['level']}", "level": row["level"], "target": meta["levels"][row["level"]],
                     "accuracy": row["accuracy"], "zero_mean": float(np.mean(gated)),
                     "zero_min": float(np.min(gated)), "default": row["level"] == meta["default_level"]})
    fractions = conv_input_zero_fractions(dense, test.x)
    gated = [v for k, v in fractions.items() if k not in set(image_convs(dense))]
    dense_row = {"name": "dense (ReLU zeros)", "level": None, "target": None,
                 "accuracy": evaluate(dense, test, repeats=1)["accuracy"], "zero_mean": float(np.mean(gated)),
                 "zero_min": float(np.min(gated)), "default": False}
    return {"model": str(path), "dense": str(dense), "data": data, "samples": len(test),
            "default_level": meta["default_level"], "rows": [dense_row, *rows]}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense, levels = result["rows"][0], result["rows"][1:]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["zero_mean"] * 100 for r in levels], [r["accuracy"] * 100 for r in levels], "o-",
            label="one model, sparsity_level 0..K-1 (mean over convs)")
    ax.plot([r["zero_min"] * 100 for r in levels], [r["accuracy"] * 100 for r in levels], "x:", color="grey",
            label="same levels, least sparse conv")
    ax.plot([dense["zero_mean"] * 100], [dense["accuracy"] * 100], "s", color="black", label="dense (ReLU zeros)")
    for r in levels:
        ax.annotate(f"{r['target']:.0%}" + (" (default)" if r["default"] else ""),
                    (r["zero_mean"] * 100, r["accuracy"] * 100), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    ax.axhline((dense["accuracy"] - 0.01) * 100, color="red", lw=0.8, ls="--", label="dense − 1 point")
    ax.set_xlabel("zero fraction of conv inputs after the first, test split (%)")
    ax.set_ylabel("test accuracy, onnxruntime (%)")
    ax.set_title(f"feature-reg: {Path(result['model']).name} on {result['data']} ({result['samples']} test images)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--onnx", type=Path, default=None, help="an existing multi-level export (skip training)")
    parser.add_argument("--dense", type=Path, default=None, help="its --dense-output file")
    args, extra = parser.parse_known_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.onnx is None:
        args.onnx, args.dense = args.out / "r.onnx", args.out / "d.onnx"
        command = [sys.executable, "-m", "pimc", "export", "feature-reg", "--model", args.model, "--data", args.data,
                   "-o", str(args.onnx), "--dense-output", str(args.dense), "--json", "--no-progress",
                   *[e for e in extra if e != "--"]]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            return done.returncode
        (args.out / "export.json").write_text(done.stdout)
    elif args.dense is None:
        raise SystemExit("--onnx needs --dense (the exporter's --dense-output)")
    result = measure(args.onnx, args.dense, args.data)
    (args.out / "levels.json").write_text(json.dumps(result, indent=2))
    with open(args.out / "levels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(result["rows"][0]))
        writer.writeheader()
        writer.writerows(result["rows"])
    plot(result, args.out / "accuracy_vs_sparsity.png")
    for r in result["rows"]:
        target = "" if r["target"] is None else f" target {r['target']:.0%}"
        print(f"{r['name']:<20}{target:<12} acc {r['accuracy']:.2%}  zeros mean {r['zero_mean']:.1%} "
              f"min {r['zero_min']:.1%}{'  (default)' if r['default'] else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
