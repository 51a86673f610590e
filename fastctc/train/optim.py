"""Optimizer and learning-rate schedule: AdamW, linear warmup then linear decay to 0 (the Trainer's)."""

from __future__ import annotations

import torch

from ..config import OptimConfig


def build_optimizer(params, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    # one kernel for the whole update: on CUDA, and on CPU since torch 2.4, where it reads and writes
    # each tensor once instead of once per elementwise op (4x faster on 85 M fp32 parameters, 1 thread)
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(
        params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused
    )


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Multiplier step/warmup during warmup, then (total - step)/(total - warmup) down to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
