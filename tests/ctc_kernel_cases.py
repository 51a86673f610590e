"""Shared helpers for the CTC loss tests: random cases, the float64 reference, the tolerance table.

Used by tests/test_ctc_kernel.py (PyTorch reference path, in process) and by
tests/ctc_kernel_interpreted.py (Triton kernel, run in a subprocess under TRITON_INTERPRET=1).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Tolerance table.
#
# float32: the fused kernel must be no worse than torch's own float32 path
# (log_softmax + F.ctc_loss), both measured against float64 on the same logits:
#     err_ours <= FP32_SLACK * err_torch + FP32_FLOOR * scale
# FP32_SLACK = 2: both are float32 log-space recursions with a different operation order (lse
# once per frame vs torch's log-softmax, a max-shifted 3-way lse vs torch's, another exp/log), so
# their rounding errors are random walks of similar size. Measured on 300 random cases (B <= 3,
# T < 40, V < 40, L < 15, "none" and "sum"): err_ours / err_torch had median 1.0 and p95 3.4 for
# the loss (both always within 2.5 ulps of the loss: ulp-level noise, which the floor covers), and
# median 0.13, p95 0.6 for the gradient (per-frame normalised occupancy, see kernels/ctc.py).
# err_ours <= 2 * err_torch + floor held with a floor of 1.4 ulps (loss) and 2.3 ulps (gradient).
# FP32_FLOOR = 8 float32 ulps of the quantity's scale (max(1, max |reference|)): torch's error can
# be ~0 by luck on a tiny case (one frame, one state), and no float32 algorithm promises less than
# a few ulps.
FP32_SLACK = 2.0
FP32_FLOOR = 8 * torch.finfo(torch.float32).eps
# bf16 / fp16 logits: the reference is float64 on the same rounded logits. The loss is computed
# in float32 and takes the float32 rule above (torch's float32 on the rounded logits as the
# yardstick). The gradient is float32 work rounded once to the logits' dtype, so each element may
# be off by half a unit in the last place of that dtype (rtol = eps / 2, unit roundoff) plus the
# float32 rule's allowance, FP32_SLACK * torch's float32 gradient error on the same rounded logits
# (upcast, not rounded) + FP32_FLOOR * scale. (A first version used a fixed atol = 1e-5 for the
# float32 part; it does not grow with T: at T = 500, L = 120 torch's float32 gradient error is
# 2.9e-3 and the kernel's 1.7e-4, so the fixed atol flagged a kernel 17x better than the yardstick.)
LOW_PRECISION_GRAD_RTOL = {
    torch.bfloat16: torch.finfo(torch.bfloat16).eps / 2,
    torch.float16: torch.finfo(torch.float16).eps / 2,
}

# Compiled for a GPU, float32 tl.exp(x) is ex2.approx.f32(fl(x * log2e)) (Triton's NVIDIA backend,
# ExpOpConversionApprox), not the interpreter's libm: at most 2 ulp from the rounded 2^y (PTX ISA,
# ex2), and rounding the product moves the exponent by up to |x| * 2^-24 * log2e, so the result is
# off by (2.5 + |x|) * eps relative (eps = 2^-23) against libm's 0.5. tl.log stays libdevice's logf.
# Every exp in the kernel sits in a max-shifted sum over n terms (x <= 0), whose weighted mean |x|
# is at most ln(n) (an entropy bound), so each log-sum-exp may be off by compiled_lse_ulps(n) = (2.5 + ln n) * eps more:
#   loss of a row, T' frames: T' row lse's (n = V) and T' 3-way recursion steps, plus log Z:
#       (T' * (5 + ln 3V) + 3.2) * eps, summed over rows as the reduction sums them;
#   gradient of a row: softmax (the row lse, then exp(x - lse) <= (2.5 + 1/e) * eps), one frame's
#       normalised occupancy (2 * (2.5 + 2 ln S)) and the recursions' state-dependent part: each
#       of alpha and beta carries (2.5 + ln 3) * eps per step, 2 (T' - 1) steps between two
#       states; the row lse's are common to every state of a frame and cancel in gamma.
# Worst case, every error of one sign (a random walk would grow as sqrt(T')): an allowance added to
# the float32 rule for compiled kernels only, far below what a wrong occupancy row costs (~gamma).
EPS32 = torch.finfo(torch.float32).eps


def compiled_lse_ulps(n: float) -> float:
    return 2.5 + math.log(n)


def compiled_exp_allowance(case, reduction: str, grad_out) -> tuple[float, float]:
    """(loss, gradient) max-abs allowance for compiled tl.exp, added to the float32 rule."""
    V = case.logits.shape[-1]
    t_live = case.input_lengths.clamp(max=case.logits.shape[1]).double()
    labels = case.target_lengths.double()
    loss_rows = (t_live * (compiled_lse_ulps(V) + compiled_lse_ulps(3)) + compiled_lse_ulps(2)) * EPS32
    g = grad_out.double().abs().expand(t_live.shape)
    if reduction == "mean":
        loss_rows, g = loss_rows / labels.clamp(min=1) / len(labels), g / labels.clamp(min=1) / len(labels)
    loss = float(loss_rows.max() if reduction == "none" else loss_rows.sum())
    softmax = compiled_lse_ulps(V) + 2.5 + 1 / math.e
    occupancy = 2 * (2.5 + 2 * torch.log(2 * labels + 1))
    recursion = 2 * compiled_lse_ulps(3) * (t_live - 1).clamp(min=0)
    grad = float((g * (softmax + occupancy + recursion)).max()) * EPS32
    return loss, grad


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
        x, case.targets, case.input_lengths, case.target_lengths,
        blank=case.blank, reduction=reduction, zero_infinity=zero_infinity,
    )  # fmt: skip
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


def fp32_errors(ours, torch32, ref64):
    """(err_ours, err_torch, scale) as max abs errors against float64."""
    ours, torch32, ref64 = ours.double(), torch32.double(), ref64.double()
    scale = max(1.0, float(ref64.abs().max())) if ref64.numel() else 1.0
    return float((ours - ref64).abs().max()), float((torch32 - ref64).abs().max()), scale


def assert_fp32_no_worse_than_torch(name, ours, torch32, ref64, allowance=0.0):
    """allowance: compiled_exp_allowance's term for a kernel compiled for a GPU (0 interpreted)."""
    err, err_torch, scale = fp32_errors(ours, torch32, ref64)
    bound = FP32_SLACK * err_torch + FP32_FLOOR * scale + allowance
    assert err <= bound, (
        f"{name}: fused kernel error {err:.3e} vs float64 exceeds {bound:.3e} "
        f"(= {FP32_SLACK} x torch float32 error {err_torch:.3e} + {FP32_FLOOR:.1e} x {scale:.3g}"
        f" + compiled-exp allowance {allowance:.2e})"
    )


def assert_low_precision_grad(name, ours, ref64, torch32_fp32, dtype, allowance=0.0):
    """ours: gradient in dtype; torch32_fp32: torch's float32 gradient, same rounded logits;
    allowance: as in assert_fp32_no_worse_than_torch."""
    rtol = LOW_PRECISION_GRAD_RTOL[dtype]
    _, err_torch, scale = fp32_errors(torch32_fp32, torch32_fp32, ref64)
    atol = FP32_SLACK * err_torch + FP32_FLOOR * scale + allowance
    ours, ref64 = ours.double(), ref64.double()
    excess = (ours - ref64).abs() - (rtol * ref64.abs() + atol)
    assert float(excess.max()) <= 0, (
        f"{name}: {dtype} gradient off by more than rtol={rtol:.2e} + atol={atol:.2e} "
        f"(= {FP32_SLACK} x torch float32 error {err_torch:.2e} + floor) "
        f"at {int((excess > 0).sum())} elements, worst excess {float(excess.max()):.3e}"
    )
