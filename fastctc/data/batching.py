"""Length-bucketed batching and collation (the simplest correct form; see issue 5 for the full one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from .text import CharVocab


class LengthBucketSampler:
    """Batches of similar length, reshuffled each epoch; deterministic given (seed, epoch).

    Indices are shuffled, cut into windows of `window` batches, each window sorted by length and
    cut into batches; the batch order is then shuffled so long and short batches interleave.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, window: int = 50, drop_last: bool = False):
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.window, self.drop_last = batch_size, seed, window, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        span = self.window * self.batch_size
        out = []
        for start in range(0, len(order), span):
            chunk = order[start : start + span]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            out += [chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        if self.drop_last:
            out = [b for b in out if len(b) == self.batch_size]
        return [out[i] for i in rng.permutation(len(out))]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        n = len(self.lengths)
        if not self.drop_last:
            return len(self.batches())
        return sum((min(self.window * self.batch_size, n - s)) // self.batch_size
                   for s in range(0, n, self.window * self.batch_size))


@dataclass
class Batch:
    waveforms: torch.Tensor  # (B, N) float32, zero-padded
    lengths: torch.Tensor  # (B,) samples
    targets: torch.Tensor  # (B, S) label ids, padded with 0 past target_lengths
    target_lengths: torch.Tensor  # (B,)
    texts: list[str]


def normalise_audio(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per utterance: (x - mean) / sqrt(var + 1e-5), as Wav2Vec2FeatureExtractor."""
    x = x.astype(np.float32)
    return (x - x.mean()) / np.sqrt(x.var() + 1e-5)


def collate(audios: Sequence[np.ndarray], texts: Sequence[str], vocab: CharVocab, do_normalize: bool = True) -> Batch:
    B = len(audios)
    n = max(len(a) for a in audios)
    waveforms = torch.zeros(B, n)
    for i, a in enumerate(audios):
        waveforms[i, : len(a)] = torch.from_numpy(normalise_audio(a) if do_normalize else a.astype(np.float32))
    ids = [vocab.encode(t) for t in texts]
    s = max(1, max(len(t) for t in ids))
    targets = torch.zeros(B, s, dtype=torch.long)
    for i, t in enumerate(ids):
        targets[i, : len(t)] = torch.tensor(t, dtype=torch.long)
    return Batch(
        waveforms=waveforms,
        lengths=torch.tensor([len(a) for a in audios], dtype=torch.long),
        targets=targets,
        target_lengths=torch.tensor([len(t) for t in ids], dtype=torch.long),
        texts=list(texts),
    )
