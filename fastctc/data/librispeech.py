"""LibriSpeech as distributed: ROOT/SUBSET/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac + SPEAKER-CHAPTER.trans.txt.

A split names one subset or several joined with `+` (train-clean-100+train-clean-360). Each
trans.txt line is `UTT-ID WORDS`; the words are upper case without punctuation except apostrophes.
"""

from __future__ import annotations

import os
from pathlib import Path

from .dataset import CorpusError, UtteranceInfo
from .report import DataReport

LAYOUT = "ROOT/SUBSET/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac + SPEAKER-CHAPTER.trans.txt"


def _subdirs(folder: Path) -> list[Path]:
    return sorted(Path(e.path) for e in os.scandir(folder) if e.is_dir())


def _chapter(chapter: Path, speaker: str, split: str, report: DataReport) -> list[UtteranceInfo]:
    flacs = {e.name[: -len(".flac")]: e.path for e in os.scandir(chapter) if e.name.endswith(".flac")}
    trans = chapter / f"{speaker}-{chapter.name}.trans.txt"
    lines = trans.read_text(encoding="utf-8", errors="replace").splitlines() if trans.is_file() else []
    out, listed = [], set()
    for line in lines:
        uid, _, words = line.strip().partition(" ")
        if not uid:
            continue
        listed.add(uid)
        if uid not in flacs:
            report.add(split, "missing_audio", f"{uid} (listed in {trans}, no {uid}.flac)")
            continue
        out.append(UtteranceInfo(id=uid, path=flacs[uid], text=words.strip(), speaker=speaker))
    for uid in sorted(flacs.keys() - listed):
        report.add(split, "missing_transcript", flacs[uid])
    return out


def read_librispeech(root: str | Path, spec: str, report: DataReport, split: str) -> list[UtteranceInfo]:
    """Utterances of the `+`-joined subsets in `spec` under `root`, in a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"data.root: LibriSpeech folder {str(root)!r} does not exist; expected {LAYOUT}")
    out = []
    for subset in (s.strip() for s in spec.split("+") if s.strip()):
        folder = root / subset
        if not folder.is_dir():
            found = [p.name for p in _subdirs(root)]
            raise CorpusError(
                f"data.{split}: no subset {subset!r} under {root} (found: {', '.join(found) or 'nothing'}); "
                f"expected {LAYOUT}"
            )
        n_before = len(out)
        for speaker in _subdirs(folder):
            for chapter in _subdirs(speaker):
                out += _chapter(chapter, speaker.name, split, report)
        if len(out) == n_before:
            raise CorpusError(f"data.{split}: {folder} holds no LibriSpeech utterances; expected {LAYOUT}")
    return out
