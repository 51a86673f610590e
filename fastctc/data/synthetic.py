"""A built-in, speech-like corpus generated deterministically at run time (nothing to download).

Each utterance is a few "words" over a small alphabet, rendered as 16 kHz audio:

- every letter has its own spectral signature: vowels and nasals are voiced (a harmonic series at
  the speaker's pitch, shaped by two or three formants), fricatives are band-passed noise, plosives
  are a short closure followed by a noise burst;
- each letter has its own attack/decay envelope, so a doubled letter ("oo") has an audible dip;
- every utterance has its own "speaker": pitch (90-240 Hz, with a slow glide), vocal-tract scale
  (formants x0.9-1.15), tempo (x0.8-1.25), loudness, and background noise at 15-30 dB SNR;
- words are separated by short pauses.

Utterance i of a split is a pure function of (seed, split, i), so runs are reproducible and the
held-out split never shares an utterance (or a random stream) with the training split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000

# letter -> (kind, parameters). Formants in Hz; durations are base values in seconds.
_VOWELS = {
    "a": (800.0, 1200.0, 2500.0),
    "e": (450.0, 1900.0, 2600.0),
    "i": (280.0, 2300.0, 3000.0),
    "o": (500.0, 850.0, 2400.0),
    "u": (320.0, 700.0, 2300.0),
}
_NASALS = {"m": (250.0, 1100.0), "n": (260.0, 1700.0)}
_FRICATIVES = {"s": (4000.0, 7000.0), "f": (1200.0, 2400.0)}
_PLOSIVES = {"k": (1800.0, 3200.0), "t": (3500.0, 6000.0)}

ALPHABET = "".join(sorted({*_VOWELS, *_NASALS, *_FRICATIVES, *_PLOSIVES}))
_SPLIT_IDS = {"train": 0, "eval": 1}


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: np.ndarray  # (N,) float32 at SAMPLE_RATE
    text: str


@dataclass(frozen=True)
class _Speaker:
    f0: float  # Hz
    scale: float  # vocal-tract scale applied to formants
    tempo: float  # duration multiplier (>1 = slower)
    gain: float
    snr_db: float


def _envelope(n: int, attack: int, release: int) -> np.ndarray:
    """Raised-cosine attack and release so neighbouring letters are separable."""
    env = np.ones(n, dtype=np.float64)
    a, r = min(attack, n // 2), min(release, n // 2)
    if a:
        env[:a] = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, a))
    if r:
        env[n - r :] = 0.5 + 0.5 * np.cos(np.linspace(0.0, math.pi, r))
    return env


def _voiced(n: int, formants: tuple[float, ...], spk: _Speaker, rng: np.random.Generator) -> np.ndarray:
    """Harmonic series at a gliding pitch; each harmonic weighted by the formant envelope."""
    t = np.arange(n) / SAMPLE_RATE
    glide = 1.0 + rng.uniform(-0.08, 0.08) * t / max(t[-1], 1e-3) + 0.02 * np.sin(2 * math.pi * 5.0 * t)
    f0 = spk.f0 * glide  # (n,)
    phase = 2 * math.pi * np.cumsum(f0) / SAMPLE_RATE
    centres = np.array(formants) * spk.scale
    widths = 80.0 + 0.08 * centres
    out = np.zeros(n)
    for h in range(1, int(4500 / spk.f0) + 1):
        f = h * spk.f0
        amp = float(np.sum(np.exp(-0.5 * ((f - centres) / widths) ** 2) / np.arange(1, len(centres) + 1)))
        if amp > 0.02:  # only harmonics near a formant matter; skipping the rest keeps generation fast
            out += amp * np.sin(h * phase)
    return out


def _band_noise(n: int, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    """White noise restricted to [lo, hi] Hz in the frequency domain."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spec[(freqs < lo) | (freqs > hi)] = 0.0
    out = np.fft.irfft(spec, n)
    return out / (np.std(out) + 1e-8)


