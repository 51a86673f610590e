"""Audio files -> the encoder's input: header probing, mono down-mix, resampling, normalisation.

soundfile (libsndfile) reads RIFF WAV, NIST SPHERE (TIMIT as the LDC ships it) and FLAC, and tells
the format from the header, not the file name. Resampling is soxr's (the SoX resampler, "HQ"
quality): a band-limited polyphase filter, so a file at 8 or 44.1 kHz keeps its frequencies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr


@dataclass(frozen=True)
class AudioInfo:
    frames: int  # samples per channel at `sample_rate`
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def probe(path: str) -> AudioInfo:
    """Frames, rate and channels from the header alone (no decoding); raises on an unreadable file."""
    info = sf.info(path)
    if info.frames <= 0 or info.samplerate <= 0:
        raise ValueError(f"{path}: header says {info.frames} frames at {info.samplerate} Hz")
    return AudioInfo(frames=int(info.frames), sample_rate=int(info.samplerate), channels=int(info.channels))


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """(N,) float32 at sr_in -> (round(N * sr_out / sr_in),) float32 at sr_out."""
    if sr_in == sr_out:
        return x
    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def resampled_length(frames: int, sr_in: int, sr_out: int) -> int:
    """The length resample() returns, without running it (used for batching by length)."""
    return frames if sr_in == sr_out else int(round(frames * sr_out / sr_in))


def load_audio(path: str, sample_rate: int, max_seconds: float = 0.0) -> np.ndarray:
    """(N,) float32 mono at `sample_rate`; channels averaged; cropped to max_seconds when > 0.

    Only the frames needed for the crop are decoded.
    """
    with sf.SoundFile(path) as f:
        sr_in = f.samplerate
        frames = f.frames if max_seconds <= 0 else min(f.frames, math.ceil(max_seconds * sr_in))
        x = f.read(frames, dtype="float32", always_2d=True)  # (N, C)
    x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]  # down-mix: the mean keeps the level of a mono source
    x = resample(np.ascontiguousarray(x), sr_in, sample_rate)
    if max_seconds > 0:
        x = x[: int(max_seconds * sample_rate)]
    return x


def normalise_audio(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per utterance: (x - mean) / sqrt(var + 1e-7), as Wav2Vec2FeatureExtractor
    since transformers 4.11 (PR #13512 moved the epsilon from 1e-5), the versions the cards ran."""
    x = x.astype(np.float32, copy=False)
    return (x - x.mean()) / np.sqrt(x.var() + 1e-7)
