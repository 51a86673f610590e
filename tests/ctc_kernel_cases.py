"""Shared helpers for the CTC loss tests: random cases, the float64 reference, the tolerance table.

The tolerance table lives in fastctc/kernels/ctc_tolerance.py (``bench ctc`` applies it too).
Used by tests/test_ctc_kernel.py (PyTorch reference path, in process) and by
tests/ctc_kernel_interpreted.py (Triton kernel, run in a subprocess under TRITON_INTERPRET=1).
"""

from dataclasses import dataclass

import fastctc.kernels.ctc_tolerance as tolerance
import torch
import torch.nn.functional as F
from fastctc.kernels.ctc_tolerance import (  # noqa: F401  (the tests import the table from here)
    FP32_FLOOR,
    FP32_SLACK,
    LOW_PRECISION_GRAD_RTOL,
    fp32_bound,
    fp32_errors,
    low_precision_grad_excess,
)


@dataclass
class Case:
    logits: torch.Tensor  # (B, T, V), the dtype under test
    targets: torch.Tensor  # (B, S) padded or 1-D concatenated
    input_lengths: torch.Tensor  # (B,)
    target_lengths: torch.Tensor  # (B,)
    blank: int


def random_case(
    seed: int,
    B: int,
    T: int,
    V: int,
    max_labels: int,
    dtype=torch.float32,
    blank: int | None = None,
    concatenated: bool = False,
    full_length: bool = False,
    logit_scale: float = 3.0,
) -> Case:
    """Fresh random logits (never zeros), feasible targets, random lengths; blank=None -> random."""
    g = torch.Generator().manual_seed(seed)
    if blank is None:
        blank = int(torch.randint(0, V, (1,), generator=g))
    logits = (torch.randn(B, T, V, generator=g) * logit_scale).to(dtype)
    if full_length:
        input_lengths = torch.full((B,), T, dtype=torch.int64)
    else:
        input_lengths = torch.randint(max(1, T // 2), T + 1, (B,), generator=g)
        input_lengths[0] = T  # some row always uses every frame
    # at most input_length // 2 labels keeps every row feasible even with all labels repeated
    cap = torch.clamp(input_lengths // 2, max=max_labels)
    target_lengths = (torch.rand(B, generator=g) * (cap + 1)).long().clamp(max=cap)
    labels = torch.randint(0, V - 1, (B, max(1, max_labels)), generator=g)  # padded (B, S)
    labels = labels + (labels >= blank).long()  # any id except the blank
    if concatenated:
        targets = torch.cat([labels[b, : target_lengths[b]] for b in range(B)])
    else:
        targets = labels
    return Case(logits, targets, input_lengths, target_lengths, blank)


def loss_and_grad(fn, case: Case, reduction: str, zero_infinity: bool, grad_out, logits=None):
    """Loss of ``fn(logits, ...)`` and d(sum(loss * grad_out))/d logits, in the logits' dtype."""
    x = (case.logits if logits is None else logits).detach().clone().requires_grad_()
    loss = fn(
        x,
        case.targets,
        case.input_lengths,
        case.target_lengths,
        blank=case.blank,
        reduction=reduction,
        zero_infinity=zero_infinity,
    )
    (grad,) = torch.autograd.grad(loss, x, grad_outputs=grad_out)
    return loss.detach(), grad


def reference64(case: Case, reduction: str, zero_infinity: bool, grad_out):
    """float64 log_softmax + F.ctc_loss on the (already rounded) logits."""

    def fn(x, *args, **kwargs):
        return F.ctc_loss(x.log_softmax(-1).transpose(0, 1), *args, **kwargs)

    grad_out64 = grad_out.double()
    return loss_and_grad(fn, case, reduction, zero_infinity, grad_out64, case.logits.double())


def make_grad_out(case: Case, reduction: str, seed: int) -> torch.Tensor:
    """A non-unit incoming gradient: (B,) for "none", a scalar otherwise."""
    g = torch.Generator().manual_seed(seed + 7919)
    shape = (case.logits.shape[0],) if reduction == "none" else ()
    return (torch.rand(shape, generator=g) * 1.5 + 0.25).float()


def compiled_exp_allowance(case: Case, reduction: str, grad_out) -> tuple[float, float]:
    """fastctc.kernels.ctc_tolerance.compiled_exp_allowance for a Case."""
    T, V = case.logits.shape[1:]
    return tolerance.compiled_exp_allowance(T, V, case.input_lengths, case.target_lengths, reduction, grad_out)


def assert_fp32_no_worse_than_torch(name, ours, torch32, ref64, allowance=0.0):
    """allowance: compiled_exp_allowance's term for a kernel compiled for a GPU (0 interpreted)."""
    err, err_torch, scale = fp32_errors(ours, torch32, ref64)
    bound = fp32_bound(err_torch, scale, allowance)
    assert err <= bound, (
        f"{name}: fused kernel error {err:.3e} vs float64 exceeds {bound:.3e} "
        f"(= {FP32_SLACK} x torch float32 error {err_torch:.3e} + {FP32_FLOOR:.1e} x {scale:.3g}"
        f" + compiled-exp allowance {allowance:.2e})"
    )


def assert_low_precision_grad(name, ours, ref64, torch32_fp32, dtype, allowance=0.0):
    """ours: gradient in dtype; torch32_fp32: torch's float32 gradient, same rounded logits;
    allowance: as in assert_fp32_no_worse_than_torch."""
    excess, (rtol, atol, err_torch) = low_precision_grad_excess(ours, ref64, torch32_fp32, dtype, allowance)
    assert float(excess.max()) <= 0, (
        f"{name}: {dtype} gradient off by more than rtol={rtol:.2e} + atol={atol:.2e} "
        f"(= {FP32_SLACK} x torch float32 error {err_torch:.2e} + floor) "
        f"at {int((excess > 0).sum())} elements, worst excess {float(excess.max()):.3e}"
    )
