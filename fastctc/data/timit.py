"""TIMIT as distributed: the LDC layout, upper- or lower-case, and NLTK's sample layout.

LDC:  ROOT/TRAIN|TEST/DR1..DR8/SPEAKER/UTT.WAV + UTT.TXT   (names upper- or lower-case;
      ROOT may also hold them under TIMIT/ or data/). Splits: `train`, `test` (the timit_asr split:
      every utterance, SA sentences included), or both joined with `+`.
NLTK: ROOT/drN-speaker/utt.wav + utt.txt (the nltk_data timit sample). It has no train/test
      split: select `all`, dialect regions (`dr1+dr2`) or speaker folders (`dr1-fvmh0`).

UTT.TXT is `start end Text.`: the transcript is the text after the sample span. Audio may be NIST
SPHERE or RIFF whatever the extension says; soundfile reads the header.

Phone targets (`targets="phones"`): UTT.PHN's `start end label` lines, labels in file order, joined by
spaces (the 61-phone set; the screen folds them to data.phone_set, see fastctc.data.phones).

The phone-recognition protocol's splits (LDC layout only), as the TIMIT benchmarks define them:
  train-nosa  every TRAIN speaker (462), SA sentences left out: 3,696 utterances;
  dev         the 50 TEST speakers of DEV_SPEAKERS, SA left out: 400 utterances;
  core-test   the 24 TEST speakers of CORE_TEST_SPEAKERS, SA left out: 192 utterances;
  test-nosa   every TEST speaker (168), SA left out: 1,344 utterances (the complete test set).
The SA sentences are read by every speaker, so the protocol leaves them out of training and testing
(TIMIT's testset.doc).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from .dataset import CorpusError, UtteranceInfo
from .report import DataReport

LDC_LAYOUT = "ROOT/TRAIN/DR1..DR8/SPEAKER/UTT.WAV + UTT.TXT (and TEST/...), upper- or lower-case"
NLTK_LAYOUT = "ROOT/drN-speaker/utt.wav + utt.txt (the NLTK sample)"
_DR = re.compile(r"^dr\d$", re.IGNORECASE)
_NLTK_SPEAKER = re.compile(r"^(dr\d)-(\w+)$", re.IGNORECASE)

# The core test set: TIMIT's testset.doc (LDC93S1, 1990), Table 1, two male and one female speaker
# per dialect region (DR1..DR8), the sex letter prefixed as in the corpus's speaker folders.
CORE_TEST_SPEAKERS = frozenset(
    """
    mdab0 mwbt0 felc0  mtas1 mwew0 fpas0  mjmp0 mlnt0 fpkt0  mlll0 mtls0 fjlm0
    mbpm0 mklt0 fnlp0  mcmj0 mjdh0 fmgd0  mgrt0 mnjm0 fdhc0  mjln0 mpam0 fmld0
""".split()
)
# The 50-speaker development set: A. K. Halberstadt, "Heterogeneous acoustic measurements and multiple
# classifiers for speech recognition", PhD thesis, MIT, 1998, as Kaldi lists it
# (egs/timit/s5/conf/dev_spk.list; SpeechBrain's TIMIT recipe has the same 50). TEST speakers outside
# the core test set.
DEV_SPEAKERS = frozenset(
    """
    faks0 fdac1 fjem0 mgwt0 mjar0 mmdb1 mmdm2 mpdf0 fcmh0 fkms0 mbdg0 mbwm0 mcsh0
    fadg0 fdms0 fedw0 mgjf0 mglb0 mrtk0 mtaa0 mtdt0 mthc0 mwjg0 fnmr0 frew0 fsem0
    mbns0 mmjr0 mdls0 mdlf0 mdvc0 mers0 fmah0 fdrw0 mrcs0 mrjm4 fcal1 mmwh0 fjsj0
    majc0 mjsw0 mreb0 fgjd0 fjmg0 mroa0 mteb0 mjfc0 mrjr0 fmml0 mrws1
