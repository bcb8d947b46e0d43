"""User-style models compiled for every target with its default pipeline, as a user would run pimc.

What it measures. For each model family of ``user_models.py`` (VGG, basic and bottleneck ResNets,
MobileNetV2, DenseNet, ResNeXt, SiLU/Hardswish, 7x7 stem, large FC head; none from pimc's zoo) and each
dataset (``mnist`` 1x28x28, ``digits`` 1x16x16, ``mnist3`` tinted 3x32x32), the model is trained here
(seeded, plain torch, one thread), exported with the legacy exporter (opset 17), and its data written as
``calib.npz`` (up to 1,024 labelled training images) and ``test.npz`` (the held-out test images). Then,
per target, the whole process

    python -m pimc compile M.onnx --target T --data npz:calib.npz --eval-data npz:test.npz \\
        --report R.json -o OUT.onnx

runs with nothing else set (default pipeline, default 1-point budget). Per model x target it records
success or the refusal line from stderr, the test accuracy before/after and its drop
(``report["accuracy"]``), speed-up and energy gain against every baseline of the input model
(``report["cost"]["speedup_vs"]`` / ``["energy_gain_vs"]``; for onnxruntime the measured latency
speed-up at batch 1 and 64 of ``report["latency"]``), the compile's wall seconds and their ratio to the
wall seconds of ONE whole ``python -m pimc run M.onnx --data npz:calib.npz`` of the input model, and a
"silent breach" flag: a compile that succeeded although its measured test drop exceeds its budget
(``report["accuracy"]["max_drop_points"]``). The report measures its drop on the part of ``test.npz`` it
holds out (its ``accuracy["data"]`` line says which), so each output is also run by
``python -m pimc run OUT.onnx --eval-data npz:test.npz`` on the whole test file against the same run of the
input model ("drop pts (all test)", flagged "all-test" when over the budget). With ``--threads 1`` the process and its children are pinned
to one CPU (onnxruntime sessions inside ``pimc compile`` would otherwise use every core) and torch/OpenMP
use one thread. Writes ``bench.json`` into ``--out`` (one record per cell, plus the machine, the date, the
git commit of the compiler at the start and the files modified on top of it, whose diff goes to
``worktree.diff``) after every cell, ``bench.md``, and prints a markdown table.

    OMP_NUM_THREADS=1 python benchmarks/model_bench.py --out /tmp/bench1 --threads 1 \\
        [--models vgg,densenet] [--datasets mnist,digits,mnist3] [--targets escalate,cim,cmp-pim,onnxruntime] \\
        [--reuse]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import user_models as um  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("escalate", "cim", "cmp-pim", "onnxruntime")
EPOCHS = {"mnist": 6, "mnist3": 6, "digits": 20}
SEED = 0


# ----------------------------------------------------------------------------------------------- machine
def machine_info(threads: int) -> dict:
    """CPU model, core count, date, versions and the git state of the compiler tree."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return proc.stdout.rstrip() if proc.returncode == 0 else ""

    import onnx
    import onnxruntime
    import torch

    return {
        "cpu": cpu, "cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)),
        "threads": threads, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "HEAD"), "git_subject": git("log", "-1", "--format=%s"),
        "git_modified": [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()],
        "python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def pin_to_one_cpu() -> int:
    """Restrict this process (and so its children) to one CPU: the highest one it may use."""
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def child_env(threads: int) -> dict:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    return env


# ----------------------------------------------------------------------------------------------- model
def prepare_model(family: str, data: um.DataSet, folder: Path, reuse: bool, epochs: int | None) -> dict:
    """Train and export ``family`` on ``data`` into ``folder`` (or reuse a previous run's files)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    onnx_path, info_path = folder / "model.onnx", folder / "train.json"
    files = [onnx_path, info_path, folder / "calib.npz", folder / "test.npz"]
    if reuse and all(f.exists() for f in files):
        return {**json.loads(info_path.read_text()), "reused": True}
    shape = data.input_shape
    model = um.build_model(family, shape, seed=SEED)
    n_epochs = epochs or EPOCHS[data.name]
    seconds = um.train(model, data.x_train, data.y_train, n_epochs, seed=SEED, batch=64, lr=3e-3,
                       shift=um.SHIFT_PIXELS[data.name])
    um.export(model, onnx_path, shape)
    um.write_npz_files(data, folder, calib_count=1024, seed=SEED)
    info = {
        "params": um.count_params(model), "macs": um.count_macs(model, shape), "epochs": n_epochs,
        "train_seconds": round(seconds, 1), "train_images": len(data.x_train), "test_images": len(data.x_test),
        "calib_images": min(1024, len(data.x_train)), "input_shape": list(shape),
        "test_acc_torch": um.accuracy_torch(model, data.x_test, data.y_test),
        "test_acc_onnxruntime": um.accuracy_onnx(onnx_path, data.x_test, data.y_test),
        "torch_threads": torch.get_num_threads(),
    }
    info_path.write_text(json.dumps(info, indent=2))
    return {**info, "reused": False}


# ----------------------------------------------------------------------------------------------- pimc
def pimc(args: list[str], env: dict, timeout: float) -> tuple[subprocess.CompletedProcess | None, float]:
    """One whole ``python -m pimc ...`` process and its wall seconds (None on timeout)."""
    command = [sys.executable, "-m", "pimc", *args]
    print("$", shlex.join(["python", "-m", "pimc", *args]), flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - start
    return proc, time.perf_counter() - start


def refusal_line(stderr: str) -> str:
    """The line pimc explains a failure with (its ``pimc: ...`` line, else the last line of stderr)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    marked = [line for line in lines if line.startswith("pimc:")]
    return (marked or lines or ["(no stderr)"])[-1]


