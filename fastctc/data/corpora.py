"""Corpus selection: `data.corpus` -> train and eval utterances."""

from __future__ import annotations

from ..config import DataConfig
from . import synthetic


def load_splits(cfg: DataConfig, seed: int) -> tuple[list, list]:
    """Returns (train, eval) lists of utterances with `.id`, `.audio` (float32 16 kHz) and `.text`."""
    if cfg.corpus == "synthetic":
        return (
            synthetic.make_split(seed, "train", cfg.synthetic_train_size),
            synthetic.make_split(seed, "eval", cfg.synthetic_eval_size),
        )
    raise ValueError(f"data.corpus: unknown corpus {cfg.corpus!r}")
