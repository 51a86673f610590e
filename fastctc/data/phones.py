"""TIMIT phone sets (61 / 48 / 39), the standard foldings between them, and the phone vocabulary.

The foldings are Lee & Hon's: K.-F. Lee and H.-W. Hon, "Speaker-independent phone recognition using
hidden Markov models", IEEE Trans. ASSP 37(11), 1989, Table I (61 TIMIT labels -> 48 for training;
48 -> 39 for scoring, the groups scored as one). We follow that table as Kaldi tabulates it, row by row
(egs/timit/s5/conf/phones.60-48-39.map; SpeechBrain's and icefall's TIMIT recipes use the same
groups). Closures as the table handles them: the unvoiced stop closures pcl, tcl, kcl become `cl`
and the voiced bcl, dcl, gcl become `vcl`; h# and pau become `sil`; epi stays a phone of the 48 set;
in the 39 set cl, vcl, epi and sil are all `sil`. The glottal stop q is removed (mapped to nothing)
on folding to 48 or 39; it is a label of the 61 set. Folding maps each phone on its own: adjacent
phones that become equal are not merged (as Kaldi's timit_norm_trans.pl).

Phone targets are strings of space-separated phones ("sil sh iy hh ae vcl"). The vocabulary is the
phone set, sorted, plus the CTC blank `[PAD]` as the last id (the recipe's blank convention); no
word delimiter and no [UNK]: a label outside the set is reported and its utterance left out before
training (see `to_phone_set`), so encode() never meets one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..vocab import read_vocab_json, write_vocab_json
from .text import PAD

# TIMIT label -> (48-set phone, 39-set phone); None: removed (q). Lee & Hon (1989), Table I.
LEE_HON = {
    "aa": ("aa", "aa"),
    "ae": ("ae", "ae"),
    "ah": ("ah", "ah"),
    "ao": ("ao", "aa"),
    "aw": ("aw", "aw"),
    "ax": ("ax", "ah"),
    "ax-h": ("ax", "ah"),
    "axr": ("er", "er"),
    "ay": ("ay", "ay"),
    "b": ("b", "b"),
    "bcl": ("vcl", "sil"),
    "ch": ("ch", "ch"),
    "d": ("d", "d"),
    "dcl": ("vcl", "sil"),
    "dh": ("dh", "dh"),
    "dx": ("dx", "dx"),
    "eh": ("eh", "eh"),
    "el": ("el", "l"),
    "em": ("m", "m"),
    "en": ("en", "n"),
    "eng": ("ng", "ng"),
    "epi": ("epi", "sil"),
    "er": ("er", "er"),
    "ey": ("ey", "ey"),
    "f": ("f", "f"),
    "g": ("g", "g"),
    "gcl": ("vcl", "sil"),
    "h#": ("sil", "sil"),
    "hh": ("hh", "hh"),
    "hv": ("hh", "hh"),
    "ih": ("ih", "ih"),
    "ix": ("ix", "ih"),
    "iy": ("iy", "iy"),
    "jh": ("jh", "jh"),
    "k": ("k", "k"),
    "kcl": ("cl", "sil"),
    "l": ("l", "l"),
    "m": ("m", "m"),
    "n": ("n", "n"),
    "ng": ("ng", "ng"),
    "nx": ("n", "n"),
    "ow": ("ow", "ow"),
    "oy": ("oy", "oy"),
    "p": ("p", "p"),
    "pau": ("sil", "sil"),
    "pcl": ("cl", "sil"),
    "q": None,
    "r": ("r", "r"),
    "s": ("s", "s"),
    "sh": ("sh", "sh"),
    "t": ("t", "t"),
    "tcl": ("cl", "sil"),
    "th": ("th", "th"),
    "uh": ("uh", "uh"),
    "uw": ("uw", "uw"),
    "ux": ("uw", "uw"),
    "v": ("v", "v"),
    "w": ("w", "w"),
    "y": ("y", "y"),
    "z": ("z", "z"),
    "zh": ("zh", "sh"),
}

PHONES_61 = tuple(sorted(LEE_HON))
PHONES_48 = tuple(sorted({row[0] for row in LEE_HON.values() if row}))
PHONES_39 = tuple(sorted({row[1] for row in LEE_HON.values() if row}))
PHONE_SETS = {61: PHONES_61, 48: PHONES_48, 39: PHONES_39}


def fold_map(to_set: int) -> dict[str, str | None]:
    """Every label fastctc accepts -> its phone in the `to_set` set (None: removed).

    The labels are the 61 TIMIT labels and, for the smaller sets, the labels of every set above
    them (a 48-set label folds to 39; a 39-set label is itself), so text already in a set folds
    to itself. A label missing from the map is unknown to `to_set`."""
    if to_set not in PHONE_SETS:
        raise ValueError(f"phone set must be 61, 48 or 39, got {to_set}")
    if to_set == 61:
        return {p: p for p in PHONES_61}
    column = 0 if to_set == 48 else 1
    out: dict[str, str | None] = {p: (row[column] if row else None) for p, row in LEE_HON.items()}
    # the 48 set's own labels (cl, vcl, sil and the rest) fold as the 61 labels they come from
    out.update({row[0]: row[column] for row in LEE_HON.values() if row})
    return out


def to_phone_set(labels: Iterable[str], to_set: int, table: dict[str, str | None] | None = None):
    """(phones in `to_set`, the first unknown label or None). q and the like are dropped."""
    table = table or fold_map(to_set)
    out = []
    for label in labels:
        if label not in table:
            return out, label
        if table[label] is not None:
            out.append(table[label])
    return out, None


class PhoneVocab:
    """Phones <-> ids: the sorted phone set, then the CTC blank `[PAD]` (the last id)."""

    def __init__(self, tokens: Sequence[str]):
        if len(set(tokens)) != len(tokens):
            raise ValueError("PhoneVocab: tokens must be unique")
        if not tokens or tokens[-1] != PAD:
            raise ValueError(f"PhoneVocab: the last token must be the CTC blank {PAD}")
        if any(not t or any(c.isspace() for c in t) for t in tokens):
            raise ValueError("PhoneVocab: a phone may not be empty or contain whitespace")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.blank = self.index[PAD]

    @classmethod
    def for_set(cls, phone_set: int) -> PhoneVocab:
        if phone_set not in PHONE_SETS:
            raise ValueError(f"phone set must be 61, 48 or 39, got {phone_set}")
        return cls([*PHONE_SETS[phone_set], PAD])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Space-separated phones -> ids. An unknown phone is an error: the corpus screen leaves such
        utterances out, so meeting one here means text that did not come through it."""
        try:
            return [self.index[p] for p in text.split()]
        except KeyError as e:
            raise ValueError(
                f"PhoneVocab: phone {e.args[0]!r} is not in the vocabulary ({len(self.tokens) - 1} phones)"
            ) from None

    def count_unknown(self, text: str) -> int:
        return sum(p not in self.index for p in text.split())

    def decode(self, ids: Iterable[int]) -> str:
        """Ids to space-separated phones without CTC grouping (blank dropped)."""
        return " ".join(self.tokens[i] for i in ids if i != self.blank)

    def save(self, path: str | Path) -> None:
        write_vocab_json(path, self.tokens)

    @classmethod
    def load(cls, path: str | Path) -> PhoneVocab:
        return cls(read_vocab_json(path))


