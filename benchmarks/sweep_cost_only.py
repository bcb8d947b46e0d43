"""Cost-only sweep speed: 100,000 escalate hardware points of ResNet-18 (five hardware axes, ten values each),
timed as one whole ``pimc sweep`` process (Ray start, the one compile, the vectorised costs and the results
files included); prints the wall time and points per second, and checks ``results.parquet`` has one row
per point.

    python benchmarks/sweep_cost_only.py [--model r18.onnx] [--out DIR] [--workers 1]
(without --model it exports the zoo's ResNet-18 first: ``pimc models export resnet18 -o r18.onnx``)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AXES = {  # 10^5 points: the dense array's shape, the input buffer, DRAM bandwidth and the clock
    "hw.escalate.dense_rows": [4, 8, 12, 16, 24, 32, 48, 64, 96, 128],
    "hw.escalate.dense_cols": [4, 8, 12, 16, 24, 32, 48, 64, 96, 128],
    "hw.escalate.input_buffer_kb": [8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0],
    "hw.escalate.dram_gbps": [3.2, 6.4, 8.0, 12.8, 16.0, 19.2, 25.6, 32.0, 51.2, 102.4],
    "hw.escalate.clock_mhz": [200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0, 1000.0, 1200.0, 1500.0],
}


def write_spec(model: str, path: Path) -> int:
    """The sweep SPEC (TOML) of ``AXES`` on ``model``; returns its number of points."""
    lines = [f"model = {json.dumps(model)}", 'targets = ["escalate"]', 'objectives = ["energy_j", "latency_s"]',
             "[axes]"]
    lines += [f"{json.dumps(name)} = {json.dumps(values)}" for name, values in AXES.items()]
    path.write_text("\n".join(lines) + "\n")
    return math.prod(len(v) for v in AXES.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--out", default=None)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="sweep-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    model = args.model or str(out / "r18.onnx")
    if not Path(model).exists():
        subprocess.run([sys.executable, "-m", "pimc", "models", "export", "resnet18", "-o", model], check=True)
    spec = out / "sweep_100k.toml"
    points = write_spec(str(Path(model).resolve()), spec)
    results = out / f"w{args.workers}"
    command = [sys.executable, "-m", "pimc", "sweep", str(spec), "-o", str(results), "--workers",
               str(args.workers), "--no-progress"]
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - start
    import pandas as pd

    frame = pd.read_parquet(results / "results.parquet")
    ok = int((frame["status"] == "ok").sum())
    print(f"{' '.join(command)}\n{points} points ({len(frame)} rows, {ok} ok) in {seconds:.1f} s end to end "
          f"(one process, Ray start included): {points / seconds:,.0f} points/s")


if __name__ == "__main__":
    main()
