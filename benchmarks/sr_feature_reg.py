"""Feature Regularization on super-resolution: EDSR-small ×2 on the natural images shipped with scikit-image
and scikit-learn (``--data sr-samples:2``).

Runs, printing every command:
  1. pimc export feature-reg --model edsr-small --data sr-samples:2 -o r.onnx --dense-output d.onnx ...
     (dense pre-training, then the regularized fine-tune; one file, several sparsity levels);
  2. the bicubic baseline on the same held-out tiles;
  3. per level: PSNR (Y, scale shaved) on the held-out tiles against the conv-input zero fraction and the
     effective MACs (MACs whose input is non-zero), as ``levels.json`` and ``psnr_vs_sparsity.png``;
  4. ``feature_reg_costs.py`` on d.onnx and r.onnx (exact passes + activation-sparsity, every simulator,
     ``--input-shape input=1x3xTxT``), so each target's energy is measured with the activation zeros.

    python benchmarks/sr_feature_reg.py --out /tmp/srfr [--epochs 40 --reg-epochs 20 --levels 0.6,0.8,0.85,0.9]

Writes ``summary.json`` into ``--out``. Slow (tens of minutes on 2 cores): not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from commands import run


def conv_macs(model: Path, tile: int) -> dict[str, int]:
    """MACs of every Conv node of ``model`` at a 1×3×tile×tile input."""
    from pimc.compiler.input_shapes import fix_input_shapes
    from pimc.compiler.loader import load_model
    from pimc.compiler.workload import extract_workload

    fixed = fix_input_shapes(load_model(str(model)), (f"input=1x3x{tile}x{tile}",))
    return {layer.name: int(layer.macs) for layer in extract_workload(fixed).layers if layer.op == "Conv"}


def effective_macs(macs: dict[str, int], zeros: dict[str, float]) -> float:
    """Σ MACs × (1 − the layer input's zero fraction); a layer without a measurement counts in full."""
    return float(sum(m * (1.0 - zeros.get(name, 0.0)) for name, m in macs.items()))


def plot(levels: list[dict], dense: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for axis, key, label in ((left, "mean_zeros", "mean conv-input zero fraction (after the first)"),
                             (right, "effective_macs_vs_dense", "effective MACs / dense")):
        axis.plot([row[key] for row in levels], [row["psnr_db"] for row in levels], "o-", label="regularized levels")
        axis.scatter([dense[key]], [dense["psnr_db"]], color="black", label="dense twin", zorder=3)
        axis.axhline(dense["bicubic_db"], color="grey", linestyle=":", label="bicubic")
        axis.set_xlabel(label)
        axis.set_ylabel("PSNR (Y) on held-out tiles, dB")
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown_table(summary: dict) -> str:
    """The levels and the simulators' energy of the regularized model against the dense twin, as Markdown."""
    dense = summary["dense"]
    lines = ["| model | PSNR (Y) dB | vs dense dB | conv-input zeros mean / min | effective MACs / dense MACs |",
             "| --- | --- | --- | --- | --- |",
             f"| bicubic | {dense['bicubic_db']:.2f} | {dense['bicubic_db'] - dense['psnr_db']:+.2f} | – | – |",
             f"| dense twin (d.onnx) | {dense['psnr_db']:.2f} | 0.00 | {dense['mean_zeros']:.1%} / – | "
             f"{dense['effective_macs_vs_dense']:.3f} |"]
    for row in summary["levels"]:
        mark = " (default)" if row["level"] == summary["default_level"] else ""
        lines.append(f"| level {row['level']}{mark}, target {row['target']:.0%} | {row['psnr_db']:.2f} | "
                     f"{row['psnr_vs_dense_db']:+.2f} | {row['mean_zeros']:.1%} / {row['min_zeros']:.1%} | "
                     f"{row['effective_macs_vs_dense']:.3f} |")
    lines += ["", "| target | energy r / d (skipping on) | cycles r / d | PSNR d → r (dB) |", "| --- | --- | --- | --- |"]
    for reg in (c for c in summary["costs"] if c["model"] == "regularized" and "energy_vs_dense" in c):
        dense_row = next(c for c in summary["costs"] if c["model"] == "dense" and c["target"] == reg["target"])
        lines.append(f"| {reg['target']} | {reg['energy_vs_dense']:.3f} | {reg['cycles_vs_dense']:.3f} | "
                     f"{dense_row['accuracy']:.2f} → {reg['accuracy']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", default="40", help="dense pre-training epochs")
    parser.add_argument("--reg-epochs", default="20")
    parser.add_argument("--levels", default="0.6,0.8,0.85,0.9")
    parser.add_argument("--penalty", default="0.5")
    parser.add_argument("--frozen-epochs", default="0")
    parser.add_argument("--gate", default="threshold", help="the exporter's --gate (threshold | topk)")
    parser.add_argument("--lr", default="1e-3")
    parser.add_argument("--tile", type=int, default=48, help="low-resolution tile side of the compiles")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--reuse", action="store_true", help="keep r.onnx / d.onnx / export.json of --out")
    parser.add_argument("--dense-checkpoint", type=Path, default=None, help="start from this pre-trained dense.pt")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    dense, regularized = out / "d.onnx", out / "r.onnx"
    if args.dense_checkpoint and not (out / "dense.pt").exists():  # the same pre-trained model, another fine-tune
        shutil.copy(args.dense_checkpoint, out / "dense.pt")
    if not (args.reuse and (out / "export.json").exists()):
        text = run([sys.executable, "-m", "pimc", "export", "feature-reg", "--model", "edsr-small", "--data",
                    "sr-samples:2", "-o", str(regularized), "--dense-output", str(dense), "--epochs", args.epochs,
                    "--reg-epochs", args.reg_epochs, "--levels", args.levels, "--penalty", args.penalty,
                    "--lr", args.lr, "--frozen-epochs", args.frozen_epochs, "--gate", args.gate, "--batch-size", "16", "--threads", args.threads,
                    "--dense-checkpoint", str(out / "dense.pt"), "--no-progress", "--json"])
        (out / "export.json").write_text(text)
    export = json.loads((out / "export.json").read_text())

    from pimc.runtime.datasets import load_dataset
    from pimc.runtime.images import bicubic

    test = load_dataset("sr-samples:2", (3, None, None), "test")
    bicubic_db = test.metric.value(bicubic(test.x, 2), test.y)
    macs = conv_macs(dense, args.tile)
    gated_macs = conv_macs(regularized, args.tile)
    dense_total = sum(macs.values())
    from pimc.passes.feature_reg.measure import image_convs

    skip = set(image_convs(regularized))  # the convs that read the (mean-shifted) image stay ungated

    def mean_zeros(zeros: dict[str, float]) -> float:
        values = [v for k, v in zeros.items() if k not in skip]
        return float(np.mean(values)) if values else 0.0

    dense_row = {"psnr_db": export["accuracy_dense"], "bicubic_db": bicubic_db,
                 "mean_zeros": mean_zeros(export["zero_fraction_dense"]),
                 "effective_macs_vs_dense": effective_macs(macs, export["zero_fraction_dense"]) / dense_total}
    levels = []
    for row in export["test"]:
        zeros = row["zero_fraction"]
        gated = {k: v for k, v in zeros.items() if k not in skip}
        levels.append({"level": row["level"], "target": export["levels"][row["level"]], "psnr_db": row["accuracy"],
                       "psnr_vs_dense_db": row["accuracy"] - export["accuracy_dense"],
                       "mean_zeros": mean_zeros(zeros), "min_zeros": min(gated.values()) if gated else 0.0,
                       "effective_macs_vs_dense": effective_macs(gated_macs, zeros) / dense_total})
        print(f"level {row['level']} ({export['levels'][row['level']]:.0%}): PSNR {row['accuracy']:.2f} dB "
              f"({levels[-1]['psnr_vs_dense_db']:+.2f} vs dense), zeros mean {levels[-1]['mean_zeros']:.1%} min "
              f"{levels[-1]['min_zeros']:.1%}, effective MACs {levels[-1]['effective_macs_vs_dense']:.3f}x dense",
              flush=True)
    print(f"dense {export['accuracy_dense']:.2f} dB, bicubic {bicubic_db:.2f} dB "
          f"({export['accuracy_dense'] - bicubic_db:+.2f} dB)", flush=True)
    (out / "levels.json").write_text(json.dumps({"dense": dense_row, "levels": levels}, indent=2))
    plot(levels, dense_row, out / "psnr_vs_sparsity.png")
    run([sys.executable, str(Path(__file__).with_name("feature_reg_costs.py")), "--regularized", str(regularized),
         "--dense", str(dense), "--data", "sr-samples:2", "--out", str(out / "costs"), "--pipelines", "measure",
         "--input-shape", f"input=1x3x{args.tile}x{args.tile}"])
    costs = json.loads((out / "costs" / "costs.json").read_text())
    summary = {"dense": dense_row, "levels": levels, "costs": costs, "default_level": export["default_level"]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
