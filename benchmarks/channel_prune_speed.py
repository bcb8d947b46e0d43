"""Channel pruning on a user's ResNet-18-style model (3×32×32, not a zoo export): post-training and
training-aware, timed on onnxruntime against the input model at batch 1 and 64 (interleaved, one run).

Runs, printing every command:
  1. ``pimc compile M --target onnxruntime --data npz:calib.npz --eval-data npz:test.npz`` — onnxruntime's
     default pipeline, whose ``channel-prune`` chooses each channel group's width under the accuracy budget
     by measured layer time, the readers refitted (no training);
  2. ``pimc export channel-prune --model M --data npz:train.npz --ratio R`` — group lasso, pruning rounds and
     distilled fine-tuning on the model's 4,000 training images (``train.npz``, written beside the model from
     ``user_models.load_data("mnist3")`` when absent; the exporter holds its own 20 % out);
  3. ``pimc bench M post.onnx trained.onnx --eval-data npz:test.npz --batches 1,64`` — accuracy on the 1,000
     held-out images and the latency of every model, interleaved.

    python benchmarks/user_resnet18_half.py --out DIR     # once: the model, calib.npz, test.npz
    python benchmarks/channel_prune_speed.py --user-dir DIR --out OUT [--ratio 0.5] [--repeats 30]

Writes ``summary.json`` into ``--out``. Slow (minutes on 2 cores): not part of the test suite.
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
    parser.add_argument("--user-dir", type=Path, required=True, help="resnet18_half.onnx, calib.npz, test.npz")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ratio", default="0.5", help="pimc export channel-prune --ratio")
    parser.add_argument("--repeats", default="30")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--reuse", action="store_true", help="keep post.onnx / trained.onnx of --out")
    parser.add_argument("--extra", default="", help="more pimc export channel-prune options, as one string")
    args = parser.parse_args()
    out, user = args.out, args.user_dir
    out.mkdir(parents=True, exist_ok=True)
    model, calib, test = user / "resnet18_half.onnx", f"npz:{user / 'calib.npz'}", f"npz:{user / 'test.npz'}"
    train = user / "train.npz"
    if not train.exists():
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import numpy as np
        import user_models as um

        data = um.load_data("mnist3")
        np.savez(train, x=data.x_train, y=data.y_train)
    pimc = [sys.executable, "-m", "pimc"]
    post, trained = out / "post.onnx", out / "trained.onnx"
    if not (args.reuse and post.exists()):
        run([*pimc, "compile", str(model), "--target", "onnxruntime", "--data", calib, "--eval-data", test,
             "-o", str(post), "--report", str(out / "post.json")])
    if not (args.reuse and trained.exists()):
        text = run([*pimc, "export", "channel-prune", "--model", str(model), "--data", f"npz:{train}", "-o",
                    str(trained), "--ratio", args.ratio, "--threads", args.threads, "--no-progress", "--json",
                    *shlex.split(args.extra)])
        (out / "export.json").write_text(text)
    bench = json.loads(run([*pimc, "bench", str(model), str(post), str(trained), "--eval-data", test,
                            "--batches", "1,64", "--repeats", args.repeats, "--json"]))
    (out / "bench.json").write_text(json.dumps(bench, indent=2))
    rows = bench["rows"] if isinstance(bench, dict) else bench
    base = rows[0]
    summary = {"input": base, "models": []}
    for row, name in zip(rows[1:], ("post-training (pimc compile)", "training-aware (pimc export)"), strict=True):
        entry = {"name": name, "accuracy": row["accuracy"], "accuracy_input": base["accuracy"],
                 "drop_points": round(100 * (base["accuracy"] - row["accuracy"]), 2),
                 "params": row["params"], "params_input": base["params"],
                 **{f"speedup_b{b}": round(base[f"latency_ms_b{b}"] / row[f"latency_ms_b{b}"], 3) for b in (1, 64)}}
        summary["models"].append(entry)
        print(f"{name}: {100 * row['accuracy']:.1f} % (input {100 * base['accuracy']:.1f} %), params "
              f"{row['params']:,} / {base['params']:,}, speed-up b1 {entry['speedup_b1']:.2f}x, "
              f"b64 {entry['speedup_b64']:.2f}x", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
