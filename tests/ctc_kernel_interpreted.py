"""The fused Triton CTC kernel, run by Triton's interpreter on CPU, against a float64 reference.

Not collected by a plain ``pytest`` run (the name does not start with ``test_``):
tests/test_ctc_kernel.py runs this file in a subprocess with TRITON_INTERPRET=1, which Triton must
see before the kernels are defined. By hand:

    TRITON_INTERPRET=1 python -m pytest tests/ctc_kernel_interpreted.py          # CI set
    TRITON_INTERPRET=1 python -m pytest tests/ctc_kernel_interpreted.py -m slow  # big shapes
"""

import math

import fastctc.kernels as K
import pytest
import torch
from ctc_kernel_cases import (
    Case,
    assert_fp32_no_worse_than_torch,
    assert_low_precision_grad,
    loss_and_grad,
    make_grad_out,
    random_case,
    reference64,
)

pytestmark = [
    pytest.mark.skipif(
        not K.TRITON_INTERPRETED or K.ctc_loss_triton is None,
        reason="needs TRITON_INTERPRET=1 at import and triton; run via tests/test_ctc_kernel.py",
    ),
    # the interpreter evaluates log(0) = -inf with numpy, which warns; -inf is intended there
    pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning"),
]

REDUCTIONS = ("none", "sum", "mean")


@pytest.fixture(autouse=True)
def poisoned_grad_buffer(monkeypatch):
    """Every backward writes into a NaN-filled buffer, and its scratch rows (E and occupancy) start
    NaN-filled, so an element the kernel skips, or a row it reads before zeroing, shows up."""
    import fastctc.kernels.ctc as ctc_module

    real_backward = ctc_module.ctc_backward
    calls = []

    def poisoned(logits, *args, **kwargs):
        out = torch.full(logits.shape, float("nan"), dtype=logits.dtype)
        calls.append(out)
        return real_backward(logits, *args, **kwargs, out=out)

    monkeypatch.setattr(ctc_module, "ctc_backward", poisoned)
    monkeypatch.setattr(ctc_module, "_scratch", lambda shape, device: torch.full(shape, float("nan")))
    yield calls


def kernel_loss_and_grad(case, reduction, zero_infinity, grad_out):
    loss, grad = loss_and_grad(K.ctc_loss, case, reduction, zero_infinity, grad_out)
    assert grad.dtype == case.logits.dtype and grad.shape == case.logits.shape
    assert not torch.isnan(loss).any() and not torch.isnan(grad).any(), "NaN (or unwritten)"
    return loss, grad


def torch_fp32(case, reduction, grad_out):
    """torch's float32 path on the (rounded) logits upcast to float32: loss and float32 grad."""
    up = Case(case.logits.float(), case.targets, case.input_lengths, case.target_lengths, case.blank)
    return loss_and_grad(K.ctc_loss_reference, up, reduction, True, grad_out)


def check_fp32(case, reduction="none", zero_infinity=True, seed=0):
    """Fused kernel vs float64, no worse than torch's float32, loss and gradient."""
    grad_out = make_grad_out(case, reduction, seed)
    loss, grad = kernel_loss_and_grad(case, reduction, zero_infinity, grad_out)
    loss32, grad32 = loss_and_grad(K.ctc_loss_reference, case, reduction, zero_infinity, grad_out)
    loss64, grad64 = reference64(case, reduction, zero_infinity, grad_out)
    assert torch.equal(torch.isinf(loss), torch.isinf(loss64))
    finite = torch.isfinite(loss64)
    assert_fp32_no_worse_than_torch("loss", loss[finite], loss32[finite], loss64[finite])
    assert_fp32_no_worse_than_torch("grad", grad, grad32, grad64)
    return loss, grad


def test_cpu_tensors_go_through_the_kernel_under_the_interpreter(poisoned_grad_buffer):
    case = random_case(1, B=2, T=6, V=5, max_labels=2)
    loss, _ = kernel_loss_and_grad(case, "mean", True, torch.tensor(1.0))
    assert len(poisoned_grad_buffer) == 1


@pytest.mark.parametrize("seed", range(24))
def test_fp32_random_shapes(seed):
    g = torch.Generator().manual_seed(1000 + seed)
    B, T, V, L = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in [(1, 5), (1, 33), (2, 70), (0, 13)])
    case = random_case(1000 + seed, B, T, V, L, concatenated=seed % 2 == 1)
    check_fp32(case, REDUCTIONS[seed % 3], seed=seed)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("seed", range(4))
