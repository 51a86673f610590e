"""A running average of the weights (train.weight_average): an exponential moving average, or icefall's
model_avg, the mean of the weights every `average_period` steps since the start.

The average is a second CTCModel, in fp32 on the run's device, that the evaluation and the export read as
they read the model. Only the trained parameters are averaged (frozen ones are the model's and stay
equal); each update is one fused foreach lerp on the device with a Python weight, so a step that
updates the average still makes no host sync.

    ema:  avg <- avg + (1 - decay) * (w - avg)                      every step, from avg = the initial weights
    mean: avg <- avg + (period / step) * (w - avg)  when step % period == 0   (icefall's update_averaged_model)

The mean's first update (weight 1) replaces the initial weights, so after k updates the average is the
mean of the weights at steps period, 2 * period, ..., k * period.
"""

from __future__ import annotations

import copy

import torch

from ..models import CTCModel


class WeightAverage:
    def __init__(self, model: CTCModel, kind: str, decay: float = 0.999, period: int = 200):
        if kind not in ("ema", "mean"):
            raise ValueError(f"WeightAverage: kind must be ema or mean, got {kind!r}")
        self.kind, self.decay, self.period = kind, decay, period
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        own = dict(self.model.named_parameters())
        self.names = names
        self._sources = [p for n, p in model.named_parameters() if p.requires_grad]
        self._averages = [own[n] for n in names]

    @property
    def label(self) -> str:
        return f"EMA {self.decay}" if self.kind == "ema" else f"mean every {self.period} steps"

    def weight(self, step: int) -> float:
        """The weight of the model's current weights in the update after optimizer step `step` (1-based)."""
        if self.kind == "ema":
            return 1.0 - self.decay
        return self.period / step if step % self.period == 0 else 0.0

    @torch.no_grad()
    def update(self, step: int) -> None:
        """After optimizer step `step` (1-based). The weight is a host float: no device value is read."""
        weight = self.weight(step)
        if weight == 0.0:
            return
        sources = [p.detach().float() for p in self._sources]  # fp32 already under autocast: no copy
        torch._foreach_lerp_(self._averages, sources, weight)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged parameters by name (what the checkpoint saves)."""
        return dict(zip(self.names, self._averages))

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.names) - set(tensors))
        if missing:
            raise ValueError(f"the saved weight average lacks {len(missing)} trained parameters, e.g. {missing[0]}")
        with torch.no_grad():
            for name, avg in zip(self.names, self._averages):
                avg.copy_(tensors[name])
