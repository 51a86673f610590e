"""Evaluation: CTC loss, greedy decoding, corpus WER and CER."""

from __future__ import annotations

import torch

from fastctc.kernels import ctc_loss

from ..data.batching import LengthBucketSampler, collate
from ..data.text import CharVocab
from ..decoding import greedy_decode
from ..metrics import cer, wer


@torch.no_grad()
def evaluate(model, utterances, vocab: CharVocab, batch_size: int, device: torch.device, use_lengths: bool = True) -> dict:
    was_training = model.training
    model.eval()
    refs, hyps, loss_sum = [], [], 0.0
    sampler = LengthBucketSampler([len(u.audio) for u in utterances], batch_size, seed=0)
    for idx in sampler:
        batch = collate([utterances[i].audio for i in idx], [utterances[i].text for i in idx], vocab)
        logits, logit_lengths = model(batch.waveforms.to(device), batch.lengths.to(device) if use_lengths else None)
        loss = ctc_loss(logits, batch.targets.to(device), logit_lengths, batch.target_lengths.to(device),
                        blank=vocab.blank, reduction="mean")
        loss_sum += float(loss) * len(idx)
        refs += batch.texts
        hyps += greedy_decode(logits, logit_lengths, vocab)
    model.train(was_training)
    return {
        "loss": loss_sum / max(1, len(refs)),  # reduction="mean" averaged over utterances
        "wer": wer(refs, hyps),
        "cer": cer(refs, hyps),
        "examples": list(zip(refs[:3], hyps[:3])),
    }
