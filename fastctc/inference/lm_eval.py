"""`fastctc eval` with beam search, an LM sweep or a report: the model runs once over the split, its
logits are kept (float32, on the CPU: (T, V) per utterance, 124 MB for LibriSpeech test-clean's 5.4 h),
then decoded as often as the sweep asks."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..data.batching import pad_waveforms
from ..decoding import greedy_ids
from ..metrics import cer, wer
from .lm import BeamDecoder
from .model import LoadedModel


@dataclass
class SplitLogits:
    ids: list[str]
    refs: list[str]
    logits: list[torch.Tensor]  # (T_i, V) float32 each
    seconds: float  # audio seconds
    model_s: float  # wall seconds in the model


@torch.no_grad()
def collect_logits(lm: LoadedModel, eval_ds, device: torch.device, batch_size: int = 8) -> SplitLogits:
    """Every readable utterance's logits, shortest first (batches pad little), as evaluate() feeds them."""
    t0 = time.perf_counter()
    out = SplitLogits([], [], [], 0.0, 0.0)
    order = np.argsort(eval_ds.durations)
    for start in range(0, len(order), batch_size):
        items = [it for it in (eval_ds[int(i)] for i in order[start : start + batch_size]) if it.audio is not None]
        if not items:
            continue
        waves, lengths = pad_waveforms([it.audio for it in items], lm.do_normalize)
        logits, n = lm.model(waves.to(device), lengths.to(device) if lm.attention_mask else None)
        if not lm.attention_mask:  # decode only each file's own frames (as transcribe_arrays does)
            n = lm.model.feature_extractor.output_lengths(lengths.to(device)).clamp(max=logits.shape[1])
        logits = logits.float().cpu()
        for it, x, k in zip(items, logits, n.tolist()):
            out.ids.append(it.id)
            out.refs.append(it.text)
            out.logits.append(x[:k].clone())
            out.seconds += len(it.audio) / 16_000
    out.model_s = time.perf_counter() - t0
    return out


def decode_split(split: SplitLogits, lm: LoadedModel, decoder: BeamDecoder | None = None,
                 batch_size: int = 32) -> tuple[list[str], float]:  # fmt: skip
    """Hypotheses (greedy without a decoder) and the decoding wall time in seconds."""
    t0 = time.perf_counter()
    hyps = []
    for start in range(0, len(split.logits), batch_size):
        rows = split.logits[start : start + batch_size]
        lengths = torch.tensor([len(x) for x in rows])
        padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (B, T, V)
        ids = greedy_ids(padded, lengths, lm.blank) if decoder is None else decoder.decode(padded, lengths)
        hyps += [lm.vocab.decode(x) for x in ids]
    return hyps, time.perf_counter() - t0


def lm_sweep(split: SplitLogits, lm: LoadedModel, decoder: BeamDecoder, lm_weights, word_scores) -> list[dict]:
    """WER/CER for every (lm_weight, word_score) pair; the LM and lexicon are loaded once."""
    rows = []
    for a in lm_weights:
        for b in word_scores:
            hyps, dt = decode_split(split, lm, decoder.with_options(lm_weight=a, word_score=b))
            rows.append({"lm_weight": a, "word_score": b, "wer": wer(split.refs, hyps),
                         "cer": cer(split.refs, hyps), "decode_s": dt})  # fmt: skip
    return rows
