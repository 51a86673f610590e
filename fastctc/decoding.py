"""Greedy CTC decoding: argmax per frame, collapse repeats, drop the blank."""

from __future__ import annotations

import torch

from .vocab import CharVocab


def greedy_ids(logits: torch.Tensor, lengths: torch.Tensor, blank: int) -> list[list[int]]:
    """logits (B, T, V), lengths (B,) -> one list of label ids per row."""
    best = logits.argmax(-1)  # (B, T)
    # ids and lengths come to the host in one transfer (each transfer waits for the device)
    packed = torch.cat([best, torch.as_tensor(lengths, device=best.device).to(best.dtype)[:, None]], 1).cpu()
    best, lengths = packed[:, :-1], packed[:, -1]
    out = []
    for row, n in zip(best, lengths.tolist()):
        row = row[:n]
        keep = torch.ones_like(row, dtype=torch.bool)
        keep[1:] = row[1:] != row[:-1]  # first frame of each run
        keep &= row != blank
        out.append(row[keep].tolist())
    return out


def greedy_decode(logits: torch.Tensor, lengths: torch.Tensor, vocab: CharVocab) -> list[str]:
    return [vocab.decode(ids) for ids in greedy_ids(logits, lengths, vocab.blank)]
