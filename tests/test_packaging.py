"""kernels/ ships as fastctc.kernels, never as a top-level `kernels` (transformers probes that name)."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_installed_package_imports_fastctc_kernels_but_not_kernels(tmp_path):
    code = (
        "import importlib.util, fastctc.kernels as k; "
        "assert callable(k.ctc_loss); "
        "assert importlib.util.find_spec('kernels') is None, 'a top-level kernels module is importable'"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_built_wheel_maps_kernels_folder_into_fastctc(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("fastctc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "fastctc/kernels/__init__.py" in names and "fastctc/kernels/ctc_reference.py" in names
    assert not [n for n in names if n.startswith("kernels/")]
    # pyproject lists packages by hand: every subpackage of fastctc/ must be in the wheel
    subpackages = {f"fastctc/{p.parent.name}/__init__.py" for p in (REPO / "fastctc").glob("*/__init__.py")}
    assert subpackages and subpackages <= set(names), sorted(subpackages - set(names))
    top_level = [n for n in names if n.endswith("top_level.txt")]
    if top_level:
        assert zipfile.ZipFile(wheel).read(top_level[0]).decode().split() == ["fastctc"]
