"""A manifest for any other corpus: JSON lines or a TSV with a header row.

Fields: `audio` (or `path`; relative paths are relative to the manifest's folder), `text`, and
optionally `duration` (seconds; saves reading the header), `id` and `speaker`.

    {"audio": "clips/a.wav", "text": "hello world", "duration": 1.92}

    audio<TAB>text<TAB>duration
    clips/a.wav<TAB>hello world<TAB>1.92
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .dataset import CorpusError, UtteranceInfo
from .report import DataReport

LAYOUT = 'a .jsonl file of {"audio": PATH, "text": TEXT[, "duration": SECONDS]} lines, or a .tsv with a header row audio<TAB>text[<TAB>duration]'


def _text(path: Path, split: str) -> str:
    """The manifest as UTF-8 (a byte-order mark is dropped). Anything else stops the run: decoded with
    replacement characters, a latin-1 "café" loses its é from transcripts and vocabulary in silence."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        fixed = path.with_name(f"{path.stem}.utf8{path.suffix}")
        raise CorpusError(
            f"data.{split}: {path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x}); manifests are UTF-8: "
            f"convert it, e.g. iconv -f latin1 -t utf-8 {path} > {fixed}"
        ) from None


def _rows(path: Path, split: str):
    """(line number, dict or None for an unparsable line)."""
    text = _text(path, split)
    if path.suffix.lower() in (".jsonl", ".json"):
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    row = None
                yield n, row if isinstance(row, dict) else None
    elif path.suffix.lower() in (".tsv", ".txt"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE)
        if not reader.fieldnames or not ({"audio", "path"} & set(reader.fieldnames)) or "text" not in reader.fieldnames:
            raise CorpusError(
                f"data.{split}: {path}: the TSV header must name audio (or path) and text columns, "
                f"got {reader.fieldnames}; expected {LAYOUT}"
            )
        for n, row in enumerate(reader, 2):
            yield n, row
    else:
        raise CorpusError(f"data.{split}: {path}: unknown manifest type {path.suffix!r}; expected {LAYOUT}")


def read_manifest(root: str | Path, spec: str, report: DataReport, split: str) -> list[UtteranceInfo]:
    path = Path(root) / spec if root else Path(spec)
    if not path.is_file():
        raise CorpusError(f"data.{split}: manifest {str(path)!r} does not exist; expected {LAYOUT}")
    out = []
    seen: dict[str, int] = {}  # audio path or id -> the line that listed it first
    for n, row in _rows(path, split):
        where = f"{path}:{n}"
        audio = row and (row.get("audio") or row.get("path"))
        text = row.get("text") if row else None
        try:
            duration = float(row.get("duration") or 0.0) if row else 0.0
        except (TypeError, ValueError):
            duration = -1.0
        if not audio or not isinstance(audio, str) or not isinstance(text, str) or duration < 0:
            report.add(split, "bad_manifest_line", where)
            continue
        audio_path = Path(audio) if Path(audio).is_absolute() else path.parent / audio
        uid = str(row.get("id") or f"{path.stem}-{n:07d}")
        # the same file (or id) twice would weigh it twice in training and count it twice in a WER
        again = next(
            ((what, seen[key]) for what, key in (("audio", str(audio_path)), ("id", f"id:{uid}")) if key in seen), None
        )
        if again is not None:
            report.add(
                split,
                "duplicate",
                f"{where}: {again[0]} {(audio if again[0] == 'audio' else uid)!r} already listed on line {again[1]}",
            )
            continue
        seen.setdefault(str(audio_path), n)
        seen.setdefault(f"id:{uid}", n)
        out.append(
            UtteranceInfo(
                id=uid, path=str(audio_path), text=text, speaker=str(row.get("speaker") or ""), duration=duration
            )
        )
    return out
