"""Plain-PyTorch CTC loss on raw logits: the reference that tests and benchmarks share.

This is what the Transformers recipe computes: a float32 log-softmax that materialises (B, T, V)
log-probabilities, then torch's native ``ctc_loss`` on the time-major (T, B, V) view.
"""

import torch
import torch.nn.functional as F


def ctc_loss_reference(
    logits: torch.Tensor,  # (B, T, V) raw scores, any float dtype
    targets: torch.Tensor,  # (B, S) padded, or 1-D concatenated
    input_lengths: torch.Tensor,  # (B,)
    target_lengths: torch.Tensor,  # (B,)
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = True,
) -> torch.Tensor:
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V)
    return F.ctc_loss(
        log_probs,
        targets,
        input_lengths,
        target_lengths,
        blank=blank,
        reduction=reduction,
        zero_infinity=zero_infinity,
    )
