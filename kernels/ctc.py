"""Fused log-softmax + CTC loss on raw logits: Triton kernels, launcher, autograd.Function.

Design note
-----------
One utterance: logits x (T, V), lse_t = logsumexp_v x[t, v], log-probs lp_t(v) = x[t, v] - lse_t.
The L targets c_1..c_L expand to S = 2L + 1 states; state s emits l(s) = blank for even s and
c_{(s+1)/2} for odd s. T' <= T is the utterance's input length. Recursions (Graves et al. 2006,
sections 4.1-4.2), all in float32 log space:

    alpha_0(s)  = lp_0(l(s)) for s < 2, else -inf
    alpha_t(s)  = lp_t(l(s)) + lse(alpha_{t-1}(s), alpha_{t-1}(s-1), alpha_{t-1}(s-2) if skip(s))
                  skip(s): l(s) is a label and l(s) != l(s-2)  (repeats need a blank between them)
    loss        = -log Z,  log Z = lse(alpha_{T'-1}(S-1), alpha_{T'-1}(S-2))
    beta_t(s)   = log-prob of frames t+1..T'-1 given state s at frame t (t's emission excluded)
    E_t(s)      = beta_t(s) + lp_t(l(s)),  with a virtual E_{T'} = 0 at s = S-1, -inf elsewhere
    beta_t(s)   = lse(E_{t+1}(s), E_{t+1}(s+1), E_{t+1}(s+2) if skip(s+2))
    gamma_t(s)  = exp(alpha_t(s) + beta_t(s) - log Z)           (occupancy; sums to 1 over s)
                  computed as exp(alpha_t + beta_t) / sum_s exp(alpha_t + beta_t), which is exact
                  (the sum is Z at every frame) and cancels rounding common to a frame

Gradient with respect to the logits (what torch's ctc_loss backward followed by log_softmax's
backward gives, since the occupancies of a frame sum to 1):

    dloss/dx[t, v] = g * (softmax_t(v) - sum_{s: l(s) = v} gamma_t(s))   for t < T'
                   = 0                                                  for t >= T'

g is the row's incoming gradient: grad_out[b] ("none"), grad_out ("sum"),
grad_out / max(L, 1) / B ("mean"). An infeasible row gets zeros (see numerical safety).

Kernels (run in this order; the first two in forward, the last in backward):
1. ``_row_lse_kernel``: parallel over (B*T) rows, writes lse (B, T) float32. It takes the V-wide
   max/sum reductions off the sequential path of the recursions.
2. ``_ctc_alpha_kernel``: one program per utterance, a loop over t. alpha_t (BLOCK_S lanes) lives
   in registers; the shifted values alpha_{t-1}(s-1), alpha_{t-1}(s-2) are read back from the row
   the program stored in the alpha table at the previous step, after ``tl.debug_barrier()``
   (__syncthreads, which also orders global memory inside a block). Reads row t-1 and writes row
   t, so one barrier per step is enough. The log-probs of the states' labels are gathered from
   logits row t (one row of V, an L1/L2 hit) minus lse_t.
3. ``_ctc_beta_grad_kernel``: one program per utterance, t from T'-1 down to 0, same shift trick
   with two ping-pong scratch rows for E. Per frame it forms gamma, sums the blank states in
   registers, scatter-adds the label states into a V-wide float32 occupancy row with atomics
   (labels repeat), reads that row back after the barrier, and writes the gradient row once, in
   the logits' dtype. Three occupancy rows rotate (see the barrier argument). Frames t >= T' get
   exact zeros.

Barrier argument. The threads of a program exchange values only through per-utterance global
rows, and ``tl.debug_barrier()`` (bar.sync: every store and atomic a thread of the block made
before it is visible to the whole block after it) is the only thing that orders them. Barrier k
ends step k; the beta kernel has a barrier -1 before its loop. A row is safe when a barrier lies
between every write to it and every read of what it held, in both orders:
  alpha rows (alpha kernel; R = T when saved, 2 otherwise): step t reads row (t-1) % R, written
      at step t-1 before barrier t-1, and writes row t % R after barrier t-1; with R = 2 that row
      was last read at step t-1, before barrier t-1.
  E rows (beta kernel, 2 rows): step i reads row (i+1) % 2 (written at step i-1, or before
      barrier -1 for i = 0) after barrier i-1, and writes row i % 2 after barrier i-1; that row
      was last read at step i-1, before barrier i-1.
  occupancy rows (beta kernel, 3 rows): step i adds into row i % 3 before barrier i and reads it
      after. Step i zeroes row (i+2) % 3 after its read: that row was read at step i-1, before
      barrier i, and is next added into at step i+2, after barrier i+1. (Zeroing row (i+1) % 3
      instead would share the window between barriers i and i+1 with step i+1's atomics into
      it: a race between warps.) Rows 0 and 1 are added into at steps 0 and 1 before any step
      zeroes them, so the program zeroes them before barrier -1; row 2 is zeroed at step 0.
The atomics are relaxed and CTA-scoped: each program owns its rows, and the barrier orders them.

Saved for backward: log-alpha (B, T, 2*S_cap + 1) float32, lse (B, T) float32 and log Z (B,)
float32 (it marks infeasible rows), where S_cap = min(longest target, T): the padded width, or the
longest of target_lengths for 1-D concatenated targets. For LibriSpeech B=8, T=1750, L=550 that
is 8*1750*1101*4 B = 61.7 MB; torch's native path keeps log-alpha and log-beta of that size plus
(T, B, V) float32 log-probs and gradient. No (B, T, V) float32 tensor is ever allocated; without
grad only two alpha rows per utterance are kept.

Numerical safety: every log-sum-exp shifts by its max and replaces a -inf max by 0, so
exp(-inf - 0) = 0 and log(0) = -inf: no (-inf) - (-inf). gamma adds alpha and beta and never
subtracts a log-prob, so a -inf log-prob cannot make a NaN. An infeasible row (log Z = -inf) gets
an all-zero gradient whether or not zero_infinity is set (torch gives NaN without it); its loss is
inf, or 0 under zero_infinity. The atomic sums run in no fixed order (as in torch's CUDA ctc
backward, which uses atomicAdd too): results can differ run to run at float32 rounding level.
"""

