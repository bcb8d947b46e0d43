"""Running a pimc command from a benchmark: echo it, stop the benchmark with its last error line if it fails."""

from __future__ import annotations

import shlex
import subprocess
import sys


def run(cmd: list[str]) -> str:
    """``cmd``'s standard output; exits with its last stderr line (or its return code) when it fails."""
    print("$", shlex.join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return done.stdout
