"""Training's evaluation: the one evaluation path (fastctc.inference.evaluate) on the run's model, with
the eval loss, WER/CER (and PER for phone targets) and, at the end, the per-utterance report."""

from __future__ import annotations

import contextlib

import torch

from ..config import DataConfig
from ..data.phones import score_fold
from ..inference.evaluate import run_split, score, write_scored_report


def evaluate(
    model,
    dataset,
    vocab,
    batch_size: int,
    device: torch.device,
    data: DataConfig | None = None,
    report_dir=None,
    autocast=contextlib.nullcontext,
    features=None,
) -> dict:
    """{"loss", "wer", "cer", ("per",) "examples"} of `model` on `dataset`, each utterance computed as
    it is alone (the cards' eval_batch_size 1), in batches of `batch_size`. `data` sets the loading
    (workers, do_normalize) and, for phone targets, the scoring set. report_dir: also write the report.
    features: the split's FrozenFeatureStore, when the run caches its frozen conv-stack outputs."""
    data = data or DataConfig()
    fold = score_fold(data)
    split = run_split(
        model,
        dataset,
        device,
        vocab,
        batch_size=batch_size,
        data=data,
        loss_vocab=vocab,
        autocast=autocast,
        features=features,
    )
    if report_dir is not None:
        write_scored_report(report_dir, split.ids, split.refs, split.hyps, fold)
    return {
        "loss": split.loss,
        **score(split.refs, split.hyps, fold),
        "examples": list(zip(split.refs[:3], split.hyps[:3])),
    }
