"""CTC forced alignment (Viterbi) on raw logits: Triton kernels and launcher.

Design note
-----------
The sibling of kernels/ctc.py's alpha pass: the same states (S = 2L + 1, state s emits l(s) = blank
for even s, c_{(s+1)/2} for odd s) and the same recursion with max in place of log-sum-exp, plus a
back-pointer k_t(s) in {0, 1, 2} saying which predecessor s - k won:

    delta_0(s) = lp_0(l(s)) for s < 2, else -inf
    delta_t(s) = lp_t(l(s)) + max(delta_{t-1}(s), delta_{t-1}(s-1), delta_{t-1}(s-2) if skip(s))
    end        = argmax(delta_{T'-1}(S-1), delta_{T'-1}(S-2))      (S-1 on a tie)
    s_{t-1}    = s_t - k_t(s_t)                                     (traceback)

Ties go to the smaller k (stay, then advance by one), in the kernel and in every reference.
score = max_s delta_{T'-1}(s) over the two end states, the log-probability of the best path;
-inf marks an infeasible pair (fewer frames than labels plus repeats), whose path stays -1.

Bounded memory (checkpointed traceback): a table of back-pointers is T x S bytes even as int8, which
for an hour of audio (T = 180,000 frames at 20 ms, S = 100,001 states for 50,000 characters) is
18 GB. Instead, pass 1 (``_viterbi_checkpoint_kernel``) runs the recursion over all frames keeping
only two rows, and stores delta_{a-1} at every segment start a = K, 2K, ...; pass 2
(``_viterbi_segment_kernel``, launched once per segment, last segment first) recomputes its K frames
from the checkpoint, writes their int8 back-pointers into one (K, S) buffer, and traces back through
them, carrying the state at the segment's first frame to the previous segment. Memory is
ceil(T/K) * S * 4 + K * S bytes per utterance, smallest near K = 2 sqrt(T): for the hour above
85 MB + 85 MB. The recursion runs twice (pass 2 repeats pass 1's arithmetic once).

Each program is one utterance looping over t with ``tl.debug_barrier()`` between frames, the layout
of the alpha kernel: delta_t lives in registers and the shifted delta_{t-1}(s-1), delta_{t-1}(s-2) are
read back from the row stored at the previous step. The traceback is a scalar loop in the same program
after a barrier (it reads back-pointers other threads wrote).

Per-frame log-probabilities of the path (for per-character scores) are one (B, T) gather from the
logits minus lse afterwards: no (B, T, V) float32 tensor is ever allocated.
"""

import torch
import triton
import triton.language as tl

from .ctc import NEG_INF, _num_warps, _row_lse_kernel, _state_labels, _target_layout
from .ctc_viterbi_reference import segment_frames


@triton.jit
def _viterbi_step(delta, prev_row, s, in_s, skip, lp):
    """delta_t and k_t from delta_{t-1} (in registers, and stored at prev_row for the shifted reads)."""
    d1 = tl.load(prev_row + s - 1, mask=in_s & (s >= 1), other=NEG_INF)
    d2 = tl.load(prev_row + s - 2, mask=skip, other=NEG_INF)
    k = tl.where(d1 > delta, 1, 0)  # strict: ties keep the smaller k
    best = tl.maximum(delta, d1)
    k = tl.where(d2 > best, 2, k)
    best = tl.maximum(best, d2)
    return lp + best, k


