"""kernels/ ships as fastctc.kernels, never as a top-level `kernels` (transformers probes that name)."""

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_subpackages() -> set[str]:
    """The package folders the README's Layout section names (`models/`, `fastctc/devtools/`, ...):
    those with an __init__.py under fastctc/, and kernels/ (shipped as fastctc.kernels)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    layout = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    folders = {m.rstrip("/").rpartition("/")[2] for m in re.findall(r"`((?:fastctc/)?\w+/)", layout)}
    return {f for f in folders if f == "kernels" or (REPO / "fastctc" / f / "__init__.py").is_file()}


def test_installed_package_imports_fastctc_kernels_but_not_kernels(tmp_path):
    code = (
        "import importlib.util, fastctc.kernels as k; "
        "assert callable(k.ctc_loss); "
        "assert importlib.util.find_spec('kernels') is None, 'a top-level kernels module is importable'"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_built_wheel_maps_kernels_folder_into_fastctc(tmp_path):
    # built from a clean copy: an in-tree build reuses build/lib and the egg-info, whose files from
    # earlier builds would hide a subpackage missing from pyproject's list
    src = tmp_path / "src"
    for name in ("fastctc", "kernels"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
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
            str(src),
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
    # every module ships, and so does every subpackage the README's Layout section names
    modules = {f"fastctc/{p.relative_to(REPO / 'fastctc').as_posix()}" for p in (REPO / "fastctc").rglob("*.py")}
    modules |= {f"fastctc/kernels/{p.name}" for p in (REPO / "kernels").glob("*.py")}
    assert modules <= set(names), sorted(modules - set(names))
    named = readme_subpackages()
    assert {"models", "data", "train", "inference", "kernels", "bench", "devtools"} <= named, named
    assert {f"fastctc/{name}/__init__.py" for name in named} <= set(names)
    top_level = [n for n in names if n.endswith("top_level.txt")]
    if top_level:
        assert zipfile.ZipFile(wheel).read(top_level[0]).decode().split() == ["fastctc"]
