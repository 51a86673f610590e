"""Logits of recordings of any length, computed in overlapping chunks (memory bounded by the chunk).

The convention of transformers' ASR pipeline (`chunk_length_s`, `stride_length_s`): windows of
`chunk` samples start every `chunk - 2 * stride` samples; of each window's logits, the frames of
its left stride (all but the first window) and of its right stride (all but the last) are dropped,
so every kept frame saw at least `stride` of context on both sides. The pipeline's default stride
is chunk / 6.

Exact frame bookkeeping (the pipeline rounds a frame ratio instead): chunk and stride are rounded
to whole frames (the encoder's samples per frame, 320 for wav2vec2 and w2v-BERT, times the strides of
w2v-BERT's adapter), so window frame j is file frame start/320 + j. Window i keeps file frames
[lo_i, hi_i) with lo_0 = 0, lo_i = hi_{i-1} and hi_i = (start_i + chunk - stride) / 320 (the last
window: to the file's last frame), which is exactly the frames past the left stride and before the
right stride. A model whose receptive field fits in the stride (convolutions, local attention) gives
the whole-file logits.

Normalisation (`do_normalize`) uses the whole file's mean and variance, once, not each chunk's:
a chunk of silence normalised on its own would amplify its noise (w2v-BERT's fbank features are
normalised inside the model, over each window's own frames). A file no longer than one chunk is one
window: exactly the whole-file computation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..data.audio import normalise_audio
from ..errors import FastCTCError
from ..models.ctc_model import exact_logits
from .model import LoadedModel

SAMPLE_RATE = 16_000


class ChunkingError(FastCTCError, ValueError):
    """Chunk or stride settings that cannot work (the message names the fix)."""


@dataclass(frozen=True)
class Window:
    start: int  # first sample
    end: int  # one past the last sample
    keep_from: int  # file frames [keep_from, keep_to) come from this window
    keep_to: int


def frame_samples(model) -> int:
    """Samples per logit frame of a CTCModel (EncoderConfig.frame_stride: 320 for wav2vec2's conv stack and
    w2v-BERT's stacked fbank, times the stride of each w2v-BERT adapter layer)."""
    return model.config.frame_stride


def plan_windows(n_samples: int, n_frames: int, chunk: int, stride: int, hop: int) -> list[Window]:
    """Windows over a file of n_samples (n_frames logit frames); chunk, stride in samples, multiples of hop."""
    if chunk % hop or stride % hop:
        raise ChunkingError(f"chunk ({chunk}) and stride ({stride}) must be multiples of {hop} samples")
    if stride < hop or chunk <= 2 * stride:
        raise ChunkingError(
            f"need stride >= one frame ({hop / SAMPLE_RATE:g} s) and chunk > 2 x stride; got chunk "
            f"{chunk / SAMPLE_RATE:g} s, stride {stride / SAMPLE_RATE:g} s (e.g. --chunk-s 30 --stride-s 5)"
        )
    if n_samples <= chunk:
        return [Window(0, n_samples, 0, n_frames)]
    windows, lo = [], 0
    for start in range(0, n_samples, chunk - 2 * stride):
        end = min(start + chunk, n_samples)
        last = end >= n_samples
        hi = n_frames if last else (start + chunk - stride) // hop
        windows.append(Window(start, end, lo, hi))
        lo = hi
        if last:
            break
    return windows


@torch.no_grad()
def chunked_logits(
    model,
    audio: np.ndarray,
    device: torch.device,
    do_normalize: bool,
    chunk_s: float = 30.0,
    stride_s: float | None = None,
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """16 kHz mono audio (N,) -> a CTCModel's logits (T, V) float32 on the CPU, T the whole file's frames.

    Windows run `batch_size` at a time through exact_logits (each as it computes alone, so the shorter
    last window is exact too); `progress(done, total)` after each batch.
    """
    hop = frame_samples(model)
    chunk = round(chunk_s * SAMPLE_RATE / hop) * hop
    stride = round((chunk_s / 6 if stride_s is None else stride_s) * SAMPLE_RATE / hop) * hop
    n = len(audio)
    n_frames = int(model.output_lengths(torch.tensor(n)))
    if n_frames < 1:
        raise ChunkingError(f"the audio is {n / SAMPLE_RATE:.4f} s long, shorter than one frame")
    windows = plan_windows(n, n_frames, chunk, stride, hop)
    x = normalise_audio(audio) if do_normalize else audio.astype(np.float32)
    out = None
    for i in range(0, len(windows), batch_size):
        group = windows[i : i + batch_size]
        length = max(w.end - w.start for w in group)
        waves = torch.zeros(len(group), length)
        for j, w in enumerate(group):
            waves[j, : w.end - w.start] = torch.from_numpy(x[w.start : w.end])
        lengths = torch.tensor([w.end - w.start for w in group])
        logits, _ = exact_logits(model, waves.to(device), lengths.to(device))
        logits = logits.float().cpu()  # (b, t, V)
        if out is None:
            out = torch.empty(n_frames, logits.shape[-1])
        for j, w in enumerate(group):
            first = w.start // hop  # file frame of window frame 0
            out[w.keep_from : w.keep_to] = logits[j, w.keep_from - first : w.keep_to - first]
        if progress is not None:
            progress(min(i + batch_size, len(windows)), len(windows))
    return out


def transcribe_long(
    loaded: LoadedModel,
    paths,
    device: torch.device,
    chunk_s: float = 30.0,
    stride_s: float | None = None,
    decoder=None,
    progress=None,
):
    """Yield (path, text, None) per file, or (path, None, AudioError) for one the model cannot take (as
    transcribe_files): each file's logits in chunks (one window when it fits), then greedy or `decoder`
    (fastctc.inference.lm)."""
    from ..data.audio import AudioError, check_waveform, load_audio
    from ..decoding import greedy_ids

    for p in paths:
        try:
            audio = load_audio(str(p), SAMPLE_RATE)
            check_waveform(audio, str(p), loaded.model.config)
        except AudioError as e:
            yield p, None, e
            continue
        report = None if progress is None else (lambda done, total, p=p: progress(p, done, total))
        logits = chunked_logits(loaded.model, audio, device, loaded.do_normalize, chunk_s, stride_s, progress=report)[
            None
        ]
        n = torch.tensor([logits.shape[1]])
        ids = greedy_ids(logits, n, loaded.blank) if decoder is None else decoder.decode(logits, n)
        yield p, loaded.vocab.decode(ids[0]), None
