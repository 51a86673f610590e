"""CTC forced alignment without Triton: the PyTorch path (CPU) and a plain float64 NumPy Viterbi.

Both follow kernels/ctc_viterbi.py's design note: the same states, recursion, tie rule (smaller
back-pointer wins, end state S-1 before S-2) and outputs. The PyTorch path keeps the kernel's bounded
memory (checkpointed traceback over K-frame segments, int8 back-pointers for one segment at a time);
the NumPy reference keeps the whole (T, S) table and is for tests only.
"""

from __future__ import annotations

import math

import numpy as np
import torch

NEG_INF = float("-inf")


def segment_frames(T: int) -> int:
    """K, frames per segment: near 2 sqrt(T), which minimises ceil(T/K) * 4 + K bytes per state."""
    return max(1, min(T, math.ceil(2 * math.sqrt(T))))


def padded_targets(targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """(B, L) padded targets from either layout torch's ctc_loss accepts."""
    if targets.dim() == 2:
        return targets
    lengths = target_lengths.tolist()
    out = torch.zeros((len(lengths), max(lengths, default=0)), dtype=targets.dtype)
    for b, chunk in enumerate(torch.split(targets.cpu(), lengths)):
        out[b, : len(chunk)] = chunk
    return out


def _states(targets, target_lengths, T, V, blank):
    """Per row: state labels (B, N) long, skip (B, N) bool, emit (B, N) bool; N = 2 min(L, T) + 1."""
    B, L = targets.shape
    s_cap = min(L, T)
    n = 2 * s_cap + 1
    s = torch.arange(n)
    k = ((s - 1) // 2).clamp(0, max(s_cap - 1, 0))
    odd = (s % 2) == 1
    lab = torch.where(odd, targets[:, k].long() if s_cap else torch.full((B, n), blank), blank)
    S = 2 * target_lengths.clamp(max=s_cap).long() + 1
    in_s = s[None, :] < S[:, None]
    lab_2 = torch.cat([torch.full((B, 2), -1), lab[:, :-2]], 1)
    skip = odd & (s >= 3) & (lab != lab_2) & in_s
    emit = in_s & (lab >= 0) & (lab < V)
    return lab.clamp(0, V - 1), skip, emit, S, s_cap


def _step(delta, skip, e_t):
    """One frame: (delta_t, k_t) from delta_{t-1} (B, N) and the frame's emissions (B, N)."""
    fill = torch.full_like(delta[:, :1], NEG_INF)
    d1 = torch.cat([fill, delta[:, :-1]], 1)
    d2 = torch.where(skip, torch.cat([fill, fill, delta[:, :-2]], 1), NEG_INF)
    k = (d1 > delta).to(torch.int8)  # strict: ties keep the smaller k
    best = torch.maximum(delta, d1)
    k = torch.where(d2 > best, 2, k).to(torch.int8)
    return e_t + torch.maximum(best, d2), k


@torch.no_grad()
def ctc_align_reference(logits, targets, input_lengths, target_lengths, blank):
    """PyTorch path of ``ctc_align``: (path (B, T) int32, score (B,) float32, lse (B, T) float32)."""
    B, T, V = logits.shape
    targets = padded_targets(targets.cpu(), target_lengths.cpu())
    t_len = input_lengths.cpu().long().clamp(max=T)
    n_lab = target_lengths.cpu().long()
    lab, skip, emit, S, s_cap = _states(targets, n_lab, T, V, blank)
    x = logits.detach().cpu()
    lse = x.float().logsumexp(-1)  # (B, T)

    def emissions(t0, t1):  # (B, t1 - t0, N): the states' log-probs over a few frames only
        g = x[:, t0:t1].float().gather(2, lab[:, None, :].expand(B, t1 - t0, -1))
        return torch.where(emit[:, None, :], g - lse[:, t0:t1, None], NEG_INF)

    K = segment_frames(T)
    n_seg = math.ceil(T / K)
    s = torch.arange(lab.shape[1])
    e0 = emissions(0, 1)[:, 0]
    init = torch.where(s[None, :] < 2, e0, NEG_INF)  # (B, N)

    # pass 1: all frames, two rows, a checkpoint delta_{a-1} at each segment start a
    ckpt = [None] * n_seg
    delta = init
    for t0 in range(0, T, K):
        e = emissions(t0, min(t0 + K, T))
        for t in range(max(t0, 1), min(t0 + K, T)):
            new, _ = _step(delta, skip, e[:, t - t0])
            delta = torch.where((t < t_len)[:, None], new, delta)  # finished rows keep delta_{T'-1}
        if t0 + K < T:
            ckpt[(t0 + K) // K] = delta.clone()
    rows = torch.arange(B)
    d_last = delta[rows, S - 1]
    d_prev = torch.where(S >= 2, delta[rows, (S - 2).clamp(min=0)], NEG_INF)
    score = torch.maximum(d_last, d_prev)
    end = torch.where(d_last >= d_prev, S - 1, S - 2)
    infeasible = (score == NEG_INF) | (n_lab > s_cap) | (t_len == 0)
    score = torch.where(infeasible, NEG_INF, score)
    end = torch.where(infeasible, -1, end)

    # pass 2: last segment first, recompute its back-pointers and trace back through them
    path = np.full((B, T), -1, dtype=np.int32)
    carry = [-1] * B
    for seg in reversed(range(n_seg)):
        t0, t1 = seg * K, min(seg * K + K, T)
        e = emissions(t0, t1)
        bp = torch.zeros((B, t1 - t0, lab.shape[1]), dtype=torch.int8)
        delta = init if t0 == 0 else ckpt[seg]
        for t in range(max(t0, 1), t1):
            delta, bp[:, t - t0] = _step(delta, skip, e[:, t - t0])
        bp = bp.numpy()
        for b in range(B):
            n = int(t_len[b])
            if end[b] < 0 or t0 >= n:
                continue
            hi = min(t1, n)
            state = int(end[b]) if hi == n else carry[b]
            for t in range(hi - 1, t0 - 1, -1):
                path[b, t] = state
                state -= int(bp[b, t - t0, state])
            carry[b] = state
    return torch.from_numpy(path), score.float(), lse


def viterbi_numpy64(log_probs: np.ndarray, labels: list[int], blank: int) -> tuple[list[int] | None, float]:
    """Plain float64 CTC Viterbi of one utterance: log_probs (T, V) -> (state per frame, score);
    (None, -inf) when no path exists. Whole (T, S) tables; for tests."""
    T = log_probs.shape[0]
    ext = [blank]
    for c in labels:
        ext += [c, blank]
    S = len(ext)
    delta = np.full((T, S), -np.inf)
    back = np.zeros((T, S), dtype=np.int64)
    delta[0, :2] = [log_probs[0, ext[s]] for s in range(min(2, S))]
    for t in range(1, T):
        for s in range(S):
            cands = [delta[t - 1, s]]
            cands.append(delta[t - 1, s - 1] if s >= 1 else -np.inf)
            can_skip = s % 2 == 1 and s >= 3 and ext[s] != ext[s - 2]
            cands.append(delta[t - 1, s - 2] if can_skip else -np.inf)
            k = 0
            for j in (1, 2):
                if cands[j] > cands[k]:
                    k = j
            delta[t, s] = log_probs[t, ext[s]] + cands[k]
            back[t, s] = k
    last = delta[T - 1, S - 1]
    prev = delta[T - 1, S - 2] if S >= 2 else -np.inf
    score = max(last, prev)
    if score == -np.inf:
        return None, -np.inf
    s = S - 1 if last >= prev else S - 2
    path = [0] * T
    for t in range(T - 1, -1, -1):
        path[t] = s
        s -= back[t, s]
    return path, float(score)
