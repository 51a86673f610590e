"""Evaluation: CTC loss, greedy decoding, corpus WER and CER (and PER for phone targets)."""

from __future__ import annotations

import torch

from fastctc.kernels import ctc_loss

from ..config import DataConfig
from ..data.batching import LengthBucketSampler, make_loader
from ..data.phones import fold_text, score_fold
from ..data.text import CharVocab
from ..decoding import greedy_decode
from ..metrics import cer, per, wer


@torch.no_grad()
def evaluate(model, dataset, vocab: CharVocab, batch_size: int, device: torch.device, use_lengths: bool = True,
             data: DataConfig | None = None, report_dir=None) -> dict:
    """`dataset` as build_datasets gives it; `data` sets its loading (workers, do_normalize) and, for
    phone targets, adds "per": PER after folding to data.score_phone_set (wer is over unfolded phones).
    report_dir: also write the per-utterance error report there (fastctc.inference.report; phone targets:
    on the phones folded to the scoring set)."""
    was_training = model.training
    model.eval()
    ids, refs, hyps = [], [], []
    loss_sum = torch.zeros((), device=device)  # stays on the device: read once, at the end
    data = data or DataConfig()
    sampler = LengthBucketSampler(dataset.durations, 0, batch_size, pad_lengths=data.pad_lengths,
                                  frame=model.config.frame_stride)
    for batch in make_loader(dataset, sampler, vocab, data, pin_memory=device.type == "cuda", split="eval"):
        waves, lengths = (t.to(device, non_blocking=True) for t in (batch.waveforms, batch.lengths))
        logits, logit_lengths = model(waves, lengths if use_lengths else None)
        loss = ctc_loss(logits, batch.targets.to(device, non_blocking=True), logit_lengths,
                        batch.target_lengths.to(device, non_blocking=True), blank=vocab.blank, reduction="mean")
        loss_sum += loss * len(batch.texts)
        ids += batch.ids
        refs += batch.texts
        hyps += greedy_decode(logits, logit_lengths, vocab)
    model.train(was_training)
    fold = score_fold(data)
    if report_dir is not None:
        from ..inference.report import write_report

        if fold is None:
            write_report(report_dir, ids, refs, hyps)
        else:  # on the scoring set's phones, so the report's word error rate is the PER
            write_report(report_dir, ids, [fold_text(r, fold) for r in refs], [fold_text(h, fold) for h in hyps])
    return {
        "loss": float(loss_sum) / max(1, len(refs)),  # reduction="mean" averaged over utterances
        "wer": wer(refs, hyps),
        "cer": cer(refs, hyps),
        **({"per": per(refs, hyps, fold)} if fold is not None else {}),
        "examples": list(zip(refs[:3], hyps[:3])),
    }