def run_seconds(model: Path, calib: Path, env: dict, threads: int, timeout: float) -> float | None:
    """Wall seconds of one whole ``pimc run`` of the input model on the calibration file."""
    proc, seconds = pimc(["run", str(model), "--data", f"npz:{calib}", "--threads", str(threads)], env, timeout)
    return round(seconds, 2) if proc is not None and proc.returncode == 0 else None


def full_test_accuracy(model: Path, test: Path, env: dict, threads: int, timeout: float) -> float | None:
    """Accuracy of ``model`` on the whole test file, by ``pimc run --eval-data`` (None if it fails)."""
    proc, _ = pimc(["run", str(model), "--eval-data", f"npz:{test}", "--json", "--threads", str(threads),
                    "--repeats", "1"], env, timeout)
    if proc is None or proc.returncode != 0:
        return None
    try:
        return float(json.loads(proc.stdout)["accuracy"])
    except (ValueError, KeyError, TypeError):
        return None


def compile_cell(model: Path, target: str, folder: Path, env: dict, timeout: float) -> dict:
    """Compile ``model`` for ``target`` with its default pipeline and summarise the report."""
    report_path, out_path = folder / f"{target}.report.json", folder / f"model.{target}.onnx"
    report_path.unlink(missing_ok=True)
    args = ["compile", str(model), "--target", target, "--data", f"npz:{folder / 'calib.npz'}",
            "--eval-data", f"npz:{folder / 'test.npz'}", "--report", str(report_path), "-o", str(out_path)]
    proc, seconds = pimc(args, env, timeout)
    cell: dict = {"target": target, "compile_seconds": round(seconds, 2), "report": str(report_path)}
    if proc is None:
        return {**cell, "ok": False, "refusal": f"timeout after {timeout:.0f} s"}
    if proc.returncode != 0 or not report_path.exists():
        return {**cell, "ok": False, "returncode": proc.returncode, "refusal": refusal_line(proc.stderr)}
    report = json.loads(report_path.read_text())
    return {**cell, "ok": True, **summarise(report)}


def summarise(report: dict) -> dict:
    """Accuracy, cost ratios, onnxruntime latency and size of one compile report."""
    accuracy = report.get("accuracy") or {}
    cost = report.get("cost") or {}
    latency = report.get("latency") or {}
    model = report.get("model") or {}
    drop, budget = accuracy.get("drop_points"), accuracy.get("max_drop_points")
    out = {
        "acc_input": accuracy.get("input"), "acc_output": accuracy.get("output"), "drop_points": drop,
        "max_drop_points": budget, "eval_samples": accuracy.get("samples"),
        "speedup_vs": cost.get("speedup_vs") or {}, "energy_gain_vs": cost.get("energy_gain_vs") or {},
        "params": [model.get("params_before"), model.get("params")],
        "macs": [model.get("macs_before"), model.get("macs")],
        "warnings": report.get("warnings", []),
        "silent_breach": bool(drop is not None and budget is not None and drop > budget + 1e-9),
        "eval_note": accuracy.get("data"),
        "input_baselines": [k for k, v in (cost.get("baselines") or {}).items() if v.get("model") == "input"],
        "reference_baseline": next((k for k, v in (cost.get("baselines") or {}).items() if v.get("reference")),
                                   None),
    }
    if latency:
        out["latency"] = {k: v for k, v in latency.items() if k.startswith(("speedup_b", "input_ms", "output_ms"))
                          or k in ("measured", "note")}
    return out


# ----------------------------------------------------------------------------------------------- table
def _ratios(values: dict) -> str:
    return ", ".join(f"{k} {v:.2f}x" for k, v in values.items() if isinstance(v, (int, float))) or "-"


def _input_ratios(record: dict, key: str) -> str:
    """Ratios against the input model's baselines, the reference baseline first and starred."""
    names = sorted(record.get("input_baselines") or record[key],
                   key=lambda n: n != record.get("reference_baseline"))
    values = {(f"{n}*" if n == record.get("reference_baseline") else n): record[key].get(n) for n in names}
    return _ratios(values)