""".split()
)
# split name -> (LDC folder, speakers (None = all), leave out the SA sentences)
SPLITS = {
    "train": ("train", None, False),
    "test": ("test", None, False),
    "train-nosa": ("train", None, True),
    "test-nosa": ("test", None, True),
    "dev": ("test", DEV_SPEAKERS, True),
    "core-test": ("test", CORE_TEST_SPEAKERS, True),
}


def _children(folder: Path) -> dict[str, Path]:
    """Lower-cased name -> entry, so TRAIN and train are found alike."""
    return {e.name.lower(): Path(e.path) for e in os.scandir(folder)} if folder.is_dir() else {}


def _transcript(txt: Path) -> str:
    parts = txt.read_text(encoding="utf-8", errors="replace").split(maxsplit=2)
    # `start end text`; a file with only the span has no words
    return parts[2].strip() if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit() else ""


def _phones(phn: Path) -> tuple[str, str | None]:
    """(the labels of `start end label` lines, space-joined; a malformed line's description or None)."""
    labels = []
    for n, line in enumerate(phn.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
            return "", f"{phn}:{n}: expected 'start end phone', got {line.strip()!r}"
        labels.append(parts[2])
    return " ".join(labels), None


def _speaker_utterances(
    folder: Path,
    id_prefix: str,
    speaker: str,
    split: str,
    report: DataReport,
    targets: str = "chars",
    drop_sa: bool = False,
) -> list[UtteranceInfo]:
    label_ext = ".phn" if targets == "phones" else ".txt"
    wavs, labels = {}, {}
    for e in os.scandir(folder):
        stem, ext = os.path.splitext(e.name)
        if drop_sa and stem.lower().startswith("sa"):
            continue
        if ext.lower() == ".wav":
            wavs[stem.lower()] = e.path
        elif ext.lower() == label_ext:
            labels[stem.lower()] = Path(e.path)
    out = []
    for utt in sorted(wavs.keys() | labels.keys()):
        uid = f"{id_prefix}-{utt}"
        if utt not in labels:
            report.add(split, "missing_phones" if targets == "phones" else "missing_transcript", wavs[utt])
        elif utt not in wavs:
            report.add(split, "missing_audio", f"{uid} (no {utt}.wav beside {labels[utt]})")
        elif targets == "phones":
            text, bad = _phones(labels[utt])
            if bad:
                report.add(split, "unknown_phone", bad)
            else:
                out.append(UtteranceInfo(id=uid, path=wavs[utt], text=text, speaker=speaker))
        else:
            out.append(UtteranceInfo(id=uid, path=wavs[utt], text=_transcript(labels[utt]), speaker=speaker))
    return out


def _ldc_base(root: Path) -> Path | None:
    for base in (root, root / "TIMIT", root / "timit", root / "data"):
        names = _children(base)
        if "train" in names or "test" in names:
            return base
    return None


def _ldc_part(base: Path, part: str, split: str, report: DataReport, targets: str) -> list[UtteranceInfo]:
    """One split of the LDC layout (`train`, `core-test`, ...); a protocol split with speakers missing
    from the copy is read anyway, with a warning."""
    names = _children(base)
    if part not in SPLITS:
        raise CorpusError(
            f"data.{split}: TIMIT split {part!r}: the LDC layout has train and test (the "
            f"cards' splits, joined with '+' if wanted) and the protocol's train-nosa, dev, "
            f"core-test and test-nosa; found under {base}"
        )
    folder, speakers, drop_sa = SPLITS[part]
    if folder not in names:
        raise CorpusError(
            f"data.{split}: {base} has no {folder.upper()} folder (needed by {part!r}); expected {LDC_LAYOUT}"
        )
    out, found = [], set()
    for dr_name, dr in sorted(_children(names[folder]).items()):
        if not _DR.match(dr_name) or not dr.is_dir():
            continue
        for spk_name, spk in sorted(_children(dr).items()):
            if spk.is_dir() and (speakers is None or spk_name in speakers):
                found.add(spk_name)
                out += _speaker_utterances(
                    spk, f"{folder}-{dr_name}-{spk_name}", spk_name, split, report, targets, drop_sa
                )
    if speakers is not None and found != speakers:
        missing = sorted(speakers - found)
        print(
            f"fastctc data: warning: data.{split}={part}: {len(missing)} of its {len(speakers)} speakers "
            f"are not under {names[folder]} ({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}); "
            f"the split is incomplete",
            file=sys.stderr,
            flush=True,
        )
    return out


def _read_nltk(root: Path, wanted: list[str], split: str, report: DataReport, targets: str) -> list[UtteranceInfo]:
    """The NLTK sample's speakers that `wanted` selects: all, dialect regions (dr1) or speaker folders."""
    speakers = {n: p for n, p in _children(root).items() if _NLTK_SPEAKER.match(n) and p.is_dir()}
    if not speakers:
        raise CorpusError(
            f"data.root: {root} does not look like TIMIT: no TRAIN/TEST folder and no drN-speaker "
            f"folders; expected {LDC_LAYOUT}, or {NLTK_LAYOUT}"
        )
    chosen = set()
    for part in wanted:
        match = {n for n in speakers if part == "all" or n == part or n.split("-")[0] == part}
        if not match:
            hint = " (the NLTK sample has no train/test split)" if part in SPLITS else ""
            raise CorpusError(
                f"data.{split}: {part!r} selects nothing in the NLTK TIMIT sample at {root}{hint}; "
                f"use 'all', dialect regions like 'dr1+dr2' or speaker folders like "
                f"{sorted(speakers)[0]!r}"
            )
        chosen |= match
    out = []
    for name in sorted(chosen):
        out += _speaker_utterances(speakers[name], name, _NLTK_SPEAKER.match(name).group(2), split, report, targets)
    return out


def read_timit(
    root: str | Path, spec: str, report: DataReport, split: str, targets: str = "chars"
) -> list[UtteranceInfo]:
    """Utterances of `spec` (see the module doc) under `root`, in a stable order; `targets` chars (the
    .TXT transcript) or phones (the .PHN labels, space-separated)."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"data.root: TIMIT folder {str(root)!r} does not exist; expected {LDC_LAYOUT}")
    wanted = [s.strip().lower() for s in spec.split("+") if s.strip()]
    base = _ldc_base(root)
    if base is None:
        return _read_nltk(root, wanted, split, report, targets)
    return [u for part in wanted for u in _ldc_part(base, part, split, report, targets)]
