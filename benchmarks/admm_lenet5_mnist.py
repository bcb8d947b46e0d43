"""ADMM-NN on LeNet-5 / MNIST: pruning ratio, progressive mode, 3-bit joint quantization.

Both LeNets of the zoo: ``lenet5`` (LeCun's classic, 6/16 convs, FC 400-120-84-10, 61,470 weights, 32x32
input) and ``lenet5_caffe`` (ADMM-NN's LeNet-5: conv 20/50, FC 800-500-10, 430,500 weights, 28x28). Each
model is pre-trained densely once (the checkpoint in ``--out`` is re-used by every row, so every row prunes
the same dense model) with the exporter's default schedule, then every row runs

    python -m pimc export prune --model M --data mnist -o OUT.onnx --dense-output D.onnx \\
        --dense-checkpoint M.dense.pt --ratio R --steps S [--quantize-bits 3] --threads 1 --json
    python -m pimc run OUT.onnx --data mnist --json        # accuracy on the 1,000 held-out test images
    python -m pimc inspect OUT.onnx --json                 # storage.ratio (weights + index + scales + biases)

and the table (``results.json``, ``results.csv`` in ``--out``) lists model, ratio, steps, quantize bits,
dense / pruned accuracy, drop (points), non-zero compression, storage ratio (all in / weights + index only)
and the training seconds (wall; dense pre-training once per model; pruning per row, also as process CPU
seconds: on a shared machine wall time is mostly waiting), on 1 torch thread.

    python benchmarks/admm_lenet5_mnist.py --out /tmp/admm [--models lenet5_caffe] [--rows 85x,246x] \
        [--checkpoints DIR] [--extra "--admm-epochs 4"] [--validation 500]

``--validation N`` is the selection mode: every row (and its own dense model, checkpoint ``M.val500.dense.pt``)
trains on all but the last N training images and the table gives the accuracy on those N (``val_dense_acc``,
``val_pruned_acc``, ``val_drop_points``) in place of the test split's, which this mode neither measures nor
shows (the exporter's loss warning judges the N images too): choose ratios and schedules on these, then run the
chosen row once without ``--validation``. The row that pre-trains a checkpoint
goes on from the RNG state pre-training left, a row that loads it does not: the same row differs between the
two (300x-3b-layer with --validation 500: 1,384 non-zeros and a 1.6-point validation drop when it pre-trained,
1,399 and 1.2 when it loaded the checkpoint), the size of the seed noise to keep in mind at 500 images.

Knowledge distillation (rows ``*-kd5`` / ``*-kd9``: ``--distill 0.5`` / ``0.9``, T = 4, from the dense model in
every ADMM, masked-retraining and quantization phase), selection mode ``--validation 500`` (dense 97.8 % on the
500), validation drop in points at weights + index storage ratio (non-zeros), all loading the same checkpoint:
    300x-3b-layer      1.2 at   958x (1,399)   kd5 1.6 at   989x (1,339)   kd9 1.6 at   974x (1,351)
    350x-3b-layer      1.4 at 1,096x (1,193)   kd5 2.0 at 1,149x (1,127)   kd9 1.4 at 1,136x (1,137)
    320x-3b-layer-cw16                         kd5 4.2 at 1,114x (1,250)   kd9 3.0 at 1,130x (1,232)
    350x-3b-layer-cw16                         kd5 3.6 at 1,206x (1,137)   kd9 2.0 at 1,231x (1,115)
    350x-3b-layer --extra "--seed 1": 2.2 at 1,092x (1,190)   kd9 1.6 at 1,134x (1,140)
    350x-3b-layer --extra "--seed 2": 1.0 at 1,111x (1,180)   kd9 2.8 at 1,150x (1,126)
No distilled row kept its validation drop within 1 point, so the selection rule fixed beforehand (the largest
ratio within 1 point on validation, among the kd rows) chose nothing and no distilled configuration was run on
the test split. Over seeds 0-2 at 350x the plain rows lost 1.4 / 2.2 / 1.0 points and kd9 1.4 / 1.6 / 2.8: the
seed moves a row by more than distillation does (the ~0.7-point standard error of 500 images), and distillation
does not move the >= 1,000x models into the 1-point budget on 3,500 images.

Dead channels (the exporter's default ``--shrink``; the storage ratio stays against the 430,500-weight model as
brought). Before these runs the rule was fixed: among 246x / 260x / 270x / 280x-3b-layer with ``--validation 500``,
take the lowest ratio within 1 point on validation whose shrunk weights + index reach 1,000x, and run it once
on test. Validation drop in points, at weights + index after shrink (non-zeros):
    246x 1.8 at 995x (1,696)   260x 2.2 at 1,033x (1,614)   270x 2.0 at 1,074x (1,551)   280x 1.6 at 1,098x (1,503)
(246x ran before the exporter shrank, and was shrunk afterwards with ``pimc compile --passes shrink,cleanup``,
which is exact). None is within 1 point, so nothing was chosen; 260x with ``--extra "--seed 1"`` / ``"--seed 2"``
lost 1.4 / 1.2 (1,014x / 1,024x), a mean of 1.6 over three seeds. Stronger augmentation in the pruning phases
(rows ``*-aug``: ±10° rotations and ±10 % scaling on top of the shifts, the shared checkpoint loaded), with its
rule fixed before the runs (mean validation drop over seeds 0-2 at 260x <= 1 point, then one test run): 260x-aug
lost 0.8 / 1.6 / 1.4 points (989x / 1,014x / 1,014x), a mean of 1.27, so it was not run on test; 280x-aug, seed 0
only and for information, lost 0.8 at 1,082x. On test, 246x-3b-layer with all 4,000 training
images reached 98.6 % -> 98.1 % (-0.5) at 978x weights + index when it pre-trained the checkpoint (the same
weights shrunk after the fact: the export had read 817x), and 98.6 % -> 97.8 % (-0.8) at 991x when it loaded the
checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

# name: (ratio, steps, quantize bits, extra exporter options)
ROWS: dict[str, tuple[float, int, int | None, list[str]]] = {
    "85x": (85.0, 5, None, []),
    "246x": (246.0, 5, None, []),
    "85x-3b": (85.0, 5, 3, []),
    "246x-3b": (246.0, 5, 3, []),
    # with the shared dense checkpoint (pre-trained with the default ±2 px shifts) this only turns the
    # augmentation off during ADMM and masked retraining
    "85x-noaug-prune": (85.0, 5, None, ["--augment-shift", "0"]),
    "85x-3b-layer": (85.0, 5, 3, ["--quantize-scale", "layer"]),  # ADMM-NN: one q per layer
    "246x-3b-layer": (246.0, 5, 3, ["--quantize-scale", "layer"]),
    # pruning harder for storage >= 1,000x (weights + index), chosen with --validation 500 (see the docstring)
    **{f"{r}x-3b-layer": (float(r), 5, 3, ["--quantize-scale", "layer"]) for r in (260, 270, 280, 300, 320, 350, 500)},
    **{f"{r}x-3b-channel": (float(r), 5, 3, ["--quantize-scale", "channel"]) for r in (300, 350)},
    **{f"{r}x-3b-layer-cw{w}": (float(r), 5, 3, ["--quantize-scale", "layer", "--conv-weight", str(w)])
       for r, w in ((300, 16), (320, 16), (350, 16), (350, 4))},
    "350x-3b-layer-e20": (350.0, 5, 3, ["--quantize-scale", "layer", "--admm-epochs", "20", "--retrain-epochs", "20"]),
    "350x-3b-layer-s8": (350.0, 8, 3, ["--quantize-scale", "layer"]),
    # stronger augmentation in every pruning / quantization phase (±10° rotations, ±10 % scaling on top of the
    # ±2 px shifts; the dense checkpoint stays the shared one)
    **{f"{r}x-3b-layer-aug": (float(r), 5, 3, ["--quantize-scale", "layer", "--augment-rotate", "10",
                                                "--augment-scale", "0.1"]) for r in (260, 280)},
    # knowledge distillation from the dense model (--distill α, T = 4) in every pruning / quantization phase
    **{f"{r}x-3b-layer-kd{a}": (float(r), 5, 3, ["--quantize-scale", "layer", "--distill", f"0.{a}"])
       for r in (300, 350) for a in (5, 9)},
    **{f"{r}x-3b-layer-cw16-kd{a}": (float(r), 5, 3, ["--quantize-scale", "layer", "--conv-weight", "16",
                                                      "--distill", f"0.{a}"])
       for r in (320, 350) for a in (5, 9)},
}
MODELS = ("lenet5", "lenet5_caffe")
FIELDS = ("model", "row", "ratio", "steps", "quantize_bits", "dense_acc", "pruned_acc", "drop_points",
          "compression", "nonzero_pruned", "storage_ratio", "weights_storage_ratio", "pretrain_seconds", "prune_seconds",
          "prune_cpu_seconds", "val_dense_acc", "val_pruned_acc", "val_drop_points")


def pimc(*args: str) -> dict:
    """Run ``python -m pimc ARGS --json`` and return its JSON (exit with its stderr on failure)."""
    command = [sys.executable, "-m", "pimc", *args, "--json"]
    print("$", shlex.join(["pimc", *command[3:]]), flush=True)
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def run_row(model: str, row: str, out: Path, checkpoints: Path, extra: list[str], validation: int | None) -> dict:
    ratio, steps, bits, options = ROWS[row]
    held = f".val{validation}" if validation else ""  # a dense model that never saw the validation images
    output = out / f"{model}.{row}{held}.onnx"
    dense = out / f"{model}{held}.dense.onnx"
    checkpoint = checkpoints / f"{model}{held}.dense.pt"
    timing = checkpoints / f"{model}{held}.pretrain_seconds"
    if validation:
        options = [*options, "--validation", str(validation)]
    fresh = not checkpoint.exists()
    args = ["export", "prune", "--model", model, "--data", "mnist", "-o", str(output), "--dense-output", str(dense),
            "--dense-checkpoint", str(checkpoint), "--ratio", str(ratio), "--steps", str(steps), "--threads", "1",
            "--no-progress", *options, *extra]
    if bits:
        args += ["--quantize-bits", str(bits)]
    summary = pimc(*args)
    if fresh:
        timing.write_text(str(summary["train_seconds"]["pretrain"]))
    pretrain = float(timing.read_text()) if timing.exists() else None
    storage = pimc("inspect", str(output))["storage"]
    if validation:  # selection mode reports no test-split number, so nothing can be chosen by one
        accuracy = {"val_dense_acc": summary["accuracy_validation_dense"],
                    "val_pruned_acc": summary["accuracy_validation_pruned"],
                    "val_drop_points": round(100 * (summary["accuracy_validation_dense"]
                                                    - summary["accuracy_validation_pruned"]), 2)}
    else:
        dense_acc = pimc("run", str(dense), "--data", "mnist", "--repeats", "1")["accuracy"]
        pruned_acc = pimc("run", str(output), "--data", "mnist", "--repeats", "1")["accuracy"]
        accuracy = {"dense_acc": dense_acc, "pruned_acc": pruned_acc,
                    "drop_points": round(100 * (dense_acc - pruned_acc), 2)}
    return {**accuracy, "model": model, "row": row + held, "ratio": ratio, "steps": steps, "quantize_bits": bits,
            "compression": summary["compression"], "nonzero_pruned": summary["nonzero_pruned"],
            "storage_ratio": storage["ratio"],
            "weights_storage_ratio": storage.get("weights_ratio"), "pretrain_seconds": pretrain,
            "prune_seconds": summary["train_seconds"]["prune"],
            "prune_cpu_seconds": summary["train_seconds"].get("prune_cpu")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="Folder of the dense checkpoints M.dense.pt (default --out; share it between runs).")
    parser.add_argument("--extra", default="", help="More exporter options for every row (one string).")
    parser.add_argument("--validation", type=int, default=None,
                        help="Selection mode: hold the last N training images out and report accuracy on them.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoints = args.checkpoints or args.out
    checkpoints.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    for model in args.models.split(","):
        for row in args.rows.split(","):
            result = run_row(model, row, args.out, checkpoints, shlex.split(args.extra), args.validation)
            results = [r for r in results if (r["model"], r["row"]) != (model, result["row"])]
            results.append(result)
            results_path.write_text(json.dumps(results, indent=2))
            print(json.dumps(results[-1]), flush=True)
    with open(args.out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, restval="")
        writer.writeheader()
        writer.writerows(results)
    for r in results:
        print(" ".join(f"{k}={r.get(k)}" for k in FIELDS))


if __name__ == "__main__":
    main()