@dataclass
class PhoneDecoder:
    """Any CTC vocabulary (a checkpoint's tokens, blank and special ids) decoding to space-separated
    phones: each token is one phone, so tokens are joined by spaces, not concatenated as characters."""

    tokens: list[str]
    blank: int
    specials: frozenset[int] = frozenset()

    @classmethod
    def of(cls, vocab) -> PhoneDecoder:
        return cls(list(vocab.tokens), vocab.blank, frozenset(getattr(vocab, "specials", ())))

    def __len__(self) -> int:
        return len(self.tokens)

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.tokens[i] for i in ids if i != self.blank and i not in self.specials)


def vocab_for(data, transcripts: Iterable[str]):
    """The vocabulary `data.targets` asks for: a PhoneVocab of data.phone_set (fixed, whatever the
    transcripts hold, so every run on that set has the same ids), or the recipe's CharVocab."""
    if getattr(data, "targets", "chars") == "phones":
        return PhoneVocab.for_set(data.phone_set)
    from .text import CharVocab

    return CharVocab.from_transcripts(transcripts)


def fold_text(text: str, fold: dict[str, str | None]) -> str:
    """Space-separated phones mapped through `fold` (fold_map / score_fold); None entries dropped."""
    return " ".join(q for q in (fold[p] for p in text.split()) if q is not None)


def score_fold(data) -> dict[str, str | None] | None:
    """The folding PER is scored after (training set -> data.score_phone_set); None for char targets."""
    if getattr(data, "targets", "chars") != "phones":
        return None
    return fold_map(data.score_phone_set)
