"""Optimizer and learning-rate schedules: AdamW; linear warmup then linear decay to 0 (the Trainer's), or
fairseq's tri-stage schedule."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from ..config import OptimConfig

# The Trainer's rule for which parameters get no weight decay (transformers' Trainer.get_decay_parameter_names):
# those inside an nn.LayerNorm, and those whose lower-cased name matches one of these patterns. Native
# parameter names are the checkpoint's (models/hf_weights.py), so the same names fall out the same way: biases,
# every LayerNorm, and the group norm of the first conv layer (named layer_norm).
_NO_DECAY_NAMES = re.compile(r"bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)")


def decay_parameter_names(model: nn.Module) -> set[str]:
    in_layer_norm = {
        f"{m_name}.{p_name}" if m_name else p_name
        for m_name, module in model.named_modules()
        if isinstance(module, nn.LayerNorm)
        for p_name, _ in module.named_parameters(recurse=False)
    }
    return {
        name
        for name, _ in model.named_parameters()
        if name not in in_layer_norm and not _NO_DECAY_NAMES.search(name.lower())
    }


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, weight decay grouped as the Trainer groups it."""
    decay = decay_parameter_names(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in trainable if n in decay], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in trainable if n not in decay], "weight_decay": 0.0},
    ]
    # one kernel for the whole update: on CUDA, and on CPU since torch 2.4, where it reads and writes
    # each tensor once instead of once per elementwise op (the optimizer step is bandwidth-bound)
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused
    )


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Multiplier step/warmup during warmup, then (total - step)/(total - warmup) down to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def tri_stage_factor(step: int, total_steps: int, phase_ratio, init_scale: float, final_scale: float) -> float:
    """fairseq's TriStageLRSchedule as a multiplier of the peak lr, after `step` optimizer steps.

    Its stages take int(total * ratio) steps each (W, H, D): a linear rise from init_scale to 1 over
    [0, W), 1 over [W, W + H), exp(log(final_scale) * (step - W - H) / D) over [W + H, W + H + D] (the
    end included, as fairseq's `<=`), then final_scale. fairseq sets the lr for update u + 1 from u
    updates done, as LambdaLR does from its step count.
    """
    warmup, hold, decay = (int(total_steps * r) for r in phase_ratio)
    if step < warmup:
        return init_scale + (1.0 - init_scale) * step / warmup
    if step < warmup + hold:
        return 1.0
    if decay > 0 and step <= warmup + hold + decay:
        return math.exp(math.log(final_scale) * (step - warmup - hold) / decay)
    return final_scale  # fairseq divides by D: a run too short for a decay step holds, then ends at final_scale


def build_schedule(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """optim.schedule's LambdaLR over the run's `total_steps`."""
    if cfg.schedule == "linear":
        return linear_schedule(optimizer, cfg.warmup_steps, total_steps)
    ratio, init, final = tuple(cfg.phase_ratio), cfg.init_lr_scale, cfg.final_lr_scale
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: tri_stage_factor(step, total_steps, ratio, init, final)
    )
