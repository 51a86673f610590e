"""Token vocabularies and the one ids -> text decode (a leaf module: it imports nothing of fastctc).

CharVocab is the recipe's (Transformers' run_speech_recognition_ctc.py): the sorted set of transcript
characters with the space written as the word delimiter `|`, then `[UNK]` and `[PAD]` appended. The CTC
blank is `[PAD]`, the last id, unless the recipe's `<s>` and `</s>` follow it (bos_eos: its
Wav2Vec2CTCTokenizer adds them, so its head has two outputs no target uses). vocab.json is the format Wav2Vec2CTCTokenizer loads. DecoderVocab is any
checkpoint's tokenizer vocabulary as `fastctc.models.read_pretrained` reads it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

WORD_DELIMITER = "|"
UNK = "[UNK]"
PAD = "[PAD]"
BOS, EOS = "<s>", "</s>"  # Wav2Vec2CTCTokenizer's bos/eos tokens: outputs of the recipe's head, never text


def ids_to_text(tokens: Sequence[str], ids: Iterable[int], skip: Collection[int]) -> str:
    """The one decode: ids in `skip` dropped, `|` back to spaces, whitespace collapsed."""
    chars = (tokens[i] for i in ids if i not in skip)
    return " ".join("".join(" " if c == WORD_DELIMITER else c for c in chars).split())


def write_vocab_json(path: str | Path, tokens: Sequence[str]) -> None:
    """vocab.json as Wav2Vec2CTCTokenizer reads it: {token: id}."""
    index = {t: i for i, t in enumerate(tokens)}
    Path(path).write_text(json.dumps(index, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def read_vocab_json(path: str | Path) -> list[str]:
    """The tokens of a vocab.json in id order; ids must be 0..n-1 without gaps."""
    index = json.loads(Path(path).read_text(encoding="utf-8"))
    tokens = sorted(index, key=index.get)
    if [index[t] for t in tokens] != list(range(len(tokens))):
        raise ValueError(f"{path}: vocabulary ids must be 0..{len(tokens) - 1} without gaps")
    return tokens


class CharVocab:
    """Characters <-> ids. `blank` (= `[PAD]`) is the CTC blank."""

    def __init__(self, tokens: Sequence[str]):
        if len(set(tokens)) != len(tokens):
            raise ValueError("CharVocab: tokens must be unique")
        for special in (UNK, PAD):
            if special not in tokens:
                raise ValueError(f"CharVocab: the vocabulary needs the special token {special}")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.unk = self.index[UNK]
        self.blank = self.index[PAD]
        # dropped by decode: the blank, and <s>/</s> when they are the recipe's added outputs after [PAD]
        # (before it they are transcript characters of some corpus, and stay text)
        self.not_text = frozenset(
            {self.blank} | {self.index[t] for t in (BOS, EOS) if self.index.get(t, -1) > self.blank}
        )

    @classmethod
    def from_transcripts(cls, transcripts: Iterable[str], delimiter: bool = False, bos_eos: bool = False) -> CharVocab:
        """The recipe's vocabulary of `transcripts`. delimiter: `|` is in it even when no transcript has a
        space (the recipe appends one to every transcript: data.trailing_delimiter); bos_eos: `<s>`, `</s>`
        after [PAD] (model.bos_eos_tokens)."""
        chars = sorted({c for text in transcripts for c in text} | ({" "} if delimiter else set()))
        tokens = [WORD_DELIMITER if c == " " else c for c in chars]
        return cls([*tokens, UNK, PAD, *((BOS, EOS) if bos_eos else ())])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(WORD_DELIMITER if c == " " else c, self.unk) for c in text]

    def count_unknown(self, text: str) -> int:
        """How many characters of `text` encode() maps to [UNK]."""
        return sum((WORD_DELIMITER if c == " " else c) not in self.index for c in text)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids to text without CTC grouping (blank and the added <s>/</s> dropped, `|` back to spaces)."""
        return ids_to_text(self.tokens, ids, self.not_text)

    def save(self, path: str | Path) -> None:
        write_vocab_json(path, self.tokens)

    @classmethod
    def load(cls, path: str | Path) -> CharVocab:
        return cls(read_vocab_json(path))


@dataclass
class DecoderVocab:
    """ids -> text for any CTC tokenizer's vocabulary: fastctc's ([UNK], [PAD]) or another's (<pad>, <unk>,
    <s>, ...). Unlike CharVocab.decode, the tokenizer's special tokens (`specials`) are dropped too."""

    tokens: list[str]  # in id order
    blank: int
    specials: frozenset[int]
    phones: bool = False  # each token is one phone (Wav2Vec2PhonemeCTCTokenizer): decoded joined by spaces

    def __len__(self) -> int:
        return len(self.tokens)

    def decode(self, ids: Iterable[int]) -> str:
        skip = self.specials | {self.blank}
        if self.phones:  # as Wav2Vec2PhonemeCTCTokenizer decodes: its phone delimiter is a space
            return " ".join(self.tokens[i] for i in ids if i not in skip)
        return ids_to_text(self.tokens, ids, skip)