def _render_letter(ch: str, spk: _Speaker, rng: np.random.Generator) -> np.ndarray:
    jitter = rng.uniform(0.8, 1.2) * spk.tempo
    if ch in _VOWELS:
        n = int(SAMPLE_RATE * 0.11 * jitter)
        sig = _voiced(n, _VOWELS[ch], spk, rng)
        sig /= np.std(sig) + 1e-8
        return sig * _envelope(n, int(0.015 * SAMPLE_RATE), int(0.025 * SAMPLE_RATE))
    if ch in _NASALS:
        n = int(SAMPLE_RATE * 0.08 * jitter)
        sig = _voiced(n, _NASALS[ch], spk, rng)
        sig = 0.5 * sig / (np.std(sig) + 1e-8)
        return sig * _envelope(n, int(0.012 * SAMPLE_RATE), int(0.015 * SAMPLE_RATE))
    if ch in _FRICATIVES:
        n = int(SAMPLE_RATE * 0.09 * jitter)
        lo, hi = _FRICATIVES[ch]
        sig = 0.4 * _band_noise(n, lo * spk.scale, hi * spk.scale, rng)
        return sig * _envelope(n, int(0.02 * SAMPLE_RATE), int(0.02 * SAMPLE_RATE))
    if ch in _PLOSIVES:
        closure = int(SAMPLE_RATE * 0.04 * jitter)
        burst = int(SAMPLE_RATE * 0.035 * jitter)
        lo, hi = _PLOSIVES[ch]
        sig = 0.8 * _band_noise(burst, lo * spk.scale, hi * spk.scale, rng)
        sig *= _envelope(burst, int(0.002 * SAMPLE_RATE), int(0.025 * SAMPLE_RATE))
        return np.concatenate([np.zeros(closure), sig])
    raise ValueError(f"synthetic corpus: no rendering for letter {ch!r}")


def _random_text(rng: np.random.Generator, min_words: int, max_words: int) -> str:
    words = []
    for _ in range(int(rng.integers(min_words, max_words + 1))):
        length = int(rng.integers(2, 6))
        words.append("".join(ALPHABET[int(k)] for k in rng.integers(0, len(ALPHABET), length)))
    return " ".join(words)


def make_utterance(seed: int, split: str, index: int, min_words: int = 2, max_words: int = 4) -> Utterance:
    """Utterance `index` of `split`: a pure function of its arguments."""
    if split not in _SPLIT_IDS:
        raise ValueError(f"synthetic corpus: split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    spk = _Speaker(
        f0=float(rng.uniform(90.0, 240.0)),
        scale=float(rng.uniform(0.9, 1.15)),
        tempo=float(rng.uniform(0.8, 1.25)),
        gain=float(rng.uniform(0.1, 0.5)),
        snr_db=float(rng.uniform(15.0, 30.0)),
    )
    text = _random_text(rng, min_words, max_words)
    pieces = [np.zeros(int(SAMPLE_RATE * rng.uniform(0.05, 0.15)))]
    for ch in text:
        if ch == " ":
            pieces.append(np.zeros(int(SAMPLE_RATE * rng.uniform(0.06, 0.15) * spk.tempo)))
        else:
            pieces.append(_render_letter(ch, spk, rng))
    pieces.append(np.zeros(int(SAMPLE_RATE * rng.uniform(0.05, 0.15))))
    clean = np.concatenate(pieces)
    clean *= spk.gain / (np.sqrt(np.mean(clean**2)) + 1e-8)
    noise_rms = spk.gain * 10.0 ** (-spk.snr_db / 20.0)
    audio = clean + noise_rms * rng.standard_normal(len(clean))
    return Utterance(id=f"synthetic-{split}-{index:06d}", audio=audio.astype(np.float32), text=text)


def make_split(seed: int, split: str, count: int) -> list[Utterance]:
    return [make_utterance(seed, split, i) for i in range(count)]