def markdown_table(records: list[dict]) -> str:
    """One row per model x target: refusal or drop, ratios vs the input model's baselines, times, breaches."""
    head = ("| dataset | model | acc | target | result | drop pts (report) | drop pts (all test) "
            "| speed-up vs input baselines | energy gain vs input baselines | compile s | / run | breach |")
    lines = [head, "|" + "---|" * 12]
    for r in records:
        base = f"| {r['dataset']} | {r['model']} | {100 * r['test_acc_onnxruntime']:.1f} % | {r['target']} "
        ratio = f"{r['compile_over_run']:.1f}" if r.get("compile_over_run") else "-"
        if not r["ok"]:
            refusal = r["refusal"].replace("|", "\\|")
            lines.append(base + f"| refused: {refusal} | - | - | - | - | {r['compile_seconds']:.0f} | {ratio} | - |")
            continue
        speed, energy = _input_ratios(r, "speedup_vs"), _input_ratios(r, "energy_gain_vs")
        if r["target"] == "onnxruntime":
            latency = r.get("latency") or {}
            speed = (_ratios({k.replace("speedup_", "ort "): v for k, v in latency.items()
                              if k.startswith("speedup_b")}) if latency.get("measured") else "not timed")
        full = (r.get("full_test") or {}).get("drop_points")
        full_text = f"{full:.2f}" if full is not None else "-"
        flags = [f for f, on in (("**silent**", r["silent_breach"]), ("all-test", r.get("breach_on_full_test")))
                 if on]
        lines.append(base + f"| ok | {r['drop_points']:.2f} | {full_text} | {speed} | {energy} "
                     f"| {r['compile_seconds']:.0f} | {ratio} | {', '.join(flags) or 'no'} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", default=",".join(um.FAMILIES))
    parser.add_argument("--datasets", default=",".join(um.DATASETS))
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--reuse", action="store_true", help="skip training when the model files exist")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads; 1 also pins to one CPU")
    parser.add_argument("--epochs", type=int, default=None, help="override the per-dataset epochs")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per pimc process")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    datasets = [d for d in args.datasets.split(",") if d]
    targets = [t for t in args.targets.split(",") if t]
    for name, known, what in ((models, um.FAMILIES, "model"), (datasets, um.DATASETS, "dataset")):
        unknown = [n for n in name if n not in known]
        if unknown:
            parser.error(f"unknown {what} {', '.join(unknown)} (use {', '.join(known)})")

    import torch

    torch.set_num_threads(args.threads)
    pinned = pin_to_one_cpu() if args.threads == 1 else None
    env = child_env(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    bench = {"machine": {**machine_info(args.threads), "pinned_cpu": pinned},
             "command": shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else argv,
             "records": []}
    diff = subprocess.run(["git", "diff", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    (args.out / "worktree.diff").write_text(diff)
    bench["machine"]["worktree_diff"] = {"file": str(args.out / "worktree.diff"),
                                         "sha256": hashlib.sha256(diff.encode()).hexdigest()}
    out_json = args.out / "bench.json"
    for dataset in datasets:
        data = um.load_data(dataset)
        for family in models:
            folder = args.out / dataset / family
            print(f"## {dataset} / {family}", flush=True)
            info = prepare_model(family, data, folder, args.reuse, args.epochs)
            print(f"  trained: test accuracy {100 * info['test_acc_onnxruntime']:.1f} % (onnxruntime), "
                  f"{info['params']:,d} params, {info['macs']:,d} MACs, {info['train_seconds']:.0f} s", flush=True)
            model = folder / "model.onnx"
            run_s = run_seconds(model, folder / "calib.npz", env, args.threads, args.timeout)
            full_in = full_test_accuracy(model, folder / "test.npz", env, args.threads, args.timeout)
            for target in targets:
                cell = compile_cell(model, target, folder, env, args.timeout)
                ratio = round(cell["compile_seconds"] / run_s, 2) if run_s else None
                if cell["ok"]:
                    full_out = full_test_accuracy(folder / f"model.{target}.onnx", folder / "test.npz", env,
                                                  args.threads, args.timeout)
                    drop_full = (round(100 * (full_in - full_out), 4)
                                 if full_in is not None and full_out is not None else None)
                    cell.update({"full_test": {"acc_input": full_in, "acc_output": full_out,
                                               "drop_points": drop_full},
                                 "breach_on_full_test": bool(drop_full is not None
                                                             and drop_full > cell["max_drop_points"] + 1e-9)})
                record = {"dataset": dataset, "model": family, **info, "run_seconds": run_s, **cell,
                          "compile_over_run": ratio}
                bench["records"].append(record)
                status = (f"drop {cell['drop_points']:.2f} / {cell['max_drop_points']:g}" if cell["ok"]
                          else cell["refusal"])
                print(f"  {target}: {status} ({cell['compile_seconds']:.0f} s)", flush=True)
                out_json.write_text(json.dumps(bench, indent=2))
    bench["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    out_json.write_text(json.dumps(bench, indent=2))
    table = markdown_table(bench["records"])
    (args.out / "bench.md").write_text(table + "\n")
    print(table)
    return bench


if __name__ == "__main__":
    main()
