"""The recipe's random streams (train.random_streams = "recipe"): the batch order and the SpecAugment spans the
Transformers Trainer draws for a seed, draw for draw, so that fastctc can train on exactly the recipe's random
inputs (README, "The recipe's conventions as switches").

transformers.set_seed(seed) in Trainer.__init__ seeds torch's and numpy's global generators. Then, on a single
process whose model draws nothing else from torch's CPU generator (dropouts 0, or the model on CUDA, where
dropout draws from the CUDA generator):
  - torch's CPU generator: each epoch's DataLoader iterator draws its workers' base seed (one int64,
    `torch.empty((), dtype=torch.int64).random_()`, torch/utils/data/dataloader.py), then LengthGroupedSampler
    draws `torch.randperm(N)` (trainer_pt_utils.get_length_grouped_indices). In between, each training forward
    draws torch.rand([]) per transformer layer when layerdrop > 0 (the Wav2Vec2 encoders), and each in-training
    evaluation's DataLoader iterator one more base seed (its sampler has its own seeded generator);
  - numpy's global generator: only the SpecAugment spans, modeling_wav2vec2._compute_mask_indices, once per
    training forward for the time mask and once more for the channel mask: one eps = rand(1) per call, then
    per row `choice(arange(length - span + 1), n, replace=False)`, a permutation of the row's valid starts.

TrainerOrder replays the torch draws on a generator of its own (a pure function of the epoch, so a resumed
run gets the same order); recipe_span_mask makes numpy's draws on numpy's global generator, seeded by
train.run.seed_everything as set_seed seeds it and saved in every checkpoint (train/checkpoint.py).
fastctc's own streams (train.random_streams = "own") draw the same distributions another way: the order from
numpy's PCG64 per epoch (data/batching.py), the spans on the device with torch (models/masking.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TrainerOrder:
    """The permutations the recipe's Trainer draws from torch's global CPU generator, epoch by epoch.

    n: training utterances; batches_per_epoch: the DataLoader's batches (forwards) per epoch; steps_per_epoch:
    optimizer steps per epoch; total_steps: the run's; eval_every: the Trainer's eval_steps (0: no evaluation
    during training); layer_draws: torch.rand([]) per training forward (the layer count when layerdrop > 0).
    """

    seed: int
    n: int
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    eval_every: int = 0
    layer_draws: int = 0

    def evaluations(self, epoch: int) -> int:
        """In-training evaluations after the steps of `epoch` (global steps divisible by eval_every)."""
        if not self.eval_every:
            return 0
        first, last = epoch * self.steps_per_epoch, min((epoch + 1) * self.steps_per_epoch, self.total_steps)
        return max(0, last // self.eval_every - first // self.eval_every)

    def permutation(self, epoch: int) -> np.ndarray:
        """(n,) the indices LengthGroupedSampler permutes in `epoch` (before its megabatch sort)."""
        g = torch.Generator().manual_seed(self.seed)
        for e in range(epoch + 1):
            torch.empty((), dtype=torch.int64).random_(generator=g)  # the train DataLoader's base seed
            perm = torch.randperm(self.n, generator=g)
            if e == epoch:
                return perm.numpy()
            torch.rand(self.batches_per_epoch * self.layer_draws, generator=g)  # layerdrop: one draw each
            for _ in range(self.evaluations(e)):
                torch.empty((), dtype=torch.int64).random_(generator=g)  # an eval DataLoader's base seed
        raise AssertionError("unreachable")


def recipe_span_mask(
    shape: tuple[int, int], prob: float, span: int, lengths: list[int] | None = None, min_spans: int = 0
) -> np.ndarray:
    """(B, T) bool, True = masked: the spans transformers' Wav2Vec2 SpecAugment draws, from numpy's global
    generator in its order. lengths: each row's valid positions (the attention mask's sums), None: all T.

    Spans per row n = int(prob * length / span + eps) with one eps per call, at least min_spans, at most
    T // span and length - span + 1; starts are n distinct valid positions; a row with no span while some
    full-length row would have one marks position T - 1. The loop over rows is the stream's order: each
    row's permutation consumes the generator in turn (B host draws per step, no device work)."""
    batch, seq_len = shape
    if span < 1:
        raise ValueError("SpecAugment: mask length has to be at least 1")
    if span > seq_len:
        raise ValueError(f"SpecAugment: mask length {span} is longer than the sequence ({seq_len} positions)")
    eps = np.random.rand(1).item()

    def spans(length: int) -> int:
        n = max(int(prob * length / span + eps), min_spans)
        if n * span > seq_len:
            n = seq_len // span
        return min(n, max(length - (span - 1), 0))

    mask = np.zeros((batch, seq_len), dtype=bool)
    if spans(seq_len) == 0:
        return mask
    for row, length in enumerate(lengths if lengths is not None else [seq_len] * batch):
        n = spans(int(length))
        starts = np.random.choice(np.arange(length - (span - 1)), n, replace=False)
        if n == 0:
            mask[row, seq_len - 1] = True  # upstream pads its index list with this dummy position
        positions = (starts[:, None] + np.arange(span)[None, :]).reshape(-1)
        mask[row, np.minimum(positions, seq_len - 1)] = True
    return mask


def recipe_masks(cfg, frames: torch.Tensor, padded_frames: int, row_lengths: bool) -> dict[str, torch.Tensor]:
    """The Trainer's SpecAugment masks for one training batch, as CTCModel.forward's mask arguments (host bool
    tensors; {} when SpecAugment is off). cfg: the model's EncoderConfig; frames (B,) each row's encoder frames;
    padded_frames: the batch's frames as fastctc pads it; row_lengths: whether the Trainer's spans keep to each
    row's frames (it passes an attention mask) rather than the padded length.

    The Trainer pads a batch to its longest row, fastctc to whole frames: its time mask is drawn over the
    longest row's frames and padded with False (the extra frames are padding in every row)."""
    if not cfg.apply_spec_augment:
        return {}
    masks = {}
    frames = [int(f) for f in frames]
    longest = max(frames)
    if cfg.mask_time_prob > 0:
        time = recipe_span_mask(
            (len(frames), longest),
            cfg.mask_time_prob,
            cfg.mask_time_length,
            frames if row_lengths else None,
            cfg.mask_time_min_masks,
        )
        padded = np.zeros((len(frames), padded_frames), dtype=bool)
        padded[:, :longest] = time
        masks["mask_time_indices"] = torch.from_numpy(padded)
    if cfg.mask_feature_prob > 0:
        masks["mask_feature_indices"] = torch.from_numpy(
            recipe_span_mask(
                (len(frames), cfg.hidden_size),
                cfg.mask_feature_prob,
                cfg.mask_feature_length,
                None,
                cfg.mask_feature_min_masks,
            )
        )
    return masks
