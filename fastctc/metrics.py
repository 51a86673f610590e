"""Word, character and phone error rates, corpus-level as jiwer computes them.

Corpus WER = (substitutions + deletions + insertions summed over utterances) / (reference words
summed), not a mean of per-utterance rates. Tokenisation follows jiwer's defaults exactly: for WER,
runs of two or more whitespace characters become one space, the ends are stripped and words are
split on " "; for CER the ends are stripped and every character counts, inner spaces included.
PER is WER's computation over space-separated phones, after folding both sides to the scoring set
(TIMIT's protocol: trained on 48 phones, scored on 39; see fastctc.data.phones).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance (unit costs) with one row of memory."""
    if len(ref) < len(hyp):
        ref, hyp = hyp, ref
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def _check(refs: Sequence[str], hyps: Sequence[str]) -> None:
    if len(refs) != len(hyps):
        raise ValueError(f"error rate: {len(refs)} references but {len(hyps)} hypotheses")


def _words(s: str) -> list[str]:
    return [w for w in re.sub(r"\s\s+", " ", s).strip().split(" ") if w]


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    _check(refs, hyps)
    errors = total = 0
    for r, h in zip(refs, hyps):
        rw, hw = _words(r), _words(h)
        errors += edit_distance(rw, hw)
        total += len(rw)
    if total == 0:
        raise ValueError("WER: the references hold no words")
    return errors / total


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    _check(refs, hyps)
    errors = total = 0
    for r, h in zip(refs, hyps):
        rc, hc = r.strip(), h.strip()
        errors += edit_distance(rc, hc)
        total += len(rc)
    if total == 0:
        raise ValueError("CER: the references hold no characters")
    return errors / total


def per(refs: Sequence[str], hyps: Sequence[str], fold: Mapping[str, str | None] | None = None) -> float:
    """Phone error rate: phone edits summed over the corpus / reference phones summed. Each side is
    split on whitespace and every phone mapped through `fold` first (None in `fold`: removed, as q);
    a phone `fold` does not know is an error, never silently scored."""
    _check(refs, hyps)

    def folded(s: str, side: str) -> list[str]:
        if fold is None:
            return s.split()
        try:
            return [q for q in (fold[p] for p in s.split()) if q is not None]
        except KeyError as e:
            raise ValueError(f"PER: {side} phone {e.args[0]!r} is not in the scoring table") from None

    errors = total = 0
    for r, h in zip(refs, hyps):
        rp = folded(r, "reference")
        errors += edit_distance(rp, folded(h, "hypothesis"))
        total += len(rp)
    if total == 0:
        raise ValueError("PER: the references hold no phones")
    return errors / total
