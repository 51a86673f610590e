"""Datasets the trainer iterates: transcripts and durations up front, audio loaded lazily by index.

Both kinds expose the same narrow surface: `ids`, `texts` (normalised), `durations` (seconds at the
model's rate, after any crop), `len()` and `dataset[i] -> Item`. `SpeechDataset` reads files on
disk (in DataLoader workers); `InMemoryDataset` holds generated audio (the synthetic corpus).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ..errors import CorpusError  # noqa: F401  (raised by the corpus readers, imported from here)
from .audio import AudioError, read_audio


@dataclass(frozen=True)
class UtteranceInfo:
    """One utterance as a corpus reader lists it."""

    id: str
    path: str  # audio file
    text: str  # transcript as written in the corpus (normalised later)
    speaker: str = ""
    duration: float = 0.0  # seconds, when the listing already knows it (a manifest); 0 = from the header


class Item(NamedTuple):
    id: str
    audio: np.ndarray | None  # (N,) float32 mono at the model's rate; None when loading failed
    text: str
    error: str = ""  # why loading failed (reported and skipped by the loader), or what was changed
    reason: str = ""  # the data report's reason for `error` ("" = unreadable when audio is None)
    samples: int = 0  # audio None and samples > 0: left unread, its frozen features are stored (`stored`)


class SpeechDataset(torch.utils.data.Dataset):
    """Utterances on disk. `durations` are those the listing computed (header or manifest).

    max_seconds > 0 (the training split's data.max_duration_s) is checked again when a file is loaded,
    against the file itself: a manifest duration that says 1 s for a 60 s file must not bypass the cap.
    Such a file is skipped (too_long_when_loaded) or, with crop, cropped (cropped_when_loaded), and
    never decoded past the cap.
    """

    in_memory = False

    def __init__(
        self,
        utterances: Sequence[UtteranceInfo],
        texts: Sequence[str],
        durations: Sequence[float],
        sample_rate: int,
        max_seconds: float = 0.0,
        crop: bool = False,
    ):
        if not (len(utterances) == len(texts) == len(durations)):
            raise ValueError("SpeechDataset: utterances, texts and durations must have the same length")
        self.utterances = list(utterances)
        self.ids = [u.id for u in self.utterances]
        self.speakers = [u.speaker for u in self.utterances]
        self.texts = list(texts)
        self.durations = [float(d) for d in durations]
        self.sample_rate, self.max_seconds, self.crop = sample_rate, max_seconds, crop
        self.stored: torch.Tensor | None = None  # FrozenFeatureStore.known of this split (shared memory)

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitems__(self, indices: Sequence[int]) -> list[Item]:
        """A batch's items (the DataLoader's batched fetch). When the frozen-feature store holds every one
        of them, no file is read: the step gathers their features, and each item carries the length it
        loaded as. One item still to compute makes the whole batch load: the conv stack runs on all of it."""
        if self.stored is not None and len(indices):
            samples = self.stored.numpy()[list(indices)].tolist()  # numpy: no torch op in a step's loader
            if min(samples) > 0:
                return [Item(self.ids[i], None, self.texts[i], samples=n) for i, n in zip(indices, samples)]
        return [self[i] for i in indices]

    def __getitem__(self, i: int) -> Item:
        item = self._load(i)
        if item.reason and self.stored is not None:  # a note to report again each epoch: always load it
            self.stored.numpy()[i] = -1
        return item

    def _load(self, i: int) -> Item:
        u = self.utterances[i]
        cap = int(self.max_seconds * self.sample_rate)  # 0 = no cap
        try:
            audio, length = read_audio(u.path, self.sample_rate, cap)
        except AudioError as e:
            return Item(u.id, None, self.texts[i], str(e), e.reason)
        except (OSError, RuntimeError, ValueError) as e:  # a decoder failing past a good header
            return Item(u.id, None, self.texts[i], f"{u.path}: {e}")
        if audio.size == 0:
            return Item(u.id, None, self.texts[i], f"{u.path}: 0 samples", "too_short")
        bad = int(np.count_nonzero(~np.isfinite(audio)))
        if bad:
            return Item(u.id, None, self.texts[i], f"{u.path}: {bad} non-finite samples (NaN or inf)", "non_finite")
        if cap and length > cap:
            why = (
                f"{u.path}: {length / self.sample_rate:.1f} s in the file, {self.durations[i]:.1f} s listed, "
                f"over data.max_duration_s={self.max_seconds:g}"
            )
            if not self.crop:
                return Item(u.id, None, self.texts[i], why, "too_long_when_loaded")
            if round(self.durations[i] * self.sample_rate) < cap:  # else the screen cropped and counted it
                return Item(u.id, audio, self.texts[i], why, "cropped_when_loaded")
        return Item(u.id, audio, self.texts[i])


class InMemoryDataset(torch.utils.data.Dataset):
    """Audio already in memory (the synthetic corpus): no files, no workers needed."""

    in_memory = True

    def __init__(self, ids: Sequence[str], audios: Sequence[np.ndarray], texts: Sequence[str], sample_rate: int):
        self.ids, self.audios, self.texts = list(ids), list(audios), list(texts)
        self.speakers = [""] * len(self.ids)
        self.durations = [len(a) / sample_rate for a in self.audios]
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> Item:
        return Item(self.ids[i], self.audios[i], self.texts[i])
