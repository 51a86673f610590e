"""WER and CER of a loaded model on an evaluation split (`fastctc eval`)."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..metrics import cer, wer
from .model import LoadedModel
from .transcribe import transcribe_arrays


def evaluate(lm: LoadedModel, eval_ds, device: torch.device, batch_size: int = 8) -> dict:
    """Greedy-decode every readable utterance of `eval_ds` (shortest first, so batches pad little) and
    score the corpus as jiwer does: {"utterances", "wer", "cer", "seconds"}."""
    t0 = time.time()
    refs, hyps = [], []
    order = np.argsort(eval_ds.durations)
    for start in range(0, len(order), batch_size):
        items = [it for it in (eval_ds[int(i)] for i in order[start : start + batch_size]) if it.audio is not None]
        refs += [it.text for it in items]
        hyps += transcribe_arrays(lm, [it.audio for it in items], device)
    return {"utterances": len(refs), "wer": wer(refs, hyps), "cer": cer(refs, hyps), "seconds": time.time() - t0}
