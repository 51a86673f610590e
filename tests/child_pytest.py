"""One way to run tests in a child pytest (the Triton interpreter must be switched on before triton is
imported, so those tests run in a fresh process) and one verdict on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def run_child_pytest(*args: str, timeout: int = 600, env: dict | None = None) -> str:
    """`python -m pytest -q ARGS` under TRITON_INTERPRET=1 with one thread; fails unless it exits 0 with at
    least one test passed and none skipped (a skip there would hide the kernel it runs). Its stdout."""
    pythonpath = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath, **(env or {})}
    # -n 0: one process (the repository's addopts run the suite on two xdist workers)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "-rs", *args]
    proc = subprocess.run(cmd, cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=timeout)
    tail = (proc.stdout + proc.stderr)[-6000:]
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, f"child pytest failed ({' '.join(cmd)}):\n{tail}"
    assert " passed" in summary and " skipped" not in summary, f"child pytest passed nothing or skipped:\n{tail}"
    return proc.stdout
