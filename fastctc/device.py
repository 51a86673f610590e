"""Which torch device a command runs on (training, and every command that uses a finished model)."""

from __future__ import annotations

import torch

from .errors import ConfigError


def device_for(name: str = "auto", local_rank: int | None = None, setting: str = "--device") -> torch.device:
    """ "cpu", "cuda" or "auto" (CUDA when visible). local_rank: the GPU of this DDP process; setting:
    where the user chose the device (train.device or --device), for the error's fix."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        fix = "--device cpu" if setting.startswith("--") else f"--set {setting}=cpu"
        raise ConfigError(f"{setting}: cuda, but no CUDA device is visible; use {fix}")
    return torch.device("cuda", torch.cuda.current_device() if local_rank is None else local_rank)
