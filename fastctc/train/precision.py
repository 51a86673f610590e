"""Mixed precision: which autocast dtype a run uses, and whether it needs a GradScaler.

auto: bf16 autocast on a CUDA GPU that supports it, else fp16 autocast with a GradScaler (the cards'
recipe used fp16 + GradScaler); fp32 on CPU. bf16 can be selected on CPU too. The CTC kernel takes
the bf16/fp16 logits directly and computes the loss in float32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16
    device_type: str

    @property
    def dtype(self) -> torch.dtype | None:
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Enabled only for fp16, whose narrow range needs loss scaling; a disabled scaler is a no-op."""
        return torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")


def resolve_precision(name: str, device: torch.device) -> Precision:
    if name not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {PRECISIONS}, got {name!r}")
    if name == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            name = "fp32"
    if name == "fp16" and device.type == "cpu":
        raise ValueError("train.precision=fp16 needs a CUDA device; on CPU use fp32 or bf16")
    return Precision(name, device.type)
