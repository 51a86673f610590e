"""WER and CER (PER for phone targets) of a loaded model on an evaluation split (`fastctc eval`)."""

from __future__ import annotations

import dataclasses
import time
from typing import Mapping

import numpy as np
import torch

from ..data.phones import PhoneDecoder
from ..metrics import cer, per, wer
from .model import LoadedModel
from .transcribe import transcribe_arrays


def evaluate(lm: LoadedModel, eval_ds, device: torch.device, batch_size: int = 8,
             score_fold: Mapping[str, str | None] | None = None) -> dict:
    """Greedy-decode every readable utterance of `eval_ds` (shortest first, so batches pad little) and
    score the corpus as jiwer does: {"utterances", "wer", "cer", "seconds"}.

    score_fold: phone targets (fastctc.data.phones.score_fold): hypotheses are decoded as space-separated
    phones and "per" added, the phone error rate after folding both sides through it (wer is then
    over the unfolded phones)."""
    t0 = time.time()
    if score_fold is not None:
        lm = dataclasses.replace(lm, vocab=PhoneDecoder.of(lm.vocab))
    refs, hyps = [], []
    order = np.argsort(eval_ds.durations)
    for start in range(0, len(order), batch_size):
        items = [it for it in (eval_ds[int(i)] for i in order[start : start + batch_size]) if it.audio is not None]
        refs += [it.text for it in items]
        hyps += transcribe_arrays(lm, [it.audio for it in items], device)
    result = {"utterances": len(refs), "wer": wer(refs, hyps), "cer": cer(refs, hyps)}
    if score_fold is not None:
        result["per"] = per(refs, hyps, score_fold)
    return {**result, "seconds": time.time() - t0}
