"""The Triton Viterbi kernels run by Triton's interpreter on CPU, against the float64 NumPy Viterbi.

Run by tests/test_align_kernel.py in a child pytest with TRITON_INTERPRET=1 (Triton must see it before
the kernels are defined). By hand: TRITON_INTERPRET=1 python -m pytest tests/align_kernel_interpreted.py
"""

import fastctc.kernels as K
import pytest
import torch
from ctc_align_cases import check_against_numpy64, random_case

pytestmark = [
    pytest.mark.skipif(
        not K.TRITON_INTERPRETED or K.ctc_align_triton is None,
        reason="needs TRITON_INTERPRET=1 at import and triton; run via tests/test_align_kernel.py",
    ),
    pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning"),
]


@pytest.fixture(autouse=True)
def kernel_only(monkeypatch):
    """Fail if the call silently took the PyTorch path."""

    def refuse(*args, **kwargs):
        raise AssertionError("ctc_align took the PyTorch path, not the kernel")

    monkeypatch.setattr(K, "ctc_align_reference", refuse)
    yield


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("concatenated", [False, True])
def test_kernel_matches_numpy64(seed, concatenated):
    logits, tgt, il, tl, blank, lists = random_case(seed, B=3, T=23, V=7, max_labels=8, concatenated=concatenated)
    check_against_numpy64(K.ctc_align(logits, tgt, il, tl, blank), logits, lists, il, blank)


def test_kernel_minimal_lengths_blank_zero():
    logits, tgt, il, tl, blank, lists = random_case(11, B=4, T=20, V=6, max_labels=7, blank=0, minimal=True)
    check_against_numpy64(K.ctc_align(logits, tgt, il, tl, blank), logits, lists, il, blank)


def test_kernel_infeasible_rows():
    logits = torch.randn(3, 6, 5)
    tgt = torch.tensor([[1, 1, 1, 0], [1, 2, 3, 4], [2, 0, 0, 0]])
    tl, il = torch.tensor([3, 4, 1]), torch.tensor([4, 3, 6])
    result = K.ctc_align(logits, tgt, il, tl, blank=0)
    check_against_numpy64(result, logits, [[1, 1, 1], [1, 2, 3, 4], [2]], il, 0)
    assert torch.isinf(result[3][:2]).all()


def test_kernel_many_segments_and_bf16():
    logits, tgt, il, tl, blank, lists = random_case(12, B=2, T=120, V=9, max_labels=20)
    il = torch.tensor([120, 47])  # K = 22: six segments; row 1 ends inside the third
    check_against_numpy64(K.ctc_align(logits, tgt, il, tl, blank), logits, lists, il, blank)
    lb = logits.to(torch.bfloat16)
    check_against_numpy64(K.ctc_align(lb, tgt, il, tl, blank), lb.float(), lists, il, blank)


def test_kernel_equals_pytorch_path():
    import fastctc.kernels.ctc_viterbi_reference as ref

    logits, tgt, il, tl, blank, _ = random_case(13, B=3, T=40, V=5, max_labels=12)
    path, score, _ = K.ctc_align_triton(logits, tgt, il, tl, blank)
    path_r, score_r, _ = ref.ctc_align_reference(logits, tgt, il, tl, blank)
    assert torch.equal(path, path_r)
    torch.testing.assert_close(score, score_r)
