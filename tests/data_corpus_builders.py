"""Small corpora in the distributors' layouts, written with soundfile into a temp dir (shared by the data tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float, sr: int = 16_000, freq: float = 440.0, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A sine plus a little noise: (N,) or (N, channels) float32 in [-1, 1]."""
    t = np.arange(int(round(seconds * sr))) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (np.stack([x] * channels, axis=1) if channels > 1 else x).astype(np.float32)


def write(path: Path, x: np.ndarray, sr: int = 16_000, fmt: str = "WAV") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, format=fmt, subtype="PCM_16")
    return path


def timit_ldc(root: Path, upper: bool = True) -> dict:
    """TRAIN: 2 regions x 1 speaker x 3 utterances (NIST and RIFF), TEST: 1 x 1 x 2; plus broken ones.
    Returns the expected facts."""
    c = str.upper if upper else str.lower
    ext = c(".wav")

    def utt(split, dr, spk, name, seconds, text, fmt="NIST", audio=True, txt=True):
        folder = root / c(split) / c(dr) / c(spk)
        if audio:
            write(folder / (c(name) + ext), tone(seconds, seed=len(name)), fmt=fmt)
        if txt:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / (c(name) + c(".txt"))).write_text(f"0 {int(seconds * 16000)} {text}\n")

    utt("train", "dr1", "fcjf0", "sa1", 2.5, "She had your dark suit in greasy wash water all year.")
    utt("train", "dr1", "fcjf0", "si648", 2.0, "Don't ask me to carry an oily rag like that!", fmt="WAV")
    utt("train", "dr1", "fcjf0", "sx37", 1.5, "Cottage cheese; with chives - is delicious?")
    utt("train", "dr2", "marc0", "sa2", 1.1, "Ask me to carry an oily rag.")
    utt("train", "dr2", "marc0", "sx1", 0.9, "Nobody ever hears this.", audio=False)  # missing audio
    utt("train", "dr2", "marc0", "sx2", 0.9, "", txt=True)  # empty transcript (only the span)
    utt("train", "dr2", "marc0", "sx3", 0.9, "unused", txt=False)  # audio without transcript
    broken = root / c("train") / c("dr2") / c("marc0") / (c("sx4") + ext)
    broken.write_bytes(b"NIST_1A\n   1024\nthis is not a header")  # unreadable
    (broken.parent / (c("sx4") + c(".txt"))).write_text("0 100 Broken file.\n")
    utt("test", "dr3", "mabc0", "sa1", 1.3, "She had your dark suit.")
    utt("test", "dr3", "mabc0", "si2", 0.7, "Greasy wash water.", fmt="WAV")
    return {"train": 4, "test": 2, "train_seconds": 2.5 + 2.0 + 1.5 + 1.1}


def librispeech(root: Path) -> None:
    """train-clean-100: 2 speakers x 1 chapter; train-clean-360: 1; dev-clean: 1; FLAC."""

    def chapter(subset, spk, chap, lines, missing=(), extra=()):
        folder = root / subset / spk / chap
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{spk}-{chap}.trans.txt").write_text(
            "".join(f"{spk}-{chap}-{i:04d} {text}\n" for i, (text, _) in enumerate(lines))
        )
        for i, (_, seconds) in enumerate(lines):
            if i not in missing:
                write(folder / f"{spk}-{chap}-{i:04d}.flac", tone(seconds, seed=i), fmt="FLAC")
        for i in extra:
            write(folder / f"{spk}-{chap}-{i:04d}.flac", tone(0.5), fmt="FLAC")

    chapter(
        "train-clean-100",
        "19",
        "198",
        [("CHAPTER ONE", 1.0), ("IT WAS A DARK NIGHT", 1.5), ("AND COLD", 0.6)],
        missing=(2,),
        extra=(7,),
    )
    chapter("train-clean-100", "26", "495", [("HE SAID NOTHING", 1.2), ("THAT'S ALL", 0.9)])
    chapter("train-clean-360", "100", "121669", [("TOM'S BOAT", 0.8)])
    chapter("dev-clean", "84", "121123", [("GO DO YOU HEAR", 1.1), ("BUT IN LESS THAN FIVE MINUTES", 2.0)])