def test_low_precision_logits(dtype, seed):
    case = random_case(2000 + seed, B=3, T=20, V=37, max_labels=8, dtype=dtype)
    reduction = REDUCTIONS[seed % 3]
    grad_out = make_grad_out(case, reduction, seed)
    loss, grad = kernel_loss_and_grad(case, reduction, True, grad_out)
    loss32, grad32 = torch_fp32(case, reduction, grad_out)
    loss64, grad64 = reference64(case, reduction, True, grad_out)  # same rounded logits
    assert loss.dtype == torch.float32
    assert_fp32_no_worse_than_torch("loss", loss, loss32, loss64)
    assert_low_precision_grad("grad", grad, grad64, grad32, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("zero_infinity", [True, False])
def test_reductions_and_blank_last(reduction, zero_infinity):
    V = 11
    case = random_case(3000, B=3, T=14, V=V, max_labels=5, blank=V - 1)  # the recipe's blank
    check_fp32(case, reduction, zero_infinity, seed=3)


def test_empty_targets():
    case = random_case(4000, B=3, T=9, V=6, max_labels=3, blank=2, full_length=True)
    case.targets = torch.tensor([[1, 1], [3, 4], [5, 5]])
    case.target_lengths = torch.tensor([0, 2, 0])
    loss, grad = check_fp32(case, "none")
    # an empty target is all blanks: loss = -sum_t log p_t(blank)
    lp = case.logits.double().log_softmax(-1)
    expect = -lp[0, : case.input_lengths[0], 2].sum()
    assert math.isclose(float(loss[0]), float(expect), rel_tol=1e-5)


def test_repeated_labels_at_the_minimum_length():
    # [3, 3, 1, 1, 1] needs 5 frames + 3 separating blanks = 8: exactly feasible at T=8
    case = random_case(5000, B=2, T=8, V=5, max_labels=1, blank=0, full_length=True)
    case.targets = torch.tensor([[3, 3, 1, 1, 1], [2, 2, 2, 4, 4]])
    case.target_lengths = torch.tensor([5, 5])
    loss, grad = check_fp32(case, "none")
    assert torch.isfinite(loss).all()
    # one alignment only: its occupancy is 1 on a single state per frame
    lp = case.logits.double().log_softmax(-1)[0]
    path = [3, 0, 3, 1, 0, 1, 0, 1]
    expect = -sum(float(lp[t, path[t]]) for t in range(8))
    assert math.isclose(float(loss[0]), expect, rel_tol=1e-5)


@pytest.mark.parametrize("zero_infinity", [True, False])
def test_infeasible_rows(zero_infinity):
    case = random_case(6000, B=3, T=10, V=6, max_labels=2, blank=0, full_length=True)
    case.targets = torch.tensor([[1] * 6 + [0] * 6, [1, 2] + [0] * 10, [2, 3] * 6])
    case.target_lengths = torch.tensor([6, 2, 12])  # row 0 needs 11 frames; row 2 has L > T
    if zero_infinity:  # torch agrees: loss 0 and zero gradient on the infeasible rows
        loss, grad = check_fp32(case, "none", zero_infinity)
        assert loss[0] == 0 and loss[2] == 0
    else:
        grad_out = make_grad_out(case, "none", 6)
        loss, grad = kernel_loss_and_grad(case, "none", zero_infinity, grad_out)
        assert math.isinf(loss[0]) and math.isinf(loss[2])
        # torch's gradient is NaN on those rows; the kernel's is zero, and row 1 is unaffected
        row1 = Case(case.logits[1:2], case.targets[1:2], case.input_lengths[1:2], case.target_lengths[1:2], case.blank)
        go = grad_out[1:2]
        _, grad32 = loss_and_grad(K.ctc_loss_reference, row1, "none", zero_infinity, go)
        _, grad64 = reference64(row1, "none", zero_infinity, go)
        assert_fp32_no_worse_than_torch("grad row 1", grad[1:2], grad32, grad64)
    assert (grad[0] == 0).all() and (grad[2] == 0).all()


def test_frames_past_the_input_length_get_exact_zero_gradient():
    case = random_case(7000, B=4, T=16, V=9, max_labels=3)
    case.input_lengths = torch.tensor([16, 9, 1, 0])
    case.target_lengths = torch.tensor([3, 2, 0, 0])
    loss, grad = check_fp32(case, "mean")
    for b, n in enumerate(case.input_lengths.tolist()):
        assert (grad[b, n:] == 0).all()
        assert (grad[b, :n] != 0).any() or n == 0
    assert loss.isfinite().all()


def test_no_nan_with_extreme_logits():
    case = random_case(8000, B=2, T=12, V=8, max_labels=3, blank=7, logit_scale=80.0)
    check_fp32(case, "sum")
    # a vocabulary id masked to -inf that no target uses
    unused = int(torch.isin(torch.arange(7), case.targets.flatten()).logical_not().nonzero()[0])
    case.logits[..., unused] = float("-inf")
    grad_out = torch.tensor(1.0)
    loss, grad = kernel_loss_and_grad(case, "sum", True, grad_out)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert (grad[..., unused] == 0).all()


def test_non_contiguous_logits():
    base = random_case(9000, B=3, T=10, V=13, max_labels=4, blank=12)
    grad_out = make_grad_out(base, "none", 9)
    want_loss, want_grad = kernel_loss_and_grad(base, "none", True, grad_out)
    time_major = base.logits.transpose(0, 1).contiguous().transpose(0, 1)  # view of (T, B, V)
    wide = torch.randn(3, 10, 2 * 13)
    wide[..., ::2] = base.logits  # stride 2 along V
    for logits in (time_major, wide[..., ::2]):
        assert not logits.is_contiguous()
        case = Case(logits, base.targets, base.input_lengths, base.target_lengths, base.blank)
        loss, grad = kernel_loss_and_grad(case, "none", True, grad_out)
        assert torch.equal(loss, want_loss) and torch.equal(grad, want_grad)


def test_padded_and_concatenated_targets_agree():
    padded = random_case(10000, B=4, T=15, V=10, max_labels=6)
    concat = random_case(10000, B=4, T=15, V=10, max_labels=6, concatenated=True)
    assert concat.targets.dim() == 1
    for reduction in ("none", "mean"):
        grad_out = make_grad_out(padded, reduction, 10)
        a = kernel_loss_and_grad(padded, reduction, True, grad_out)
        b = kernel_loss_and_grad(concat, reduction, True, grad_out)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_concatenated_targets_size_alpha_by_the_longest_target(monkeypatch):
    """1-D targets: S_CAP is the longest of target_lengths (read on the host, where they are), not T."""
    import fastctc.kernels.ctc as ctc_module

    real_forward, states = ctc_module.ctc_forward, []

    def spy(*args, **kwargs):
        loss, saved = real_forward(*args, **kwargs)
        states.append(saved[1].shape[2])  # alpha (B, T, 2 * S_CAP + 1)
        return loss, saved

    monkeypatch.setattr(ctc_module, "ctc_forward", spy)
    case = random_case(10500, B=3, T=40, V=10, max_labels=1, blank=0, full_length=True)
    case.targets = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5])  # rows of 7, 2 and 0 labels
    case.target_lengths = torch.tensor([7, 2, 0])
    check_fp32(case, "none")
    assert states == [2 * 7 + 1]


