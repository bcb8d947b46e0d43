"""Compile time as a ratio, whole processes, paired and interleaved: against the I/O floor without data, and
against one ``pimc run`` of the input model with data.

    floor ratio = median(pimc compile M -t T -o OUT) / median(python: onnx.load + check_model + onnx.save of M)
    run ratio   = median(pimc compile M -t T --data D --eval-data E) / median(pimc run M --eval-data D)

Each case runs its two commands alternately ``--runs`` times (A B A B …, after one warm-up of each) and
reports the medians and the median of the per-pair ratios. Cases:

* ``resnet50-<target>``: the zoo's ResNet-50 (``pimc models export resnet50``), no data, each target;
* ``resnet18-pattern-prune``: the zoo's ResNet-18, ``--passes pattern-prune``, no data;
* ``user-<target>``: a user's ResNet-18-half (``benchmarks/user_resnet18_half.py --out DIR``) with
  ``--data npz:DIR/calib.npz --eval-data npz:DIR/test.npz``, escalate and cmp-pim; the reference is one
  ``pimc run`` of the input model over the same 1,024 calibration images.

    python benchmarks/compile_speed.py --out DIR [--runs 3] [--cases resnet50,resnet18,user] [--user-dir DIR]

Writes ``compile_speed.json`` (one record per case) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

PIMC = [sys.executable, "-m", "pimc"]
FLOOR = ("import sys, onnx\nm = onnx.load(sys.argv[1]); onnx.checker.check_model(m); onnx.save(m, sys.argv[2])\n")


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr.strip()}")
    return seconds


def paired(a: list[str], b: list[str], runs: int) -> dict:
    """Medians of A and B and of A/B per pair, alternating A B after one warm-up of each."""
    timed(a), timed(b)
    times_a, times_b = [], []
    for _ in range(runs):
        times_a.append(timed(a))
        times_b.append(timed(b))
    ratios = [x / y for x, y in zip(times_a, times_b, strict=True)]
    return {"a_s": statistics.median(times_a), "b_s": statistics.median(times_b),
            "ratio": statistics.median(ratios), "runs": runs, "a": " ".join(a), "b": " ".join(b)}


def export(name: str, out: Path) -> Path:
    path = out / f"{name}.onnx"
    if not path.exists():
        subprocess.run([*PIMC, "models", "export", name, "-o", str(path)], check=True, capture_output=True)
    return path


def floor_command(model: Path, out: Path) -> list[str]:
    script = out / "floor.py"
    script.write_text(FLOOR)
    return [sys.executable, str(script), str(model), str(out / "floor.onnx")]


def resnet50_cases(out: Path, runs: int) -> dict:
    model = export("resnet50", out)
    return {f"resnet50-{t}": paired([*PIMC, "compile", str(model), "-t", t, "-o", str(out / f"r50.{t}.onnx")],
                                     floor_command(model, out), runs)
            for t in ("onnxruntime", "escalate", "cim", "cmp-pim")}


def resnet18_cases(out: Path, runs: int) -> dict:
    model = export("resnet18", out)
    command = [*PIMC, "compile", str(model), "-t", "escalate", "--passes", "pattern-prune", "-o",
               str(out / "r18.pattern.onnx")]
    return {"resnet18-pattern-prune": paired(command, floor_command(model, out), runs)}


def user_cases(user: Path, out: Path, runs: int) -> dict:
    model, calib, test = user / "resnet18_half.onnx", user / "calib.npz", user / "test.npz"
    run = [*PIMC, "run", str(model), "--eval-data", f"npz:{calib}"]
    cases = {}
    for target in ("escalate", "cmp-pim"):
        report = out / f"user.{target}.json"
        command = [*PIMC, "compile", str(model), "-t", target, "--data", f"npz:{calib}", "--eval-data",
                   f"npz:{test}", "-o", str(out / f"user.{target}.onnx"), "--report", str(report)]
        case = paired(command, run, runs)
        data = json.loads(report.read_text())
        accuracy, cost = data["accuracy"], data["cost"]
        case.update(input=accuracy["input"], output=accuracy["output"], drop_points=accuracy["drop_points"],
                    test_samples=accuracy["samples"], speedup_vs=cost["speedup_vs"],
                    energy_gain_vs=cost["energy_gain_vs"])
        cases[f"user-{target}"] = case
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", default="resnet50,resnet18,user")
    parser.add_argument("--user-dir", type=Path, help="output of benchmarks/user_resnet18_half.py (default: OUT/user)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    wanted = set(args.cases.split(","))
    results: dict = {}
    if "resnet50" in wanted:
        results.update(resnet50_cases(args.out, args.runs))
    if "resnet18" in wanted:
        results.update(resnet18_cases(args.out, args.runs))
    if "user" in wanted:
        user = args.user_dir or args.out / "user"
        if not (user / "resnet18_half.onnx").exists():
            subprocess.run([sys.executable, str(Path(__file__).with_name("user_resnet18_half.py")), "--out",
                            str(user)], check=True)
        results.update(user_cases(user, args.out, args.runs))
    (args.out / "compile_speed.json").write_text(json.dumps(results, indent=2, default=float))
    print(markdown_table(results))


def markdown_table(results: dict) -> str:
    """One row per case: the compile's and the reference's median seconds and the median per-pair ratio."""
    lines = ["| case | compile s | reference s | ratio (median of pairs) |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {r['a_s']:.2f} | {r['b_s']:.2f} | {r['ratio']:.2f} |" for name, r in results.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
