"""Cost-only sweep speed: 1,000 escalate hardware configurations of ResNet-18 at 1 and 2 workers, against
one ``pimc compile`` of the same model (ratios measured in one run).

    python benchmarks/sweep_cost_only.py [--model r18.onnx] [--out DIR]
(without --model it exports the zoo's ResNet-18 first: ``pimc models export resnet18 -o r18.onnx``)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pimc.compiler.compile import CompileOptions, compile_model
from pimc.sweep.runner import SweepOptions, run_sweep
from pimc.sweep.spec import parse_spec

AXES = {  # 10 x 10 x 10 = 1,000 configurations
    "hw.escalate.basis_rows": [2, 4, 6, 8, 10, 12, 16, 20, 24, 32],
    "hw.escalate.coef_cols": [2, 4, 6, 8, 10, 12, 16, 20, 24, 32],
    "hw.escalate.dram_gbps": [3.2, 6.4, 8.0, 12.8, 16.0, 19.2, 25.6, 32.0, 51.2, 102.4],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="sweep-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    model = args.model or str(out / "r18.onnx")
    if not Path(model).exists():
        subprocess.run([sys.executable, "-m", "pimc", "models", "export", "resnet18", "-o", model], check=True)
    start = time.perf_counter()
    compile_model(CompileOptions(input=model, target="escalate", write_output=False))
    one_compile = time.perf_counter() - start
    print(f"one pimc compile of ResNet-18 (escalate): {one_compile:.1f} s")
    spec = parse_spec({"model": model, "targets": ["escalate"], "axes": AXES})
    for workers in (1, 2):
        result = run_sweep(spec, SweepOptions(out / f"w{workers}", workers=workers, progress=False))
        ok = sum(r["status"] == "ok" for r in result.rows)
        cost_s = sum(r["seconds"] for r in result.rows)
        print(f"workers={workers}: {len(result.rows)} configurations ({ok} ok) in {result.seconds:.1f} s "
              f"end to end = {result.seconds / one_compile:.2f}x one compile; "
              f"{len(result.rows) / result.seconds:.1f} configurations/s end to end, "
              f"{len(result.rows) / cost_s:.0f} configurations/s per worker in lower + cost")


if __name__ == "__main__":
    main()
