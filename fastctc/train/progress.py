"""Progress: metrics.jsonl (+ TensorBoard), and the window of steps one progress line reports.

Nothing here reads the device between progress lines: a step adds its loss, gradient norm and skip
flag to the window as device tensors, and the line fetches them all in one transfer.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch


class MetricsLog:
    """metrics.jsonl (one JSON object per log or eval event), mirrored to TensorBoard when installed.
    Only rank 0 writes; on other ranks every call is a no-op."""

    def __init__(self, path: Path, enabled: bool = True):
        self.file = open(path, "a", encoding="utf-8") if enabled else None
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(path.parent / "tensorboard"))
            except Exception:  # tensorboard is optional
                self.tb = None

    def write(self, event: str, **values) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps({"event": event, "time": round(time.time(), 3), **values}) + "\n")
        self.file.flush()
        if self.tb is not None and "step" in values:
            for k, v in values.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{event}/{k}", v, values["step"])

    def close(self) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except OSError:  # its last flush failed (a full disk): the write that failed first was reported
                pass
            self.file = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def format_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@dataclass
class Window:
    """The steps since the last progress line. Device tensors stay on the device until `fetch`."""

    t0: float
    loss_sum: torch.Tensor | float = 0.0  # weighted sum of micro-batch mean losses (device)
    micro_batches: int = 0
    utterances: int = 0
    audio_s: float = 0.0
    grad_norm: torch.Tensor | float = 0.0  # the last step's (device)
    skips: list = field(default_factory=list)  # (step, device bool: its gradient was not finite)

    def add(
        self,
        step: int,
        loss_sum: torch.Tensor,
        micro_batches: int,
        utterances: int,
        audio_s: float,
        grad_norm: torch.Tensor,
        skipped: torch.Tensor,
    ) -> None:
        self.loss_sum = self.loss_sum + loss_sum
        self.micro_batches += micro_batches
        self.utterances += utterances
        self.audio_s += audio_s
        self.grad_norm = grad_norm
        self.skips.append((step, skipped))

    def fetch(self) -> tuple[float, float, list[int]]:
        """(loss sum, last grad norm, skipped steps) in one device read; the skip flags are then
        dropped (a checkpoint may fetch mid-window), the sums kept."""
        if not self.skips:
            return float(self.loss_sum), float(self.grad_norm), []
        values = torch.stack(
            [torch.as_tensor(self.loss_sum).float(), self.grad_norm.float(), *(bad.float() for _, bad in self.skips)]
        ).tolist()  # host sync: once per line
        skipped = [step for (step, _), bad in zip(self.skips, values[2:]) if bad]
        self.skips = []
        return values[0], values[1], skipped
