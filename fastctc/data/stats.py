"""`fastctc data stats CONFIG`: what a config's corpus holds and what its batching wastes.

Per split: utterances, hours, duration and transcript-length spread, what was skipped and why; the
vocabulary; and the padded fraction (padding / padded audio) of the configured batching next to
random batching and to transformers' group_by_length (the recipe's), both padded to the longest.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config import RunConfig, resolve_encoder
from ..models.feature_encoder import frame_count
from ..models.hf_weights import read_encoder_config
from .batching import LengthBucketSampler, padded_length
from .corpora import build_datasets
from .phones import vocab_for


def padded_fraction(batches: Sequence[Sequence[int]], lengths: np.ndarray, pad=lambda n: n) -> float:
    """Share of the padded (B, N) tensors that is padding; `pad(longest)` is a batch's N."""
    total = sum(len(b) * pad(int(lengths[b].max())) for b in batches)
    return 1.0 - sum(int(lengths[b].sum()) for b in batches) / total


def random_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]


def group_by_length_batches(lengths: np.ndarray, batch_size: int, seed: int) -> list[list[int]]:
    """transformers' get_length_grouped_indices (Trainer group_by_length), cut into batches: a random
    permutation cut into megabatches of min(N // (4B), 50) * B, each sorted by length, longest first."""
    order = np.random.default_rng(seed).permutation(len(lengths))
    mega = max(1, min(len(lengths) // (batch_size * 4), 50)) * batch_size
    flat = []
    for i in range(0, len(order), mega):
        chunk = order[i : i + mega]
        flat += chunk[np.argsort(-lengths[chunk], kind="stable")].tolist()
    return [flat[i : i + batch_size] for i in range(0, len(flat), batch_size)]


def _spread(values: Sequence[float], fmt: str) -> str:
    v = np.asarray(values, dtype=np.float64)
    return f"min {v.min():{fmt}} / median {np.median(v):{fmt}} / max {v.max():{fmt}}"


def stats(cfg: RunConfig) -> str:
    d = cfg.data
    # the encoder [model] describes without a checkpoint; with one, its conv stack (read here for the frame count)
    encoder = resolve_encoder(cfg.model, read_encoder_config(cfg.model.checkpoint) if cfg.model.checkpoint else None)
    train_ds, eval_ds, report = build_datasets(d, cfg.train.seed, lambda n: frame_count(n, encoder), verbose=False)
    vocab = vocab_for(d, train_ds.texts + eval_ds.texts)  # what training would build
    lines = [f"corpus {d.corpus}" + (f" at {d.root}" if d.root else "")]
    for split, spec, ds, batch_size in (
        ("train", d.train, train_ds, cfg.train.batch_size),
        ("eval", d.eval, eval_ds, cfg.train.eval_batch_size),
    ):
        lines.append(f"[{split}] {spec if d.corpus != 'synthetic' else 'synthetic'}")
        lines.append(
            f"  utterances    {len(ds)} ({len(set(ds.speakers) - {''})} speakers), {sum(ds.durations) / 3600:.3f} h"
        )
        lines.append(f"  duration s    {_spread(ds.durations, '.2f')}")
        lines.append(
            f"  transcript    {_spread([len(t) for t in ds.texts], '.0f')} characters; "
            f"{_spread([len(t.split()) for t in ds.texts], '.0f')} words"
        )
        lines.append(f"  skipped       {report.summary(split)}")
        budget = d.batch_seconds if split == "train" else 0.0
        sampler = LengthBucketSampler(
            ds.durations,
            cfg.train.seed,
            batch_size,
            budget,
            d.pad_lengths,
            sample_rate=d.sample_rate,
            frame=encoder.frame_stride,
        )
        ours = [b for step in sampler.epoch_batches(0) for b in step]
        L = sampler.lengths
        size = f"{budget:g} s of audio" if budget else f"{batch_size} utterances"
        pad = lambda n: padded_length(n, sampler.ladder, encoder.frame_stride)  # noqa: E731
        shapes = len({pad(int(L[b].max())) for b in ours})
        lines.append(
            f"  padded        {padded_fraction(ours, L, pad):.2%} "
            f"fastctc ({len(ours)} batches of {size}, {shapes} padded lengths) | "
            f"{padded_fraction(group_by_length_batches(L, batch_size, cfg.train.seed), L):.2%} "
            f"group_by_length | {padded_fraction(random_batches(len(L), batch_size, cfg.train.seed), L):.2%} "
            f"random (batch {batch_size})"
        )
    symbols = [t for t in vocab.tokens if t not in ("[UNK]", "[PAD]")]
    lines.append(f"vocabulary    {len(vocab)} tokens (blank = [PAD] = {vocab.blank}): {' '.join(symbols)}")
    return "\n".join(lines)
