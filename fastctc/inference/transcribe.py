"""Greedy CTC transcription of waveforms and audio files with a loaded model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.audio import AudioError, check_waveform, load_audio
from ..data.batching import pad_waveforms
from ..decoding import greedy_ids
from ..models.ctc_model import exact_logits
from .model import LoadedModel


@torch.no_grad()
def transcribe_arrays(lm: LoadedModel, audios: list[np.ndarray], device: torch.device) -> list[str]:
    """16 kHz mono waveforms -> one transcript each, under the checkpoint's normalisation and mask convention."""
    waves, lengths = pad_waveforms(audios, lm.do_normalize)  # (B, N), (B,)
    logits, logit_lengths = exact_logits(lm.model, waves.to(device), lengths.to(device))  # as each file alone
    return [lm.vocab.decode(ids) for ids in greedy_ids(logits, logit_lengths, lm.vocab.blank)]


def transcribe_files(
    lm: LoadedModel, paths: Sequence[str | Path], device: torch.device, batch_size: int = 8
) -> Iterator[tuple[str | Path, str | None, Exception | None]]:
    """Yield (path, text, None) per file in order, or (path, None, AudioError) for a file the model cannot
    take (missing, unreadable, non-finite samples, shorter than one frame): one bad file never stops the others."""
    for start in range(0, len(paths), batch_size):
        audios, ok = [], []
        for p in paths[start : start + batch_size]:
            try:
                audio = load_audio(str(p), 16_000)
                check_waveform(audio, str(p), lm.model.config)
            except AudioError as e:
                yield p, None, e
                continue
            audios.append(audio)
            ok.append(p)
        if audios:
            yield from ((p, text, None) for p, text in zip(ok, transcribe_arrays(lm, audios, device)))
