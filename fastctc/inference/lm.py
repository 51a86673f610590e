"""CTC beam search with an optional word n-gram LM (flashlight-text's lexicon decoder, KenLM inside).

Why flashlight-text (the `[lm]` extra) and not pyctcdecode + kenlm: flashlight-text ships a cp311
manylinux wheel with KenLM compiled in (ARPA and KenLM binary files load without building anything),
its beam search is C++ (pyctcdecode's is Python, one loop per frame), and it is what torchaudio's
``ctc_decoder`` wraps. kenlm on PyPI is a source package that needs a C++ toolchain at install time.

Decoding: log-softmax over the whole batch in torch, then one C++ call per utterance on its
(T_b, V) float32 rows; fastctc runs no Python per frame.

Words come from a lexicon: every word the LM knows whose characters the model's vocabulary spells,
spelled as its characters then the word delimiter `|` (the wav2letter/torchaudio lexicon layout).
An ARPA file lists its words in the \\1-grams section; a KenLM binary does not expose them, so it
needs a word list (``lexicon=``, one word per line, or `word c h a r s |` lines).
Without an LM the decoder is lexicon-free (any character sequence) with a zero LM.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import FastCTCError

WORD_DELIMITER = "|"
KENLM_BINARY_MAGIC = b"mmap lm "  # the first bytes of every KenLM binary file


class LMError(FastCTCError, ValueError):
    """A language model, lexicon or decoder setting fastctc cannot use (the message says why)."""


def _flashlight():
    try:
        from flashlight.lib.text import decoder, dictionary
        from flashlight.lib.text.decoder.kenlm import KenLM
    except ImportError as err:
        raise LMError(
            f"beam search needs flashlight-text ({err}); install it with: pip install 'fastctc[lm]'"
        ) from None
    return decoder, dictionary, KenLM


@dataclass(frozen=True)
class BeamOptions:
    """flashlight's LexiconDecoderOptions, with torchaudio's ctc_decoder defaults."""

    beam: int = 50  # hypotheses kept per frame
    beam_tokens: int | None = None  # tokens expanded per frame (None: the whole vocabulary)
    beam_threshold: float = 50.0  # drop hypotheses this far below the frame's best
    lm_weight: float = 2.0
    word_score: float = 0.0  # added per word (positive favours more words)

    def check(self) -> None:
        if self.beam < 1:
            raise LMError(f"--beam must be >= 1, got {self.beam}")
        if self.beam_tokens is not None and self.beam_tokens < 1:
            raise LMError(f"beam_tokens must be >= 1, got {self.beam_tokens}")
        for name in ("beam_threshold", "lm_weight", "word_score"):
            if not math.isfinite(getattr(self, name)):
                raise LMError(f"{name} must be a finite number, got {getattr(self, name)}")


def arpa_words(path: str | Path) -> list[str]:
    """The words of an ARPA file's \\1-grams section (<s>, </s>, <unk> left out), in file order."""
    words, in_unigrams = [], False
    with open(path, encoding="utf-8", errors="strict") as f:
        for line in f:
            line = line.strip()
            if line == "\\1-grams:":
                in_unigrams = True
            elif in_unigrams and (line.startswith("\\") or not line):
                if words:  # the blank line or \2-grams: after the section ends it
                    break
            elif in_unigrams:
                fields = line.split()
                if len(fields) >= 2 and fields[1] not in ("<s>", "</s>", "<unk>"):
                    words.append(fields[1])
    if not words:
        raise LMError(f"{path}: no \\1-grams section with words; is it an ARPA file?")
    return words


