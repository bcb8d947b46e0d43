"""A sweep survives a killed worker: while a 6-trial grid runs on a local Ray, this script SIGKILLs (by pid)
the first Ray worker process it sees running a trial; Tune retries that trial (``max_failures=1``) or, past
its retries, records it as ``crashed``; the sweep completes and ``--resume`` reruns only crashed rows.

    python benchmarks/sweep_killed_worker.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

from pimc.sweep.runner import SweepOptions, run_sweep, start_ray
from pimc.sweep.spec import parse_spec

MODEL = str(Path(__file__).resolve().parents[1] / "models" / "digits_cnn.onnx")


def descendants(root: int) -> list[int]:
    """Pids of every process below ``root`` (from /proc; Linux)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def kill_first_trial_worker(killed: list[int], stop: threading.Event) -> None:
    """Kill (once) a descendant of this process whose title says it runs a Tune trial."""
    while not stop.is_set() and not killed:
        for pid in descendants(os.getpid()):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "ImplicitFunc" in title:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="sweep-kill-"))
    spec = parse_spec({"model": MODEL, "targets": ["escalate"],
                       "axes": {"decompose.rank": [3, 5, 7], "hw.escalate.basis_rows": [8, 16]}})
    start_ray(None, 2)
    killed: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=kill_first_trial_worker, args=(killed, stop), daemon=True)
    watcher.start()
    result = run_sweep(spec, SweepOptions(out, workers=2, progress=False))
    stop.set()
    statuses = [r["status"] for r in result.rows]
    print(f"killed worker pid(s): {killed or 'none found'}")
    print(f"sweep completed: {len(result.rows)} rows of 6, statuses {statuses}, {result.seconds:.1f} s")
    again = run_sweep(spec, SweepOptions(out, workers=2, resume=True, progress=False))
    print(f"resume: {again.computed} rerun, {again.skipped} kept; statuses {[r['status'] for r in again.rows]}")
    import ray

    ray.shutdown()


if __name__ == "__main__":
    main()
