"""The Free Spoken Digit Dataset as distributed: ROOT/recordings/{digit}_{speaker}_{index}.wav (8 kHz).

The label is the digit spoken in English, written as a word ("7" -> "seven"). Splits follow the
dataset's own convention: `test` = recordings with index 0-4, `train` = index 5-49. A split may name
speakers after a colon, joined with `+` (`train:george+jackson`), to take a subset.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .dataset import CorpusError, UtteranceInfo
from .report import DataReport

LAYOUT = "ROOT/recordings/{digit}_{speaker}_{index}.wav (split train = index 5-49, test = index 0-4)"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEST_INDICES = range(0, 5)  # the dataset README: "Recordings numbered 0-4 (inclusive) are in the test"
_NAME = re.compile(r"^([0-9])_([A-Za-z]+)_([0-9]+)\.wav$")


def read_fsdd(root: str | Path, spec: str, report: DataReport, split: str) -> list[UtteranceInfo]:
    """Utterances of split `spec` (train | test, optionally `:speaker+speaker`), sorted by file name."""
    folder = Path(root) / "recordings"
    if not folder.is_dir():
        raise CorpusError(f"data.root: {str(folder)!r} does not exist; expected {LAYOUT}")
    part, _, who = spec.partition(":")
    if part not in ("train", "test"):
        raise CorpusError(f"data.{split}: FSDD split {spec!r} must be train or test (optionally train:SPEAKER+SPEAKER)")
    speakers = {s.strip() for s in who.split("+") if s.strip()}
    out, seen = [], set()
    for name in sorted(e.name for e in os.scandir(folder) if e.name.endswith(".wav")):
        m = _NAME.match(name)
        if m is None:
            report.add(split, "missing_transcript", str(folder / name))  # the name carries the label
            continue
        digit, speaker, index = int(m.group(1)), m.group(2), int(m.group(3))
        seen.add(speaker)
        if (index in TEST_INDICES) != (part == "test") or (speakers and speaker not in speakers):
            continue
        out.append(UtteranceInfo(id=name[:-4], path=str(folder / name), text=DIGITS[digit], speaker=speaker))
    if speakers - seen:
        raise CorpusError(
            f"data.{split}: no FSDD speaker {', '.join(sorted(speakers - seen))} under {folder} "
            f"(found: {', '.join(sorted(seen)) or 'nothing'})"
        )
    if not out:
        raise CorpusError(f"data.{split}: {folder} holds no {spec} recordings; expected {LAYOUT}")
    return out
