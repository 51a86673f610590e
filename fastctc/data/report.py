"""Bad inputs, counted: every utterance left out (or changed) says why, once per kind and in a summary.

A corpus of 28k files always holds a few broken ones; they must neither crash an epoch nor vanish
silently. Readers, the listing screen and the loader report here; the first occurrence of each
kind prints one warning with an example, later ones are only counted, and `summary` gives the counts.
"""

from __future__ import annotations

import sys
from collections import Counter

# reason -> what the summary calls it. Those in KEPT keep the utterance.
REASONS = {
    "missing_audio": "audio file missing",
    "missing_transcript": "audio without a transcript",
    "missing_phones": "audio without a .PHN phone transcription (data.targets=phones)",
    "unknown_phone": "phone label outside data.phone_set's folding table, or a malformed .PHN line",
    "bad_manifest_line": "malformed manifest line",
    "duplicate": "audio file or id listed again in the manifest (the later line)",
    "unreadable": "unreadable audio",
    "empty_transcript": "empty transcript after normalisation",
    "sample_rate": "sample rate not data.sample_rate and data.resample=false",
    "channels": "more channels than data.max_channels",
    "too_long": "longer than data.max_duration_s",
    "too_long_when_loaded": "longer than data.max_duration_s when loaded, though listed shorter (a wrong duration)",
    "non_finite": "non-finite (NaN or inf) samples",
    "too_short": "shorter than the encoder's receptive field",
    "ctc_infeasible": "too few encoder frames for its transcript under CTC",
    "cropped": "cropped to data.max_duration_s (kept)",
    "cropped_when_loaded": "cropped to data.max_duration_s when loaded, though listed shorter (kept; a wrong duration)",
    "unknown_chars": "characters outside the vocabulary, mapped to [UNK] (kept; counts characters)",
    "speed_kept": "batch kept at speed 1: the drawn augment.speed_factors entry left an utterance too few "
    "frames for its transcript (kept)",
}
KEPT = ("cropped", "cropped_when_loaded", "unknown_chars", "speed_kept")


class DataReport:
    """Counts per (split, reason); one warning per kind, on its first occurrence."""

    def __init__(self, stream=None):
        self.counts: dict[str, Counter] = {}
        self.stream = stream  # None = sys.stderr at the time of writing (pytest's capsys swaps it)
        self._warned: set[tuple] = set()

    def add(self, split: str, reason: str, example: str, n: int = 1, name_each: bool = False) -> None:
        """Count `n` of `reason`. The first of each kind is shown; with name_each (files that fail when
        loaded, which may first fail in a late epoch) every distinct `example` is shown once."""
        if reason not in REASONS:
            raise KeyError(f"DataReport: unknown reason {reason!r}; known: {', '.join(REASONS)}")
        self.counts.setdefault(split, Counter())[reason] += n
        key = (split, reason, example) if name_each else (split, reason)
        if key not in self._warned:
            self._warned.add(key)
            tail = "" if reason in KEPT else "; skipped"
            further = "each file is named once" if name_each else "further ones are counted, not shown"
            print(
                f"fastctc data: warning: {split}: {REASONS[reason]}: {example}{tail} ({further})",
                file=self.stream or sys.stderr,
                flush=True,
            )

    def skipped(self, split: str) -> int:
        return sum(n for r, n in self.counts.get(split, Counter()).items() if r not in KEPT)

    def summary(self, split: str) -> str:
        """One line: "3 skipped (2 unreadable audio, 1 empty transcript ...)" or "nothing skipped"."""
        c = self.counts.get(split, Counter())
        skipped = ", ".join(f"{n} {REASONS[r]}" for r, n in c.items() if r not in KEPT)
        kept = ", ".join(f"{n} {REASONS[r]}" for r, n in c.items() if r in KEPT)
        text = f"{self.skipped(split)} skipped ({skipped})" if skipped else "nothing skipped"
        return text + (f"; {kept}" if kept else "")
