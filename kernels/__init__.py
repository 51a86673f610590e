"""CTC loss on raw logits, dispatched to the fused Triton kernel or the PyTorch reference.

Public API: :func:`ctc_loss`.

Dispatch: CUDA tensors -> Triton kernel (kernels/ctc.py). CPU tensors -> plain-PyTorch reference,
unless TRITON_INTERPRET=1 was set before this package was imported: then CPU tensors run the
Triton kernel under Triton's interpreter (slow; this is how the kernel is tested without a GPU).
Where triton cannot be imported, the reference serves every call, with a warning the first time a
CUDA call wanted the kernel.
"""

import os
import warnings

import torch

from .ctc_reference import REDUCTIONS, ctc_loss_reference
from .ctc_viterbi_reference import ctc_align_reference, padded_targets

try:
    from .ctc import ctc_loss_triton
    from .ctc_viterbi import ctc_align_triton
except ImportError as err:  # no triton on this platform (e.g. macOS, Windows)
    ctc_loss_triton = ctc_align_triton = None
    _TRITON_IMPORT_ERROR = err

__all__ = [
    "ctc_loss",
    "ctc_loss_reference",
    "ctc_loss_triton",
    "ctc_align",
    "ctc_align_reference",
    "ctc_align_triton",
    "TRITON_INTERPRETED",
]

# Triton reads the flag when the kernels are defined (import time), so it is read here once.
TRITON_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
_warned_fallback = False


def _use_triton(logits: torch.Tensor) -> bool:
    global _warned_fallback
    wants_kernel = logits.is_cuda or (TRITON_INTERPRETED and logits.device.type == "cpu")
    if not wants_kernel:
        return False
    if ctc_loss_triton is None:
        if not _warned_fallback:
            warnings.warn(
                f"fastctc.kernels.ctc_loss: triton is unavailable ({_TRITON_IMPORT_ERROR}); "
                "using the slower PyTorch reference. Install triton to use the fused kernel.",
                stacklevel=3,
            )
            _warned_fallback = True
        return False
    return True


def ctc_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = True,
) -> torch.Tensor:
    """CTC loss of raw (un-normalised) logits.

    Args:
        logits: (B, T, V) batch-first scores in bf16, fp16 or fp32; log-softmax is taken inside.
        targets: (B, S) padded label ids, or 1-D concatenation of all targets (as torch accepts).
        input_lengths: (B,) valid frames per row (<= T).
        target_lengths: (B,) labels per row.
        blank: id of the CTC blank.
        reduction: "none" -> (B,); "sum"; "mean" = each loss divided by its target length, then
            averaged over the batch (torch's meaning).
        zero_infinity: infeasible alignments give loss 0 and zero gradient instead of inf.

    Value and gradient equal ``F.ctc_loss(logits.float().log_softmax(-1).transpose(0, 1), ...)``.
    """
    if logits.dim() != 3:
        raise ValueError(f"ctc_loss: logits must be (B, T, V), got shape {tuple(logits.shape)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"ctc_loss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not 0 <= blank < logits.shape[-1]:
        raise ValueError(f"ctc_loss: blank={blank} is outside the vocabulary [0, {logits.shape[-1]})")
    if not _use_triton(logits) or logits.numel() == 0:
        return ctc_loss_reference(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity)
    # left where they are: the launcher reads 1-D targets' longest length before moving them
    input_lengths, target_lengths = torch.as_tensor(input_lengths), torch.as_tensor(target_lengths)
    targets = torch.as_tensor(targets)
    return ctc_loss_triton(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity)


# ---- forced alignment (Viterbi): kernels/ctc_viterbi.py, same dispatch rule as ctc_loss ----------


@torch.no_grad()
def ctc_align(logits, targets, input_lengths, target_lengths, blank: int = 0):
    """Best CTC path (forced alignment) of each row's targets through its frames.

    Args: as :func:`ctc_loss` (raw (B, T, V) logits, padded (B, S) or concatenated targets).
    Returns (states, labels, frame_log_probs, score):
        states (B, T) int64: CTC state per frame (2k+1 = the k-th target, even = blank), -1 past
            the row's input length and on every frame of an infeasible row;
        labels (B, T) int64: the label id each frame emits on the path (blank included), -1 likewise;
        frame_log_probs (B, T) float32: log-softmax of that label at that frame, 0 where -1;
        score (B,) float32: the path's log-probability; -inf marks an infeasible row (more labels
            and repeats than frames).
    """
    if logits.dim() != 3:
        raise ValueError(f"ctc_align: logits must be (B, T, V), got shape {tuple(logits.shape)}")
    if not 0 <= blank < logits.shape[-1]:
        raise ValueError(f"ctc_align: blank={blank} is outside the vocabulary [0, {logits.shape[-1]})")
    device = logits.device
    input_lengths = torch.as_tensor(input_lengths, device=device).contiguous()
    target_lengths = torch.as_tensor(target_lengths, device=device).contiguous()
    targets = torch.as_tensor(targets, device=device)
    use_kernel = _use_triton(logits) and logits.numel() > 0
    align = ctc_align_triton if use_kernel else ctc_align_reference
    states, score, lse = align(logits, targets, input_lengths, target_lengths, blank)
    states, score, lse = states.to(device).long(), score.to(device), lse.to(device)
    tgt = padded_targets(targets, target_lengths).to(device).long()  # (B, L)
    k = ((states - 1) // 2).clamp(min=0, max=max(tgt.shape[1] - 1, 0))
    on_label = (states % 2 == 1) & (states >= 0)
    labels = torch.where(on_label, tgt.gather(1, k) if tgt.shape[1] else k, blank)
    labels = torch.where(states >= 0, labels, -1)
    x = logits.gather(2, labels.clamp(min=0)[..., None])[..., 0].float()  # (B, T): no (B, T, V) copy
    frame_lp = torch.where(states >= 0, x - lse, 0.0)
    return states, labels, frame_lp, score
