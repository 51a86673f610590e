"""Per-utterance error report (`fastctc eval --report DIR`), in the spirit of sclite's outputs.

Writes into DIR:
- ``summary.json``: corpus totals; ``wer``/``cer`` are the same corpus rates fastctc.metrics (and jiwer)
  compute: errors summed over utterances divided by reference words / characters summed;
- ``utterances.jsonl``: one line per utterance: id, reference, hypothesis, WER, CER and the counts;
- ``alignment.pra``: each utterance's word alignment as sclite's .pra prints it (REF/HYP/Eval lines,
  errors upper-cased, `***` for the missing side, S/D/I marked);
- ``confusions.txt``: the most frequent substitutions (ref -> hyp), deletions and insertions;
- ``worst.txt``: the utterances with the most word errors.

Words are split as fastctc.metrics (jiwer's defaults) split them; the alignment is a Levenshtein
alignment with unit costs, so each utterance's S + D + I equals its word edit distance.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import FastCTCError
from ..metrics import _words, edit_distance


class ReportError(FastCTCError, ValueError):
    """A report directory that cannot be written (the message names it and the fix)."""


@dataclass
class Utterance:
    id: str
    ref: str
    hyp: str
    ref_words: int
    hits: int
    subs: int
    dels: int
    ins: int
    ref_chars: int
    char_errors: int

    @property
    def word_errors(self) -> int:
        return self.subs + self.dels + self.ins

    def row(self) -> dict:
        return {
            **asdict(self),
            "wer": self.word_errors / self.ref_words if self.ref_words else None,
            "cer": self.char_errors / self.ref_chars if self.ref_chars else None,
        }


def align_words(ref: list[str], hyp: list[str]) -> list[tuple[str, str | None, str | None]]:
    """Levenshtein alignment: (op, ref word, hyp word) with op C (correct), S, D (hyp None), I (ref None).
    On equal cost the traceback prefers a match or substitution, then a deletion, then an insertion."""
    n, m = len(ref), len(hyp)
    d = [[0] * (m + 1) for _ in range(n + 1)]  # d[i][j]: distance of ref[:i] to hyp[:j]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]), d[i - 1][j] + 1, d[i][j - 1] + 1)
    ops, i, j = [], n, m
    while i or j:
        if i and j and d[i][j] == d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            ops.append(("C" if ref[i - 1] == hyp[j - 1] else "S", ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i and d[i][j] == d[i - 1][j] + 1:
            ops.append(("D", ref[i - 1], None))
            i -= 1
        else:
            ops.append(("I", None, hyp[j - 1]))
            j -= 1
    return ops[::-1]


def score_utterance(uid: str, ref: str, hyp: str) -> tuple[Utterance, list]:
    ops = align_words(_words(ref), _words(hyp))
    count = Counter(op for op, _, _ in ops)
    rc, hc = ref.strip(), hyp.strip()
    u = Utterance(
        uid, ref, hyp, len(_words(ref)), count["C"], count["S"], count["D"], count["I"], len(rc), edit_distance(rc, hc)
    )
    return u, ops


def pra_block(u: Utterance, ops) -> str:
    """One utterance as sclite's .pra shows it."""
    cols = []
    for op, r, h in ops:
        if op == "C":
            r_s, h_s = r.lower(), h.lower()
        else:
            r_s = "*" * len(h) if r is None else r.upper()
            h_s = "*" * len(r) if h is None else h.upper()
        width = max(len(r_s), len(h_s), 1)
        cols.append((r_s.ljust(width), h_s.ljust(width), ("" if op == "C" else op).ljust(width)))
    lines = [f"id: ({u.id})", f"Scores: (#C #S #D #I) {u.hits} {u.subs} {u.dels} {u.ins}"]
    for label, k in (("REF:  ", 0), ("HYP:  ", 1), ("Eval: ", 2)):
        lines.append((label + " ".join(c[k] for c in cols)).rstrip())
    return "\n".join(lines) + "\n"


def build_report(ids: Sequence[str], refs: Sequence[str], hyps: Sequence[str]) -> tuple[list, dict]:
    if not len(ids) == len(refs) == len(hyps):
        raise ValueError(f"report: {len(ids)} ids, {len(refs)} references, {len(hyps)} hypotheses")
    scored = [score_utterance(i, r, h) for i, r, h in zip(ids, refs, hyps)]
    us = [u for u, _ in scored]
    words, chars = sum(u.ref_words for u in us), sum(u.ref_chars for u in us)
    if words == 0:
        raise ValueError("report: the references hold no words")
    subs, dels, ins = (sum(getattr(u, k) for u in us) for k in ("subs", "dels", "ins"))
    summary = {
        "utterances": len(us),
        "ref_words": words,
        "hits": sum(u.hits for u in us),
        "subs": subs,
        "dels": dels,
        "ins": ins,
        "word_errors": subs + dels + ins,
        "wer": (subs + dels + ins) / words,
        "ref_chars": chars,
        "char_errors": sum(u.char_errors for u in us),
        "cer": sum(u.char_errors for u in us) / chars if chars else None,
        "utterances_with_errors": sum(u.word_errors > 0 for u in us),
    }
    return scored, summary


def check_report_dir(out_dir: str | Path) -> None:
    """Refuse a report directory that cannot be written, before any work: a file in the way, or a
    parent that is missing or read-only (ReportError names the path and the fix)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--report {out}: a file is in the way; the report is a directory (choose another path)")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise ReportError(f"--report {out}: {parent} is not writable (choose another path)")


def write_report(
    out_dir: str | Path, ids: Sequence[str], refs: Sequence[str], hyps: Sequence[str], top: int = 20
) -> dict:
    """Write the report files (see the module docstring) into out_dir; returns the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scored, summary = build_report(ids, refs, hyps)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    with open(out / "utterances.jsonl", "w", encoding="utf-8") as f:
        for u, _ in scored:
            f.write(json.dumps(u.row(), ensure_ascii=False) + "\n")
    with open(out / "alignment.pra", "w", encoding="utf-8") as f:
        for u, ops in scored:
            f.write(pra_block(u, ops) + "\n")
    subs, dels, ins = Counter(), Counter(), Counter()
    for _, ops in scored:
        for op, r, h in ops:
            if op == "S":
                subs[(r, h)] += 1
            elif op == "D":
                dels[r] += 1
            elif op == "I":
                ins[h] += 1
    lines = [f"substitutions ({summary['subs']}), most frequent first: count  ref -> hyp"]
    lines += [f"{n:6d}  {r} -> {h}" for (r, h), n in subs.most_common(top)]
    lines += ["", f"deletions ({summary['dels']}): count  ref word"]
    lines += [f"{n:6d}  {r}" for r, n in dels.most_common(top)]
    lines += ["", f"insertions ({summary['ins']}): count  hyp word"]
    lines += [f"{n:6d}  {h}" for h, n in ins.most_common(top)]
    (out / "confusions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    worst = sorted(
        (u for u, _ in scored if u.word_errors),
        key=lambda u: (-u.word_errors, -u.word_errors / max(u.ref_words, 1), u.id),
    )
    lines = ["errors  WER     id  |  REF  |  HYP"]
    for u in worst[:top]:
        rate = "    -" if not u.ref_words else f"{u.word_errors / u.ref_words:.3f}"
        lines.append(f"{u.word_errors:6d}  {rate}  {u.id}  |  {u.ref}  |  {u.hyp}")
    (out / "worst.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary
