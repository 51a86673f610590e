"""The tolerance table of the fused CTC kernel against float64: tests and ``bench ctc`` share it.

Each rule bounds the kernel's max-abs error against a float64 reference by what torch's own float32
path (log_softmax + F.ctc_loss) gets wrong on the same logits, plus a floor; a kernel compiled for
a GPU adds the compiled-exp allowance. The derivations are the comments below.
"""

import math

import torch

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
# (upcast, not rounded) + FP32_FLOOR * scale. (Not a fixed atol: torch's float32 gradient error grows
# with T and L, so a fixed atol small enough for short cases flags long ones where the kernel is far
# more accurate than the yardstick.)
LOW_PRECISION_GRAD_RTOL = {
    torch.bfloat16: torch.finfo(torch.bfloat16).eps / 2,
    torch.float16: torch.finfo(torch.float16).eps / 2,
}

# Compiled for a GPU, float32 tl.exp(x) is ex2.approx.f32(fl(x * log2e)) (Triton's NVIDIA backend,
# ExpOpConversionApprox), not the interpreter's libm: at most 2 ulp from the rounded 2^y (PTX ISA,
# ex2), and rounding the product moves the exponent by up to |x| * 2^-24 * log2e, so the result is
# off by (2.5 + |x|) * eps relative (eps = 2^-23) against libm's 0.5. tl.log stays libdevice's logf.
# Every exp in the kernel sits in a max-shifted sum over n terms (x <= 0), whose weighted mean |x|
# is at most ln(n) (an entropy bound), so each log-sum-exp may be off by
# compiled_lse_ulps(n) = (2.5 + ln n) * eps more:
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


def compiled_exp_allowance(T: int, V: int, input_lengths, target_lengths, reduction: str, grad_out):
    """(loss, gradient) max-abs allowance for compiled tl.exp, added to the float32 rule."""
    t_live = input_lengths.cpu().clamp(max=T).double()
    labels = target_lengths.cpu().double()
    loss_rows = (t_live * (compiled_lse_ulps(V) + compiled_lse_ulps(3)) + compiled_lse_ulps(2)) * EPS32
    g = torch.as_tensor(grad_out).detach().cpu().double().abs().expand(t_live.shape)
    if reduction == "mean":
        loss_rows, g = loss_rows / labels.clamp(min=1) / len(labels), g / labels.clamp(min=1) / len(labels)
    loss = float(loss_rows.max() if reduction == "none" else loss_rows.sum())
    softmax = compiled_lse_ulps(V) + 2.5 + 1 / math.e
    occupancy = 2 * (2.5 + 2 * torch.log(2 * labels + 1))
    recursion = 2 * compiled_lse_ulps(3) * (t_live - 1).clamp(min=0)
    grad = float((g * (softmax + occupancy + recursion)).max()) * EPS32
    return loss, grad


def fp32_errors(ours, torch32, ref64):
    """(err_ours, err_torch, scale) as max abs errors against float64."""
    ours, torch32, ref64 = ours.double(), torch32.double(), ref64.double()
    scale = max(1.0, float(ref64.abs().max())) if ref64.numel() else 1.0
    return float((ours - ref64).abs().max()), float((torch32 - ref64).abs().max()), scale


def fp32_bound(err_torch: float, scale: float, allowance: float = 0.0) -> float:
    """The float32 rule: what the kernel's max-abs error may reach."""
    return FP32_SLACK * err_torch + FP32_FLOOR * scale + allowance


def low_precision_grad_excess(ours, ref64, torch32_fp32, dtype, allowance=0.0):
    """Worst excess over rtol * |ref| + atol, and (rtol, atol, err_torch): <= 0 passes."""
    rtol = LOW_PRECISION_GRAD_RTOL[dtype]
    _, err_torch, scale = fp32_errors(torch32_fp32, torch32_fp32, ref64)
    atol = fp32_bound(err_torch, scale, allowance)
    ours, ref64 = ours.double(), ref64.double()
    excess = (ours - ref64).abs() - (rtol * ref64.abs() + atol)
    return excess, (rtol, atol, err_torch)
