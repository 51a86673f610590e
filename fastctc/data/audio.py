"""Audio files -> the encoder's input: header probing, mono down-mix, resampling, normalisation.

soundfile (libsndfile) reads RIFF WAV, NIST SPHERE (TIMIT as the LDC ships it) and FLAC, and tells
the format from the header, not the file name. Resampling is soxr's (the SoX resampler, "HQ"
quality): a band-limited polyphase filter, so a file at 8 or 44.1 kHz keeps its frequencies.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from ..errors import FastCTCError
from ..models.config import EncoderConfig
from ..models.feature_encoder import frame_count, min_samples


class AudioError(FastCTCError, ValueError):
    """An audio file or waveform the model cannot take. `problem` is the message without the file's name
    (for callers that print the name themselves), `reason` the data report's name for it."""

    def __init__(self, name: str, problem: str, reason: str = "unreadable"):
        super().__init__(f"{name}: {problem}" if name else problem)
        self.name, self.problem, self.reason = name, problem, reason


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


def read_audio(path: str, sample_rate: int, max_samples: int = 0) -> tuple[np.ndarray, int]:
    """((N,) float32 mono at `sample_rate`, the whole file's length at `sample_rate`); channels averaged.

    With max_samples > 0, N <= max_samples and only the frames needed for them are decoded: a file
    longer than a listing says never costs more memory than the cap. A missing or unreadable file
    raises AudioError (reason missing_audio or unreadable) naming it.
    """
    if not os.path.isfile(path):  # soundfile would only say "System error."
        raise AudioError(str(path), "no such file (check the path)", "missing_audio")
    try:
        with sf.SoundFile(path) as f:
            sr_in, total = f.samplerate, f.frames
            frames = total if max_samples <= 0 else min(total, math.ceil(max_samples * sr_in / sample_rate))
            x = f.read(frames, dtype="float32", always_2d=True)  # (N, C)
    except sf.LibsndfileError as e:
        what = (
            f"not audio soundfile can read ({e.error_string.rstrip('.')})"
            if os.path.getsize(path)
            else "an empty file (0 bytes)"
        )
        raise AudioError(
            str(path),
            f"{what}; soundfile reads WAV, FLAC, NIST SPHERE and OGG: convert it, e.g. "
            "ffmpeg -i FILE -ar 16000 -ac 1 FILE.wav, or leave it out",
        ) from None
    x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]  # down-mix: the mean keeps the level of a mono source
    x = resample(np.ascontiguousarray(x), sr_in, sample_rate)
    if max_samples > 0:
        x = x[:max_samples]
    return x, resampled_length(total, sr_in, sample_rate)


def load_audio(path: str, sample_rate: int, max_seconds: float = 0.0) -> np.ndarray:
    """(N,) float32 mono at `sample_rate`; channels averaged; cropped to max_seconds when > 0 (only
    the frames needed for the crop are decoded). Raises AudioError for a missing or unreadable file."""
    return read_audio(path, sample_rate, int(max_seconds * sample_rate) if max_seconds > 0 else 0)[0]


def check_waveform(audio: np.ndarray, name: str, encoder: EncoderConfig) -> None:
    """Raise AudioError (naming `name`) when the model of `encoder` cannot take `audio`, (N,) at its rate:
    non-finite samples (a NaN spreads to every frame: an empty transcript, an alignment "too short"),
    or fewer samples than one frame of the conv stack needs. Inference calls it on every file."""
    bad = int(np.count_nonzero(~np.isfinite(audio)))
    if bad:
        raise AudioError(
            name,
            f"{bad} non-finite samples (NaN or inf) of {audio.size}; the file is damaged: "
            "export it again, or leave it out",
            "non_finite",
        )
    if frame_count(audio.size, encoder) < 1:
        raise AudioError(
            name,
            f"shorter than one frame ({audio.size} samples; the conv stack needs {min_samples(encoder)})",
            "too_short",
        )


NORMALISE_EPS = 1e-7  # Wav2Vec2FeatureExtractor's since transformers 4.11 (PR #13512 moved it from 1e-5)


def normalise_audio(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per utterance: (x - mean) / sqrt(var + NORMALISE_EPS), as
    Wav2Vec2FeatureExtractor in the versions the cards ran."""
    x = x.astype(np.float32, copy=False)
    return (x - x.mean()) / np.sqrt(x.var() + NORMALISE_EPS)
