"""CTC transcription of waveforms and audio files with a loaded model: batched and greedy, or file by file
(long files in chunks, beam search) through chunking.transcribe_long."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.audio import AudioError, check_waveform, load_audio, probe
from ..data.batching import pad_waveforms
from ..decoding import greedy_ids
from ..models.ctc_model import exact_logits
from .chunking import transcribe_long
from .model import LoadedModel


@torch.no_grad()
def transcribe_arrays(loaded: LoadedModel, audios: list[np.ndarray], device: torch.device) -> list[str]:
    """16 kHz mono waveforms -> one transcript each, under the checkpoint's normalisation and mask convention."""
    waves, lengths = pad_waveforms(audios, loaded.do_normalize)  # (B, N), (B,)
    logits, logit_lengths = exact_logits(loaded.model, waves.to(device), lengths.to(device))  # as each file alone
    return [loaded.vocab.decode(ids) for ids in greedy_ids(logits, logit_lengths, loaded.vocab.blank)]


def transcribe_files(
    loaded: LoadedModel, paths: Sequence[str | Path], device: torch.device, batch_size: int = 8
) -> Iterator[tuple[str | Path, str | None, Exception | None]]:
    """Yield (path, text, None) per file in order, or (path, None, AudioError) for a file the model cannot
    take (missing, unreadable, non-finite samples, shorter than one frame): one bad file never stops the others."""
    for start in range(0, len(paths), batch_size):
        audios, ok = [], []
        for p in paths[start : start + batch_size]:
            try:
                audio = load_audio(str(p), 16_000)
                check_waveform(audio, str(p), loaded.model.config)
            except AudioError as e:
                yield p, None, e
                continue
            audios.append(audio)
            ok.append(p)
        if audios:
            yield from ((p, text, None) for p, text in zip(ok, transcribe_arrays(loaded, audios, device)))


def transcribe(
    loaded: LoadedModel,
    paths: Sequence[str | Path],
    device: torch.device,
    *,
    batch_size: int = 8,
    chunk_s: float = 30.0,
    stride_s: float | None = None,
    decoder=None,
    progress=None,
) -> Iterator[tuple[str | Path, str | None, Exception | None]]:
    """`fastctc transcribe`: (path, text, None) or (path, None, AudioError) per file, in order. Batched
    (transcribe_files) when decoding is greedy and every file fits in one chunk; else file by file, long
    files in overlapping chunks of `chunk_s` seconds, `progress(path, done, total)` after each chunk."""
    if decoder is not None or any(_longer_than(p, chunk_s) for p in paths):
        return transcribe_long(loaded, paths, device, chunk_s, stride_s, decoder, progress)
    return transcribe_files(loaded, paths, device, batch_size)


def _longer_than(path: str | Path, seconds: float) -> bool:
    try:
        return probe(str(path)).duration > seconds
    except Exception:  # unreadable: the reader names it in its turn
        return False