def lexicon_words(path: str | Path) -> list[str]:
    """First field of each line of a word list or a `word c h a r s |` lexicon."""
    p = Path(path)
    if not p.is_file():
        raise LMError(f"lexicon file not found: {p}")
    words = [line.split()[0] for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not words:
        raise LMError(f"{p}: the lexicon is empty")
    return words


def _spell(word: str, index: dict[str, int]) -> list[int] | None:
    """Token ids of the word's characters + `|` (when the vocabulary has it), trying the word as
    written, then lower/upper case."""
    for form in (word, word.lower(), word.upper()):
        ids = [index.get(c) for c in form]
        if None not in ids:
            return ids + ([index[WORD_DELIMITER]] if WORD_DELIMITER in index else [])
    return None


class BeamDecoder:
    """Beam search over a batch of CTC logits, with or without a word n-gram LM.

    tokens: the model's vocabulary in id order (vocab.json), with `|` as the word delimiter.
    blank: the CTC blank id. skip: ids dropped from the returned labels (<s>, </s>, [UNK]), as greedy
    decoding drops them; the search itself may still pass through them.
    """

    def __init__(
        self,
        tokens: Sequence[str],
        blank: int,
        lm: str | Path | None = None,
        lexicon: str | Path | None = None,
        options: BeamOptions = BeamOptions(),
        skip: Sequence[int] = (),
    ):
        options.check()
        fl, fl_dict, KenLM = _flashlight()
        self.tokens, self.blank, self.skip = list(tokens), int(blank), frozenset(skip)
        index = {t: i for i, t in enumerate(self.tokens)}
        # a vocabulary trained on one-word transcripts has no `|`: words then end without a delimiter
        # and the blank stands in for flashlight's silence token
        self.sil = index.get(WORD_DELIMITER, self.blank)
        self.options = options
        self.lm_path = None if lm is None else Path(lm)
        if self.lm_path is None:
            self.lm, self.trie = fl.ZeroLM(), None
            self.words: list[str] = []
        else:
            self.words = self._lexicon(self.lm_path, lexicon)
            spelled = [(w, _spell(w, index)) for w in self.words]
            spelled = [(w, ids) for w, ids in spelled if ids is not None]
            if not spelled:
                raise LMError(
                    f"{self.lm_path}: none of its {len(self.words)} words can be spelled with the model's "
                    f"vocabulary ({''.join(t for t in self.tokens if len(t) == 1)}); is it the right LM?"
                )
            self.word_dict = fl_dict.Dictionary([w for w, _ in spelled] + ["<unk>"])
            try:
                self.lm = KenLM(str(self.lm_path), self.word_dict)
            except RuntimeError as err:  # KenLM's FormatLoadException: the reason is its last line
                reason = str(err).strip().splitlines()[-1]
                raise LMError(f"{self.lm_path}: KenLM cannot load it: {reason}") from None
            # Trie of spellings scored by each word's unigram LM score, smeared so that a prefix
            # carries its best completion's score (torchaudio's ctc_decoder does the same)
            self.trie = fl.Trie(len(self.tokens), self.sil)
            start = self.lm.start(False)
            for w, ids in spelled:
                word_id = self.word_dict.get_index(w)
                _, score = self.lm.score(start, word_id)
                self.trie.insert(ids, word_id, score)
            self.trie.smear(fl.SmearingMode.MAX)
            self.unk_word = self.word_dict.get_index("<unk>")
        self._decoder = self._make_decoder(options)

    @staticmethod
    def _lexicon(lm: Path, lexicon: str | Path | None) -> list[str]:
        if not lm.is_file():
            raise LMError(f"language model file not found: {lm} (pass an ARPA or KenLM binary file to --lm)")
        if lexicon is not None:
            return lexicon_words(lexicon)
        with open(lm, "rb") as f:
            is_binary = f.read(len(KENLM_BINARY_MAGIC)) == KENLM_BINARY_MAGIC
        if is_binary:
            raise LMError(
                f"{lm} is a KenLM binary, which does not list its words: pass --lexicon FILE "
                "(one word per line), or the ARPA file it was built from"
            )
        return arpa_words(lm)

    def _make_decoder(self, o: BeamOptions):
        fl = _flashlight()[0]
        beam_tokens = len(self.tokens) if o.beam_tokens is None else o.beam_tokens
        if self.trie is None:
            opts = fl.LexiconFreeDecoderOptions(
                o.beam, beam_tokens, o.beam_threshold, 0.0, 0.0, False, fl.CriterionType.CTC
            )
            return fl.LexiconFreeDecoder(opts, self.lm, self.sil, self.blank, [])
        opts = fl.LexiconDecoderOptions(
            o.beam,
            beam_tokens,
            o.beam_threshold,
            o.lm_weight,
            o.word_score,
            float("-inf"),
            0.0,
            False,
            fl.CriterionType.CTC,
        )
        return fl.LexiconDecoder(opts, self.trie, self.lm, self.sil, self.blank, self.unk_word, [], False)

    def with_options(self, **changes) -> BeamDecoder:
        """The same LM and lexicon with other weights (for a sweep: the LM is loaded once)."""
        options = BeamOptions(**{**self.options.__dict__, **changes})
        options.check()
        other = object.__new__(BeamDecoder)
        other.__dict__.update(self.__dict__)
        other.options, other._decoder = options, self._make_decoder(options)
        return other

    def decode_log_probs(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """log_probs (B, T, V) float32 on CPU, lengths (B,) -> each row's best label ids (CTC-collapsed,
        blanks dropped; the word delimiter kept)."""
        if log_probs.dim() != 3 or log_probs.shape[-1] != len(self.tokens):
            raise LMError(f"decode: expected (B, T, {len(self.tokens)}) log-probs, got {tuple(log_probs.shape)}")
        lp = log_probs.detach().to("cpu", torch.float32).contiguous()
        B, T, V = lp.shape
        base, row_bytes = lp.data_ptr(), T * V * lp.element_size()
        out = []
        for b, n in enumerate(lengths.tolist()):  # one C++ call per utterance; no Python per frame
            n = min(int(n), T)
            if n == 0:
                out.append([])
                continue
            best = self._decoder.decode(base + b * row_bytes, n, V)[0]
            ids, prev = [], None
            for i in list(best.tokens)[1:-1]:  # the (n,) frame path; flashlight adds a silence at each end
                if i != prev and i != self.blank and i not in self.skip:
                    ids.append(i)
                prev = i
            out.append(ids)
        return out

    def decode(self, logits: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """Raw logits (B, T, V) from the model -> label ids per row."""
        return self.decode_log_probs(logits.float().log_softmax(-1), lengths)


def decoder_for(
    loaded,
    lm: str | Path | None = None,
    lexicon: str | Path | None = None,
    beam: int | None = None,
    options: BeamOptions | None = None,
    search: bool = False,
) -> BeamDecoder | None:
    """The decoder of `transcribe`/`eval` for a loaded acoustic model (fastctc.inference.model): beam search
    when a word LM (`lm`), a `beam` width or a `search` over LM weights is asked for (`beam` defaults to 50),
    else None, greedy decoding. A bad LM or lexicon fails here, before any audio is read."""
    if lm is None and beam is None and not search:
        return None
    options = dataclasses.replace(options or BeamOptions(), beam=beam or 50)
    return BeamDecoder(
        loaded.vocab.tokens, loaded.blank, lm=lm, lexicon=lexicon, options=options, skip=loaded.vocab.specials
    )
