"""TIMIT as distributed: the LDC layout, upper- or lower-case, and NLTK's sample layout.

LDC:  ROOT/TRAIN|TEST/DR1..DR8/SPEAKER/UTT.WAV + UTT.TXT   (names upper- or lower-case;
      ROOT may also hold them under TIMIT/ or data/). Splits: `train`, `test` (the timit_asr split:
      every utterance, SA sentences included), or both joined with `+`.
NLTK: ROOT/drN-speaker/utt.wav + utt.txt (the nltk_data timit sample). It has no train/test
      split: select `all`, dialect regions (`dr1+dr2`) or speaker folders (`dr1-fvmh0`).

UTT.TXT is `start end Text.`: the transcript is the text after the sample span. Audio may be NIST
SPHERE or RIFF whatever the extension says; soundfile reads the header.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .dataset import CorpusError, UtteranceInfo
from .report import DataReport

LDC_LAYOUT = "ROOT/TRAIN/DR1..DR8/SPEAKER/UTT.WAV + UTT.TXT (and TEST/...), upper- or lower-case"
NLTK_LAYOUT = "ROOT/drN-speaker/utt.wav + utt.txt (the NLTK sample)"
_DR = re.compile(r"^dr\d$", re.IGNORECASE)
_NLTK_SPEAKER = re.compile(r"^(dr\d)-(\w+)$", re.IGNORECASE)


def _children(folder: Path) -> dict[str, Path]:
    """Lower-cased name -> entry, so TRAIN and train are found alike."""
    return {e.name.lower(): Path(e.path) for e in os.scandir(folder)} if folder.is_dir() else {}


def _transcript(txt: Path) -> str:
    parts = txt.read_text(encoding="utf-8", errors="replace").split(maxsplit=2)
    # `start end text`; a file with only the span has no words
    return parts[2].strip() if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit() else ""


def _speaker_utterances(folder: Path, id_prefix: str, speaker: str, split: str, report: DataReport) -> list[UtteranceInfo]:
    wavs, txts = {}, {}
    for e in os.scandir(folder):
        stem, ext = os.path.splitext(e.name)
        if ext.lower() == ".wav":
            wavs[stem.lower()] = e.path
        elif ext.lower() == ".txt":
            txts[stem.lower()] = Path(e.path)
    out = []
    for utt in sorted(wavs.keys() | txts.keys()):
        uid = f"{id_prefix}-{utt}"
        if utt not in txts:
            report.add(split, "missing_transcript", wavs[utt])
        elif utt not in wavs:
            report.add(split, "missing_audio", f"{uid} (no {utt}.wav beside {txts[utt]})")
        else:
            out.append(UtteranceInfo(id=uid, path=wavs[utt], text=_transcript(txts[utt]), speaker=speaker))
    return out


def _ldc_base(root: Path) -> Path | None:
    for base in (root, root / "TIMIT", root / "timit", root / "data"):
        names = _children(base)
        if "train" in names or "test" in names:
            return base
    return None


def read_timit(root: str | Path, spec: str, report: DataReport, split: str) -> list[UtteranceInfo]:
    """Utterances of `spec` (see the module doc) under `root`, in a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"data.root: TIMIT folder {str(root)!r} does not exist; expected {LDC_LAYOUT}")
    wanted = [s.strip().lower() for s in spec.split("+") if s.strip()]
    base = _ldc_base(root)
    if base is not None:
        names = _children(base)
        out = []
        for part in wanted:
            if part not in ("train", "test"):
                raise CorpusError(f"data.{split}: TIMIT split {part!r}: the LDC layout has train and test "
                                  f"(join them with '+'), found under {base}")
            if part not in names:
                raise CorpusError(f"data.{split}: {base} has no {part.upper()} folder; expected {LDC_LAYOUT}")
            for dr_name, dr in sorted(_children(names[part]).items()):
                if not _DR.match(dr_name) or not dr.is_dir():
                    continue
                for spk_name, spk in sorted(_children(dr).items()):
                    if spk.is_dir():
                        out += _speaker_utterances(spk, f"{part}-{dr_name}-{spk_name}", spk_name, split, report)
        return out

    speakers = {n: p for n, p in _children(root).items() if _NLTK_SPEAKER.match(n) and p.is_dir()}
    if not speakers:
        raise CorpusError(f"data.root: {root} does not look like TIMIT: no TRAIN/TEST folder and no drN-speaker "
                          f"folders; expected {LDC_LAYOUT}, or {NLTK_LAYOUT}")
    chosen = set()
    for part in wanted:
        match = {n for n in speakers if part == "all" or n == part or n.split("-")[0] == part}
        if not match:
            hint = " (the NLTK sample has no train/test split)" if part in ("train", "test") else ""
            raise CorpusError(f"data.{split}: {part!r} selects nothing in the NLTK TIMIT sample at {root}{hint}; "
                              f"use 'all', dialect regions like 'dr1+dr2' or speaker folders like "
                              f"{sorted(speakers)[0]!r}")
        chosen |= match
    out = []
    for name in sorted(chosen):
        out += _speaker_utterances(speakers[name], name, _NLTK_SPEAKER.match(name).group(2), split, report)
    return out