import contextlib

import torch
import triton
import triton.language as tl

from .ctc_reference import reduce_losses

NEG_INF = tl.constexpr(float("-inf"))  # jit code may read only constexpr globals


@triton.jit
def _logsumexp3(a, b, c):
    m = tl.maximum(tl.maximum(a, b), c)
    m = tl.where(m == NEG_INF, 0.0, m)  # all -inf: exp(-inf) = 0, log(0) = -inf, never NaN
    return m + tl.log(tl.exp(a - m) + tl.exp(b - m) + tl.exp(c - m))


@triton.jit
def _to_output_dtype(x, dtype: tl.constexpr):
    """float32 -> dtype, round to nearest even."""
    if dtype == tl.bfloat16:
        # Round in integer arithmetic first: the compiled cast rounds to nearest even, but
        # Triton's interpreter truncates float32 -> bf16, which would shift every gradient by up
        # to one bf16 ulp in the tests. On the GPU the cast below is then exact (a no-op rounding).
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


# Sizes that change from batch to batch (T and what it multiplies) are not specialised on
# divisibility by 16 or == 1: each distinct specialisation is another compile (per rank, in
# epoch 1). The recursions step through one frame at a time and gain nothing from it. The row
# log-sum-exp kernel keeps its strides specialised, so its V-wide rows vectorise (bandwidth-bound).
@triton.jit(do_not_specialize=["n_rows", "T"])
def _row_lse_kernel(
    # pointers
    logits_ptr,  # (B, T, V) any float dtype
    lse_ptr,  # (B, T) float32, contiguous
    # sizes
    n_rows,
    T,
    V,
    # strides
    stride_lb,
    stride_lt,
    stride_lv,
    # meta
    ROWS: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)  # (ROWS,)
    v = tl.arange(0, BLOCK_V)  # (BLOCK_V,)
    row_ok = rows < n_rows
    offs = (rows // T) * stride_lb + (rows % T) * stride_lt
    mask = row_ok[:, None] & (v < V)[None, :]
    x = tl.load(logits_ptr + offs[:, None] + v[None, :] * stride_lv, mask=mask, other=NEG_INF)
    x = x.to(tl.float32)  # (ROWS, BLOCK_V)
    m = tl.max(x, axis=1)
    m = tl.where(m == NEG_INF, 0.0, m)
    lse = m + tl.log(tl.sum(tl.exp(x - m[:, None]), axis=1))
    tl.store(lse_ptr + rows, lse, mask=row_ok)


@triton.jit
def _state_labels(targets_ptr, target_offsets_ptr, b, s, S, blank, stride_tgt):
    """Label of each state, and whether state s may be entered from s-2 (skip)."""
    in_s = s < S
    is_label = ((s % 2) == 1) & in_s
    k = (s - 1) // 2  # target index of odd state s
    base = targets_ptr + tl.load(target_offsets_ptr + b)
    lab = tl.load(base + k * stride_tgt, mask=is_label, other=0).to(tl.int32)
    lab = tl.where(is_label, lab, blank)
    lab_2 = tl.load(base + (k - 1) * stride_tgt, mask=is_label & (s >= 3), other=0).to(tl.int32)
    skip = is_label & (s >= 3) & (lab != lab_2)
    return lab, skip


@triton.jit(do_not_specialize=["T", "S_CAP", "ALPHA_ROWS", "stride_lb", "stride_ab", "stride_at"])
def _ctc_alpha_kernel(
    # pointers
    logits_ptr,  # (B, T, V)
    lse_ptr,  # (B, T) float32
    targets_ptr,  # padded (B, S) or concatenated (sum L,), int32/int64
    target_offsets_ptr,  # (B,) int64: element offset of row b's first label
    input_lengths_ptr,  # (B,)
    target_lengths_ptr,  # (B,)
    alpha_ptr,  # (B, ALPHA_ROWS, N_STATES) float32
    log_z_ptr,  # (B,) float32 out
    # sizes
    T,
    V,
    S_CAP,  # longest target this launch can hold; longer ones cannot be aligned
    ALPHA_ROWS,  # T when alpha is saved for backward, 2 (ping-pong) otherwise
    blank,
    # strides
    stride_lb,
    stride_lt,
    stride_lv,
    stride_tgt,
    stride_ab,
    stride_at,
    # meta
    BLOCK_S: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    t_len = tl.minimum(tl.load(input_lengths_ptr + b).to(tl.int32), T)
    n_lab = tl.load(target_lengths_ptr + b).to(tl.int32)
    too_long = n_lab > S_CAP  # needs more frames than T (or more labels than given)
    n_lab = tl.minimum(n_lab, S_CAP)
    S = 2 * n_lab + 1
    s = tl.arange(0, BLOCK_S)
    in_s = s < S
    lab, skip = _state_labels(targets_ptr, target_offsets_ptr, b, s, S, blank, stride_tgt)
    emit = in_s & (lab >= 0) & (lab < V)  # out-of-range ids read nothing and emit -inf

    # int64 offsets per utterance (b); t * stride stays inside one utterance's slice, < 2^31
    x_row = logits_ptr + b * stride_lb
    lse_row = lse_ptr + b * T
    a_row = alpha_ptr + b * stride_ab

    # frame 0 (T >= 1 always; a row with t_len = 0 gets its log Z set below)
    lp = tl.load(x_row + lab * stride_lv, mask=emit, other=NEG_INF).to(tl.float32)
    alpha = tl.where(s < 2, lp - tl.load(lse_row), NEG_INF)  # (BLOCK_S,)
    tl.store(a_row + s, alpha, mask=in_s)
    tl.debug_barrier()
    for t in range(1, t_len):
        prev = a_row + ((t - 1) % ALPHA_ROWS) * stride_at
        a1 = tl.load(prev + s - 1, mask=in_s & (s >= 1), other=NEG_INF)
        a2 = tl.load(prev + s - 2, mask=skip, other=NEG_INF)
        lp = tl.load(x_row + t * stride_lt + lab * stride_lv, mask=emit, other=NEG_INF)
        lp = lp.to(tl.float32) - tl.load(lse_row + t)
        alpha = lp + _logsumexp3(alpha, a1, a2)
        tl.store(a_row + (t % ALPHA_ROWS) * stride_at + s, alpha, mask=in_s)
        tl.debug_barrier()  # row t visible to every thread before step t+1 reads it shifted

    final = tl.where(in_s & (s >= S - 2), alpha, NEG_INF)
    m = tl.max(final, axis=0)
    m = tl.where(m == NEG_INF, 0.0, m)
    log_z = m + tl.log(tl.sum(tl.exp(final - m), axis=0))
    log_z = tl.where(t_len == 0, tl.where(n_lab == 0, 0.0, NEG_INF), log_z)
    log_z = tl.where(too_long, NEG_INF, log_z)
    tl.store(log_z_ptr + b, log_z)


@triton.jit(
    do_not_specialize=["T", "S_CAP", "stride_lb", "stride_ab", "stride_at", "stride_eb", "stride_er", "stride_gb"]
)
def _ctc_beta_grad_kernel(
    # pointers
    logits_ptr,  # (B, T, V)
    lse_ptr,  # (B, T) float32
    targets_ptr,
    target_offsets_ptr,  # (B,) int64
    input_lengths_ptr,  # (B,)
    target_lengths_ptr,  # (B,)
    alpha_ptr,  # (B, T, N_STATES) float32, from forward
    log_z_ptr,  # (B,) float32, from forward
    row_scale_ptr,  # (B,) float32: incoming gradient of each row's loss
    e_scratch_ptr,  # (B, 2, N_STATES) float32, ping-pong rows for E_{t+1}
    occ_scratch_ptr,  # (B, 3, BLOCK_V) float32, rotating label occupancy rows (any contents)
    grad_ptr,  # (B, T, V) logits' dtype, contiguous, out
    # sizes
    T,
    V,
    S_CAP,
    blank,
    # strides
    stride_lb,
    stride_lt,
    stride_lv,
    stride_tgt,
    stride_ab,
    stride_at,
    stride_eb,
    stride_er,
    stride_gb,
    stride_gt,
    # meta
    BLOCK_S: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    t_len = tl.minimum(tl.load(input_lengths_ptr + b).to(tl.int32), T)
    n_lab = tl.minimum(tl.load(target_lengths_ptr + b).to(tl.int32), S_CAP)
    log_z = tl.load(log_z_ptr + b)
    scale = tl.load(row_scale_ptr + b)
    t_live = tl.where(log_z == NEG_INF, 0, t_len)  # infeasible row: every frame gets zeros

    v = tl.arange(0, BLOCK_V)
    v_ok = v < V
    g_row = grad_ptr + b * stride_gb
    out_dtype: tl.constexpr = grad_ptr.dtype.element_ty
    zeros = tl.zeros([BLOCK_V], dtype=out_dtype)
    for t in range(t_live, T):
        tl.store(g_row + t * stride_gt + v, zeros, mask=v_ok)

    S = 2 * n_lab + 1
    s = tl.arange(0, BLOCK_S)
    in_s = s < S
    lab, skip = _state_labels(targets_ptr, target_offsets_ptr, b, s, S, blank, stride_tgt)
    emit = in_s & (lab >= 0) & (lab < V)
    is_label = in_s & ((s % 2) == 1)
    # skip(s + 2): may state s jump to s + 2?
    _, skip_next = _state_labels(targets_ptr, target_offsets_ptr, b, s + 2, S, blank, stride_tgt)

    x_row = logits_ptr + b * stride_lb
    lse_row = lse_ptr + b * T
    a_row = alpha_ptr + b * stride_ab
    e_rows = e_scratch_ptr + b * stride_eb
    occ_rows = occ_scratch_ptr + b * (3 * BLOCK_V)

    e_next = tl.where(s == S - 1, 0.0, NEG_INF)  # virtual E_{T'}: see the design note
    tl.store(e_rows + stride_er + s, e_next, mask=in_s)  # row 1, read at i = 0
    occ_zeros = tl.zeros([BLOCK_V], tl.float32)
    tl.store(occ_rows + v, occ_zeros)  # rows 0 and 1: added into before any step zeroes them
    tl.store(occ_rows + BLOCK_V + v, occ_zeros)
    tl.debug_barrier()  # barrier -1
    for i in range(0, t_live):
        t = t_live - 1 - i
        cur = i % 2
        prev_e = e_rows + (1 - cur) * stride_er
        e1 = tl.load(prev_e + s + 1, mask=s + 1 < S, other=NEG_INF)
        e2 = tl.load(prev_e + s + 2, mask=skip_next, other=NEG_INF)
        beta = _logsumexp3(e_next, e1, e2)  # (BLOCK_S,)

        lse_t = tl.load(lse_row + t)
        x = tl.load(x_row + t * stride_lt + v * stride_lv, mask=v_ok, other=NEG_INF)
        softmax = tl.exp(x.to(tl.float32) - lse_t)  # (BLOCK_V,), loaded before the barrier
        lp = tl.load(x_row + t * stride_lt + lab * stride_lv, mask=emit, other=NEG_INF)
        lp = lp.to(tl.float32) - lse_t
        alpha = tl.load(a_row + t * stride_at + s, mask=in_s, other=NEG_INF)
        # occupancy normalised per frame (sum_s alpha_t(s) beta_t(s) = Z at every t): the common
        # rounding error of log Z and of the frame's alpha and beta cancels, as it does in torch's
        # path through log_softmax's backward
        ab = tl.where(in_s, alpha + beta, NEG_INF)
        m = tl.max(ab, axis=0)
        w = tl.exp(ab - tl.where(m == NEG_INF, 0.0, m))
        total = tl.sum(w, axis=0)
        gamma = w / tl.where(total > 0, total, 1.0)
        occ_blank = tl.sum(tl.where(is_label, 0.0, gamma), axis=0)
        occ_row = occ_rows + (i % 3) * BLOCK_V  # zero here: see the barrier argument
        tl.atomic_add(occ_row + lab, gamma, mask=is_label & emit, sem="relaxed", scope="cta")

        e_next = beta + lp
        tl.store(e_rows + cur * stride_er + s, e_next, mask=in_s)
        tl.debug_barrier()  # barrier i: atomics done and E_t visible before anyone reads them

        occ = tl.load(occ_row + v, mask=v_ok, other=0.0)
        occ = tl.where(v == blank, occ + occ_blank, occ)
        # row (i+2)%3 was read at step i-1 (before barrier i) and is added into next at step
        # i+2 (after barrier i+1); row (i+1)%3 would race with step i+1's atomics
        tl.store(occ_rows + ((i + 2) % 3) * BLOCK_V + v, occ_zeros)
        grad = (softmax - occ) * scale
        tl.store(g_row + t * stride_gt + v, _to_output_dtype(grad, out_dtype), mask=v_ok)


def _num_warps(block: int) -> int:
    return 4 if block <= 512 else 8


def _on_device(device: torch.device):
    """Launch on ``device``, not on the current CUDA device (Triton launches on the current one)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _target_capacity(targets, target_lengths, T) -> int:
    """S_CAP: the most labels a row of this launch can hold (longer rows cannot be aligned in T).

    Padded targets: their width, no sync. 1-D concatenated targets: the longest of target_lengths,
    which BLOCK_S (a compile-time size) needs on the host: free when the lengths are on the CPU, one
    host sync when they are on the GPU (torch's ctc_loss copies its lengths to the host as well).
    Bounding by T instead would size alpha for T states per row (784 MB at B 32, T 1,750). The
    training loop passes padded targets.
    """
    if targets.dim() == 2:
        return min(targets.shape[1], T)
    longest = int(target_lengths.max()) if target_lengths.numel() else 0  # host sync if on a GPU
    return max(0, min(longest, targets.shape[0], T))


def _target_layout(targets, target_lengths, T, s_cap=None):
    """Offset of each row's first label, the label stride, and S_CAP (see _target_capacity)."""
    B = target_lengths.shape[0]
    s_cap = _target_capacity(targets, target_lengths, T) if s_cap is None else s_cap
    if targets.dim() == 2:  # padded (B, S)
        offsets = torch.arange(B, device=targets.device, dtype=torch.int64) * targets.stride(0)
        return offsets, targets.stride(1), s_cap
    lengths = target_lengths.to(device=targets.device, dtype=torch.int64)
    offsets = torch.cumsum(lengths, 0) - lengths  # concatenated (sum L,)
    return offsets, targets.stride(0), s_cap


def _scratch(shape, device) -> torch.Tensor:
    """Uninitialised float32 scratch rows: the kernel writes each element before it reads it."""
    return torch.empty(shape, device=device, dtype=torch.float32)


def ctc_forward(logits, targets, input_lengths, target_lengths, blank, save_alpha, s_cap=None):
    """Raw per-row loss -log Z (B,) float32 (inf where infeasible), plus what backward needs."""
    with _on_device(logits.device):
        return _ctc_forward(logits, targets, input_lengths, target_lengths, blank, save_alpha, s_cap)


def _ctc_forward(logits, targets, input_lengths, target_lengths, blank, save_alpha, s_cap):
    B, T, V = logits.shape
    device = logits.device
    offsets, stride_tgt, s_cap = _target_layout(targets, target_lengths, T, s_cap)
    n_states = 2 * s_cap + 1
    block_s = max(triton.next_power_of_2(n_states), 16)
    block_v = max(triton.next_power_of_2(V), 16)

    lse = torch.empty((B, T), device=device, dtype=torch.float32)
    rows = max(1, min(256, 8192 // block_v))
    _row_lse_kernel[(triton.cdiv(B * T, rows),)](
        logits,
        lse,
        B * T,
        T,
        V,
        logits.stride(0),
        logits.stride(1),
        logits.stride(2),
        ROWS=rows,
        BLOCK_V=block_v,
        num_warps=4,
    )

    alpha_rows = T if save_alpha else 2
    alpha = torch.empty((B, alpha_rows, n_states), device=device, dtype=torch.float32)
    log_z = torch.empty((B,), device=device, dtype=torch.float32)
    _ctc_alpha_kernel[(B,)](
        logits,
        lse,
        targets,
        offsets,
        input_lengths,
        target_lengths,
        alpha,
        log_z,
        T,
        V,
        s_cap,
        alpha_rows,
        blank,
        logits.stride(0),
        logits.stride(1),
        logits.stride(2),
        stride_tgt,
        alpha.stride(0),
        alpha.stride(1),
        BLOCK_S=block_s,
        num_warps=_num_warps(block_s),
    )
    return -log_z, (lse, alpha, log_z, offsets, stride_tgt, s_cap)


def ctc_backward(logits, targets, input_lengths, target_lengths, blank, saved, row_scale, out=None):
    """Gradient (B, T, V) in the logits' dtype of sum_b row_scale[b] * loss[b].

    ``out``: optional contiguous (B, T, V) buffer of the logits' dtype; every element is written.
    """
    with _on_device(logits.device):
        return _ctc_backward(logits, targets, input_lengths, target_lengths, blank, saved, row_scale, out)


def _ctc_backward(logits, targets, input_lengths, target_lengths, blank, saved, row_scale, out):
    B, T, V = logits.shape
    lse, alpha, log_z, offsets, stride_tgt, s_cap = saved
    n_states = alpha.shape[2]
    block_s = max(triton.next_power_of_2(n_states), 16)
    block_v = max(triton.next_power_of_2(V), 16)
    e_scratch = _scratch((B, 2, n_states), logits.device)
    occ_scratch = _scratch((B, 3, block_v), logits.device)  # the kernel zeroes what it needs
    grad = torch.empty((B, T, V), device=logits.device, dtype=logits.dtype) if out is None else out
    if grad.shape != (B, T, V) or grad.dtype != logits.dtype or not grad.is_contiguous():
        raise ValueError(f"ctc_backward: out must be contiguous {(B, T, V)} {logits.dtype}")
    _ctc_beta_grad_kernel[(B,)](
        logits,
        lse,
        targets,
        offsets,
        input_lengths,
        target_lengths,
        alpha,
        log_z,
        row_scale,
        e_scratch,
        occ_scratch,
        grad,
        T,
        V,
        s_cap,
        blank,
        logits.stride(0),
        logits.stride(1),
        logits.stride(2),
        stride_tgt,
        alpha.stride(0),
        alpha.stride(1),
        e_scratch.stride(0),
        e_scratch.stride(1),
        grad.stride(0),
        grad.stride(1),
        BLOCK_S=block_s,
        BLOCK_V=block_v,
        num_warps=_num_warps(max(block_s, block_v)),
    )
    return grad


def _row_scale(grad_out, target_lengths, reduction, B):
    """Incoming gradient of each row's loss, (B,) float32."""
    g = grad_out.to(torch.float32)
    if reduction == "none":
        return g.contiguous()
    if reduction == "sum":
        return g.expand(B).contiguous()
    return g / target_lengths.clamp(min=1).to(torch.float32) / B


class CTCLossFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity, save_alpha, s_cap
    ):
        loss, saved = ctc_forward(logits, targets, input_lengths, target_lengths, blank, save_alpha, s_cap)
        if zero_infinity:
            loss = torch.where(torch.isinf(loss), torch.zeros_like(loss), loss)
        ctx.save_for_backward(logits, targets, input_lengths, target_lengths, *saved[:4])
        ctx.stride_tgt, ctx.s_cap = saved[4], saved[5]
        ctx.blank, ctx.reduction = blank, reduction
        return reduce_losses(loss, target_lengths, reduction)

    @staticmethod
    def backward(ctx, grad_out):
        logits, targets, input_lengths, target_lengths, *rest = ctx.saved_tensors
        lse, alpha, log_z, offsets = rest
        if alpha.shape[1] != logits.shape[1]:
            raise RuntimeError("ctc_loss: alpha was not saved; call it with grad enabled")
        saved = (lse, alpha, log_z, offsets, ctx.stride_tgt, ctx.s_cap)
        scale = _row_scale(grad_out, target_lengths, ctx.reduction, logits.shape[0])
        grad = ctc_backward(logits, targets, input_lengths, target_lengths, ctx.blank, saved, scale)
        return grad, None, None, None, None, None, None, None, None


def ctc_loss_triton(
    logits: torch.Tensor,  # (B, T, V) raw scores, bf16/fp16/fp32, any strides
    targets: torch.Tensor,  # (B, S) padded, or 1-D concatenated; integer ids
    input_lengths: torch.Tensor,  # (B,) integer
    target_lengths: torch.Tensor,  # (B,) integer; on the CPU spares 1-D targets a host sync
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = True,
) -> torch.Tensor:
    """Fused log-softmax + CTC loss; same value and gradient as ``ctc_loss_reference``."""
    save_alpha = torch.is_grad_enabled() and logits.requires_grad
    s_cap = _target_capacity(targets, target_lengths, logits.shape[1])  # before the lengths move
    device = logits.device
    input_lengths = input_lengths.to(device, non_blocking=True).contiguous()
    target_lengths = target_lengths.to(device, non_blocking=True).contiguous()
    targets = targets.to(device, non_blocking=True)
    return CTCLossFunction.apply(
        logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity, save_alpha, s_cap
    )