@triton.jit
def _viterbi_checkpoint_kernel(
    # pointers
    logits_ptr,  # (B, T, V)
    lse_ptr,  # (B, T) float32
    targets_ptr,  # padded (B, S) or concatenated (sum L,)
    target_offsets_ptr,  # (B,) int64
    input_lengths_ptr,  # (B,)
    target_lengths_ptr,  # (B,)
    rows_ptr,  # (B, 2, N_STATES) float32 scratch: delta_{t-1} for the shifted reads
    ckpt_ptr,  # (B, N_SEG, N_STATES) float32 out: delta_{a-1} for segment start a = seg * K, seg >= 1
    end_ptr,  # (B,) int32 out: state at frame T'-1, -1 if infeasible
    score_ptr,  # (B,) float32 out: best path log-probability
    # sizes
    T,
    V,
    S_CAP,
    K,  # frames per segment
    blank,
    # strides
    stride_lb,
    stride_lt,
    stride_lv,
    stride_tgt,
    stride_rb,
    stride_rr,
    stride_cb,
    stride_cs,
    # meta
    BLOCK_S: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    t_len = tl.minimum(tl.load(input_lengths_ptr + b).to(tl.int32), T)
    n_lab = tl.load(target_lengths_ptr + b).to(tl.int32)
    too_long = n_lab > S_CAP
    n_lab = tl.minimum(n_lab, S_CAP)
    S = 2 * n_lab + 1
    s = tl.arange(0, BLOCK_S)
    in_s = s < S
    lab, skip = _state_labels(targets_ptr, target_offsets_ptr, b, s, S, blank, stride_tgt)
    emit = in_s & (lab >= 0) & (lab < V)

    x_row = logits_ptr + b * stride_lb
    lse_row = lse_ptr + b * T
    rows = rows_ptr + b * stride_rb
    ckpt = ckpt_ptr + b * stride_cb

    lp = tl.load(x_row + lab * stride_lv, mask=emit, other=NEG_INF).to(tl.float32)
    delta = tl.where(s < 2, lp - tl.load(lse_row), NEG_INF)  # (BLOCK_S,)
    tl.store(rows + s, delta, mask=in_s)
    if (K == 1) & (t_len > 1):
        tl.store(ckpt + stride_cs + s, delta, mask=in_s)
    tl.debug_barrier()
    for t in range(1, t_len):
        lp = tl.load(x_row + t * stride_lt + lab * stride_lv, mask=emit, other=NEG_INF)
        lp = lp.to(tl.float32) - tl.load(lse_row + t)
        delta, _ = _viterbi_step(delta, rows + ((t - 1) % 2) * stride_rr, s, in_s, skip, lp)
        tl.store(rows + (t % 2) * stride_rr + s, delta, mask=in_s)
        if ((t + 1) % K == 0) & (t + 1 < t_len):  # delta_t: checkpoint of the segment from t + 1
            tl.store(ckpt + ((t + 1) // K) * stride_cs + s, delta, mask=in_s)
        tl.debug_barrier()

    d_last = tl.max(tl.where(s == S - 1, delta, NEG_INF), axis=0)
    d_prev = tl.max(tl.where(s == S - 2, delta, NEG_INF), axis=0)
    score = tl.maximum(d_last, d_prev)
    end = tl.where(d_last >= d_prev, S - 1, S - 2)
    infeasible = (score == NEG_INF) | too_long | (t_len == 0)
    tl.store(score_ptr + b, tl.where(infeasible, NEG_INF, score))
    tl.store(end_ptr + b, tl.where(infeasible, -1, end))


@triton.jit
def _viterbi_segment_kernel(
    # pointers
    logits_ptr,  # (B, T, V)
    lse_ptr,  # (B, T) float32
    targets_ptr,
    target_offsets_ptr,  # (B,) int64
    input_lengths_ptr,  # (B,)
    target_lengths_ptr,  # (B,)
    rows_ptr,  # (B, 2, N_STATES) float32 scratch
    ckpt_ptr,  # (B, N_SEG, N_STATES) float32, from pass 1
    bp_ptr,  # (B, K, N_STATES) int8 scratch: this segment's back-pointers
    end_ptr,  # (B,) int32, from pass 1
    carry_ptr,  # (B,) int32 in/out: the state at frame seg_begin + K - 1 (set by the later segment)
    path_ptr,  # (B, T) int32 out, -1 filled by the launcher
    # sizes
    T,
    V,
    S_CAP,
    K,
    seg,  # this segment covers frames [seg * K, seg * K + K)
    blank,
    # strides
    stride_lb,
    stride_lt,
    stride_lv,
    stride_tgt,
    stride_rb,
    stride_rr,
    stride_cb,
    stride_cs,
    stride_bb,
    stride_bt,
    # meta
    BLOCK_S: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    t_len = tl.minimum(tl.load(input_lengths_ptr + b).to(tl.int32), T)
    end = tl.load(end_ptr + b)
    t0 = seg * K
    if (t0 < t_len) & (end >= 0):
        n_lab = tl.minimum(tl.load(target_lengths_ptr + b).to(tl.int32), S_CAP)
        S = 2 * n_lab + 1
        s = tl.arange(0, BLOCK_S)
        in_s = s < S
        lab, skip = _state_labels(targets_ptr, target_offsets_ptr, b, s, S, blank, stride_tgt)
        emit = in_s & (lab >= 0) & (lab < V)
        x_row = logits_ptr + b * stride_lb
        lse_row = lse_ptr + b * T
        rows = rows_ptr + b * stride_rb
        bp = bp_ptr + b * stride_bb
        t1 = tl.minimum(t0 + K, t_len)  # frames [t0, t1) of this utterance

        if t0 == 0:
            lp = tl.load(x_row + lab * stride_lv, mask=emit, other=NEG_INF).to(tl.float32)
            delta = tl.where(s < 2, lp - tl.load(lse_row), NEG_INF)
            tl.store(bp + s, tl.zeros([BLOCK_S], tl.int8), mask=in_s)  # frame 0 has no predecessor
            t_first = 1
        else:
            delta = tl.load(ckpt_ptr + b * stride_cb + seg * stride_cs + s, mask=in_s, other=NEG_INF)
            t_first = t0
        tl.store(rows + ((t_first - 1) % 2) * stride_rr + s, delta, mask=in_s)
        tl.debug_barrier()
        for t in range(t_first, t1):
            lp = tl.load(x_row + t * stride_lt + lab * stride_lv, mask=emit, other=NEG_INF)
            lp = lp.to(tl.float32) - tl.load(lse_row + t)
            delta, k = _viterbi_step(delta, rows + ((t - 1) % 2) * stride_rr, s, in_s, skip, lp)
            tl.store(rows + (t % 2) * stride_rr + s, delta, mask=in_s)
            tl.store(bp + (t - t0) * stride_bt + s, k.to(tl.int8), mask=in_s)
            tl.debug_barrier()  # row t (and its back-pointers) visible before the next step / traceback

        # traceback through this segment: from T'-1 if it ends here, else from the carried state
        state = tl.where(t1 == t_len, end, tl.load(carry_ptr + b))
        path = path_ptr + b * T
        for i in range(0, t1 - t0):
            t = t1 - 1 - i
            tl.store(path + t, state)
            state = state - tl.load(bp + (t - t0) * stride_bt + state).to(tl.int32)
        tl.debug_barrier()  # every thread has read the carry before it is overwritten
        tl.store(carry_ptr + b, state)


def ctc_align_triton(logits, targets, input_lengths, target_lengths, blank):
    """Best CTC path per row: (path (B, T) int32 state per frame, -1 past T' or if infeasible;
    score (B,) float32 log-probability of the path, -inf if infeasible; lse (B, T) float32)."""
    B, T, V = logits.shape
    device = logits.device
    offsets, stride_tgt, s_cap = _target_layout(targets, target_lengths, T)
    n_states = 2 * s_cap + 1
    block_s = max(triton.next_power_of_2(n_states), 16)
    block_v = max(triton.next_power_of_2(V), 16)
    K = segment_frames(T)
    n_seg = triton.cdiv(T, K)

    lse = torch.empty((B, T), device=device, dtype=torch.float32)
    r = max(1, min(256, 8192 // block_v))
    _row_lse_kernel[(triton.cdiv(B * T, r),)](
        logits,
        lse,
        B * T,
        T,
        V,
        logits.stride(0),
        logits.stride(1),
        logits.stride(2),
        ROWS=r,
        BLOCK_V=block_v,
        num_warps=4,
    )

    rows = torch.empty((B, 2, n_states), device=device, dtype=torch.float32)
    ckpt = torch.empty((B, n_seg, n_states), device=device, dtype=torch.float32)
    end = torch.empty((B,), device=device, dtype=torch.int32)
    score = torch.empty((B,), device=device, dtype=torch.float32)
    warps = _num_warps(block_s)
    _viterbi_checkpoint_kernel[(B,)](
        logits,
        lse,
        targets,
        offsets,
        input_lengths,
        target_lengths,
        rows,
        ckpt,
        end,
        score,
        T,
        V,
        s_cap,
        K,
        blank,
        logits.stride(0),
        logits.stride(1),
        logits.stride(2),
        stride_tgt,
        rows.stride(0),
        rows.stride(1),
        ckpt.stride(0),
        ckpt.stride(1),
        BLOCK_S=block_s,
        num_warps=warps,
    )

    bp = torch.empty((B, K, n_states), device=device, dtype=torch.int8)
    carry = torch.full((B,), -1, device=device, dtype=torch.int32)
    path = torch.full((B, T), -1, device=device, dtype=torch.int32)
    for seg in reversed(range(n_seg)):  # one launch per segment (~2 sqrt(T)), none per frame
        _viterbi_segment_kernel[(B,)](
            logits,
            lse,
            targets,
            offsets,
            input_lengths,
            target_lengths,
            rows,
            ckpt,
            bp,
            end,
            carry,
            path,
            T,
            V,
            s_cap,
            K,
            seg,
            blank,
            logits.stride(0),
            logits.stride(1),
            logits.stride(2),
            stride_tgt,
            rows.stride(0),
            rows.stride(1),
            ckpt.stride(0),
            ckpt.stride(1),
            bp.stride(0),
            bp.stride(1),
            BLOCK_S=block_s,
            num_warps=warps,
        )
    return path, score, lse
