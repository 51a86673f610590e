"""Tests marked `cuda` need a CUDA GPU: without one they are skipped, saying why (`fastctc bench gpu`
runs them on a GPU)."""

import os

import pytest
import torch

# Under pytest-xdist two workers share two cores: one torch thread each, or their OpenMP threads
# spin-wait against each other (children started by tests inherit OMP_NUM_THREADS).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs a CUDA GPU (torch.cuda.is_available() is False); `fastctc bench gpu` runs these on one"
    )
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
