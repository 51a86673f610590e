"""fastctc.kernels.ctc_align (Viterbi forced alignment): the PyTorch path in process, the Triton
kernel under TRITON_INTERPRET=1 in a child pytest, both against a float64 NumPy Viterbi."""

import importlib.util
from pathlib import Path

import fastctc.kernels as K
import pytest
import torch
from child_pytest import run_child_pytest
from ctc_align_cases import check_against_numpy64, min_frames, random_case
from fastctc.kernels.ctc_viterbi_reference import segment_frames, viterbi_numpy64

TESTS = Path(__file__).resolve().parent
HAS_TRITON = importlib.util.find_spec("triton") is not None


def test_numpy_reference_on_a_hand_case():
    # two frames, target [1]: paths (1,1) 0.6*0.7, (0,1) 0.4*0.7, (1,2) 0.6*0.3 -> (1,1) wins
    lp = torch.tensor([[0.4, 0.6], [0.3, 0.7]]).log().numpy()
    path, score = viterbi_numpy64(lp[:, [0, 1]], [1], blank=0)
    assert path == [1, 1] and score == pytest.approx(float(torch.tensor(0.42).log()))
    assert viterbi_numpy64(lp, [1, 1], blank=0) == (None, float("-inf"))  # 1 _ 1 needs 3 frames


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("concatenated", [False, True])
def test_reference_path_matches_numpy64(seed, concatenated):
    logits, tgt, il, tl, blank, lists = random_case(seed, B=4, T=29, V=7, max_labels=9, concatenated=concatenated)
    check_against_numpy64(K.ctc_align(logits, tgt, il, tl, blank), logits, lists, il, blank)


def test_reference_path_minimal_lengths_and_blank_zero():
    logits, tgt, il, tl, blank, lists = random_case(7, B=5, T=24, V=6, max_labels=8, blank=0, minimal=True)
    assert il.tolist() == [max(min_frames(x), 1) for x in lists]
    check_against_numpy64(K.ctc_align(logits, tgt, il, tl, blank), logits, lists, il, blank)


def test_reference_path_infeasible_rows_are_marked():
    logits = torch.randn(3, 6, 5)
    tgt = torch.tensor([[1, 1, 1, 0], [1, 2, 3, 4], [2, 0, 0, 0]])
    tl, il = torch.tensor([3, 4, 1]), torch.tensor([4, 3, 6])  # rows 0, 1 need 5 and 4 frames
    result = K.ctc_align(logits, tgt, il, tl, blank=0)
    check_against_numpy64(result, logits, [[1, 1, 1], [1, 2, 3, 4], [2]], il, 0)
    assert torch.isinf(result[3][:2]).all() and torch.isfinite(result[3][2])


def test_reference_path_long_input_spans_many_segments():
    T = 300  # K = 35: nine segments, the last partial; rows end inside different segments
    logits, tgt, il, tl, blank, lists = random_case(8, B=3, T=T, V=9, max_labels=40)
    assert segment_frames(T) == 35
    il = torch.tensor([300, 211, 36])
    check_against_numpy64(K.ctc_align(logits, tgt, il, tl, blank), logits, lists, il, blank)


def test_empty_target_is_all_blank_and_one_frame_inputs():
    logits = torch.randn(2, 5, 4)
    states, labels, _, score = K.ctc_align(
        logits, torch.zeros(2, 1, dtype=torch.long), torch.tensor([5, 1]), torch.tensor([0, 0]), blank=3
    )
    assert states[0].tolist() == [0] * 5 and labels[1].tolist() == [3, -1, -1, -1, -1]
    assert score[0] == pytest.approx(float(logits[0].log_softmax(-1)[:, 3].sum()), abs=1e-5)


def test_argument_validation():
    with pytest.raises(ValueError, match="must be \\(B, T, V\\)"):
        K.ctc_align(torch.randn(4, 5), torch.tensor([[1]]), torch.tensor([4]), torch.tensor([1]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        K.ctc_align(torch.randn(1, 4, 5), torch.tensor([[1]]), torch.tensor([4]), torch.tensor([1]), blank=5)


# ---- the Triton kernels compile for an H100 (sm_90) without a GPU ---------------------------


@pytest.mark.skipif(not HAS_TRITON or K.TRITON_INTERPRETED, reason="needs triton, not interpreted")
@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION is unset")
@pytest.mark.parametrize("logits", ["*bf16", "*fp32"])
def test_align_kernels_compile_for_sm90(logits):
    import fastctc.kernels.ctc_viterbi as ca
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    for fn, block_s in [
        (ca._viterbi_checkpoint_kernel, 16),
        (ca._viterbi_checkpoint_kernel, 2048),
        (ca._viterbi_segment_kernel, 16),
        (ca._viterbi_segment_kernel, 2048),
    ]:
        types = {
            "logits_ptr": logits,
            "targets_ptr": "*i64",
            "bp_ptr": "*i8",
            "end_ptr": "*i32",
            "carry_ptr": "*i32",
            "path_ptr": "*i32",
            "target_offsets_ptr": "*i64",
            "input_lengths_ptr": "*i64",
            "target_lengths_ptr": "*i64",
        }
        signature = {n: types.get(n, "*fp32" if n.endswith("_ptr") else "i32") for n in fn.arg_names}
        signature["BLOCK_S"] = "constexpr"
        src = ASTSource(fn=fn, signature=signature, constexprs={"BLOCK_S": block_s})
        try:
            compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})
        except RuntimeError as err:
            if "ptxas" in str(err) and "not found" in str(err).lower():
                pytest.skip(f"no ptxas: {err}")
            raise
        assert "cubin" in compiled.asm, f"{fn.__name__} BLOCK_S={block_s}: no cubin"


# ---- the Triton kernels, interpreted, in a subprocess ----------------------------------------


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_triton_align_kernel_under_interpreter():
    run_child_pytest(str(TESTS / "align_kernel_interpreted.py"))
