"""Bounded compilation: the cases in tests/compile_shapes_cases.py (one TIMIT-like epoch compiled with no
graph break and at most 3 compiles, compiled loss/gradient equal to eager, the bounded-shape step fit for a
CUDA graph), run in a child pytest.

Why a child process: in one of four full-suite CI runs (2026-11-22) every compile of the CPU CTC custom op
failed in dynamo's fake-tensor pass with a C++ allocation error (basic_string::_M_create; once, in a
helper's run, std::bad_alloc) after the earlier test files had run in the same process; the same cases
never failed in a fresh process. Until that is understood (see the session note), they run in a fresh
interpreter, so they measure compilation and not what other tests left behind. Cases and assertions are
unchanged.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _run_cases(marker: str) -> None:
    pythonpath = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "pytest", str(TESTS / "compile_shapes_cases.py"), "-q", "-p", "no:cacheprovider",
           "-m", marker, "-rs"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=TESTS.parent, env=dict(os.environ, PYTHONPATH=pythonpath), capture_output=True,
                          text=True, timeout=900)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"compile cases failed ({' '.join(cmd)}):\n{tail}"
    assert " passed" in proc.stdout.splitlines()[-1], f"no compile case ran:\n{tail}"


def test_compile_cases():
    _run_cases("not slow")


@pytest.mark.slow
def test_compile_cases_slow():
    _run_cases("slow")