def test_integer_dtypes_and_no_grad_forward():
    case = random_case(11000, B=2, T=11, V=7, max_labels=4)
    want, _ = kernel_loss_and_grad(case, "none", True, torch.ones(2))
    with torch.no_grad():  # keeps two alpha rows per utterance instead of T
        got = K.ctc_loss(
            case.logits,
            case.targets.int(),
            case.input_lengths.int(),
            case.target_lengths.int(),
            blank=case.blank,
            reduction="none",
        )
    assert torch.equal(got, want)


def test_backward_scales_by_the_incoming_gradient():
    case = random_case(12000, B=3, T=12, V=9, max_labels=4)
    _, unit = kernel_loss_and_grad(case, "sum", True, torch.tensor(1.0))
    _, scaled = kernel_loss_and_grad(case, "sum", True, torch.tensor(-2.5))
    torch.testing.assert_close(scaled, -2.5 * unit, rtol=1e-6, atol=0)


def test_fp32_moderate_shape():
    # a few hundred frames, V a power of two, a long target: still quick under the interpreter
    case = random_case(12500, B=2, T=120, V=64, max_labels=50, blank=63)
    case.target_lengths[0] = 50
    check_fp32(case, "mean")


@pytest.mark.slow
@pytest.mark.parametrize(
    "B, T, V, L",
    [(2, 300, 1024, 100), (1, 2000, 64, 600), (3, 400, 32, 80)],
    ids=["subword-vocab", "longest-utterance", "timit-like"],
)
def test_fp32_large_shapes(B, T, V, L):
    case = random_case(13000 + T, B, T, V, L, blank=V - 1)
    case.target_lengths[0] = min(L, T // 2)
    check_fp32(case, "mean")


@pytest.mark.slow
def test_bf16_large_shape():
    case = random_case(14000, B=2, T=500, V=32, max_labels=150, dtype=torch.bfloat16, blank=31)
    grad_out = make_grad_out(case, "sum", 14)
    loss, grad = kernel_loss_and_grad(case, "sum", True, grad_out)
    loss32, grad32 = torch_fp32(case, "sum", grad_out)
    loss64, grad64 = reference64(case, "sum", True, grad_out)
    assert_fp32_no_worse_than_torch("loss", loss, loss32, loss64)
    assert_low_precision_grad("grad", grad, grad64, grad32, torch.bfloat16)
