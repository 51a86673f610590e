"""Plain-PyTorch CTC loss on raw logits: the reference that tests and benchmarks share.

This is what the Transformers recipe computes: a float32 log-softmax that materialises (B, T, V)
log-probabilities, then torch's native ``ctc_loss`` on the time-major (T, B, V) view.

Under torch.compile the same computation runs as one opaque custom op (``fastctc::ctc_loss_rows``):
torch's ctc_loss allocates its alpha table from the longest target, a data-dependent shape that
breaks the graph, whereas the op's output shapes follow from its inputs' shapes alone.
"""

import torch
import torch.nn.functional as F

REDUCTIONS = ("none", "sum", "mean")


def reduce_losses(loss: torch.Tensor, target_lengths: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-row losses (B,) reduced as torch's ctc_loss reduces them: "mean" divides each row's loss by
    its target length (at least 1), then averages over the batch."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return (loss / target_lengths.clamp(min=1).to(loss.dtype)).mean()


def ctc_loss_reference(
    logits: torch.Tensor,  # (B, T, V) raw scores, any float dtype
    targets: torch.Tensor,  # (B, S) padded, or 1-D concatenated
    input_lengths: torch.Tensor,  # (B,)
    target_lengths: torch.Tensor,  # (B,)
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = True,
) -> torch.Tensor:
    if torch.compiler.is_compiling():
        return _compiled_reference(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity)
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V)
    return F.ctc_loss(
        log_probs, targets, input_lengths, target_lengths, blank=blank, reduction=reduction, zero_infinity=zero_infinity
    )


def _ctc_loss_rows(
    logits: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int,
    zero_infinity: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss (B,) float32, dloss_b/dlogits_b (B, T, V) in the logits' dtype): each row's loss and its
    gradient, computed together (rows are independent, so one pass gives every row's gradient).

    The gradient is aten's CTC backward with unit weights (d/d log-probs), then log-softmax's
    backward: dx = g - softmax(x) * sum_v g."""
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V)
    targets, input_lengths, target_lengths = targets.long(), input_lengths.long(), target_lengths.long()
    nll, log_alpha = torch.ops.aten._ctc_loss(log_probs, targets, input_lengths, target_lengths, blank, zero_infinity)
    g = torch.ops.aten._ctc_loss_backward(
        torch.ones_like(nll), log_probs, targets, input_lengths, target_lengths, nll, log_alpha, blank, zero_infinity
    )  # (T, B, V)
    g = g - log_probs.exp() * g.sum(-1, keepdim=True)
    rows = torch.where(torch.isinf(nll), torch.zeros_like(nll), nll) if zero_infinity else nll
    return rows, g.transpose(0, 1).to(logits.dtype).contiguous()


def _fake(logits, targets, input_lengths, target_lengths, blank, zero_infinity):
    return logits.new_empty(logits.shape[0], dtype=torch.float32), torch.empty_like(logits)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1])


def _backward(ctx, grad_rows, _grad_of_grad):
    (grad,) = ctx.saved_tensors
    return grad_rows.to(grad.dtype)[:, None, None] * grad, None, None, None, None, None


def _register_once():
    """The op, registered once per process. This file can run twice in one process: from a checkout, the
    repository root is on sys.path (`python -m pytest`, `python -m fastctc`), and transformers'
    is_kernels_available imports it as a top-level `kernels` package. A second custom_op call would
    destroy the first registration, while the first module's op handle still points at the freed
    operator entry: every later compile then reads freed memory in dynamo's fake-tensor pass (it shows
    as ValueError('basic_string::_M_create') or MemoryError('std::bad_alloc'))."""
    if hasattr(torch.ops.fastctc, "ctc_loss_rows"):
        return torch.ops.fastctc.ctc_loss_rows.default
    op = torch.library.custom_op("fastctc::ctc_loss_rows", _ctc_loss_rows, mutates_args=())
    op.register_fake(_fake)
    op.register_autograd(_backward, setup_context=_setup_context)
    return op


ctc_loss_rows = _register_once()


def _compiled_reference(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity):
    rows, _ = ctc_loss_rows(logits, targets, input_lengths, target_lengths, blank, zero_infinity)
    return reduce_losses(rows, target_lengths, reduction)
