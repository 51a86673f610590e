"""Evaluation: CTC loss, greedy decoding, corpus WER and CER (and PER for phone targets)."""

from __future__ import annotations

import torch

from fastctc.kernels import ctc_loss

from ..config import DataConfig
from ..data.batching import LengthBucketSampler, make_loader
from ..data.phones import score_fold
from ..data.text import CharVocab
from ..decoding import greedy_decode
from ..metrics import cer, per, wer


@torch.no_grad()
def evaluate(model, dataset, vocab: CharVocab, batch_size: int, device: torch.device, use_lengths: bool = True,
             data: DataConfig | None = None, report_dir=None) -> dict:
    """`dataset` as build_datasets gives it; `data` sets its loading (workers, do_normalize) and, for
    phone targets, adds "per": PER after folding to data.score_phone_set (wer is over unfolded phones).
    report_dir: also write the per-utterance error report there (fastctc.inference.report)."""
    was_training = model.training
    model.eval()
    ids, refs, hyps, loss_sum = [], [], [], 0.0
    data = data or DataConfig()
    sampler = LengthBucketSampler(dataset.durations, 0, batch_size, pad_lengths=data.pad_lengths,
                                  frame=model.config.frame_stride)
    for batch in make_loader(dataset, sampler, vocab, data, pin_memory=device.type == "cuda", split="eval"):
        logits, logit_lengths = model(batch.waveforms.to(device), batch.lengths.to(device) if use_lengths else None)
        loss = ctc_loss(logits, batch.targets.to(device), logit_lengths, batch.target_lengths.to(device),
                        blank=vocab.blank, reduction="mean")
        loss_sum += float(loss) * len(batch.texts)
        ids += batch.ids
        refs += batch.texts
        hyps += greedy_decode(logits, logit_lengths, vocab)
    model.train(was_training)
    if report_dir is not None:
        from ..inference.report import write_report

        write_report(report_dir, ids, refs, hyps)
    fold = score_fold(data)
    return {
        "loss": loss_sum / max(1, len(refs)),  # reduction="mean" averaged over utterances
        "wer": wer(refs, hyps),
        "cer": cer(refs, hyps),
        **({"per": per(refs, hyps, fold)} if fold is not None else {}),
        "examples": list(zip(refs[:3], hyps[:3])),
    }
