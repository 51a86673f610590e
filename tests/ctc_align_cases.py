"""Random forced-alignment cases and the float64 NumPy check shared by tests/test_align_kernel.py and
the interpreted Triton run (tests/align_kernel_interpreted.py)."""

import numpy as np
import torch
from fastctc.kernels.ctc_viterbi_reference import viterbi_numpy64


def min_frames(labels: list[int]) -> int:
    """Frames the shortest CTC path needs: one per label, plus a blank between equal neighbours."""
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:]))


def random_case(
    seed: int,
    B: int,
    T: int,
    V: int,
    max_labels: int,
    blank: int | None = None,
    repeats: bool = True,
    minimal: bool = False,
    concatenated: bool = False,
    dtype=torch.float32,
):
    """Logits (B, T, V) of scale 3, targets with forced repeats, input lengths from T down."""
    g = torch.Generator().manual_seed(seed)
    blank = V - 1 if blank is None else blank
    labels_pool = [v for v in range(V) if v != blank]
    targets, t_lens, i_lens = [], [], []
    for _ in range(B):
        n = int(torch.randint(0, max_labels + 1, (1,), generator=g))
        lab = [labels_pool[int(i)] for i in torch.randint(0, len(labels_pool), (n,), generator=g)]
        if repeats and n >= 2:
            lab[1] = lab[0]  # at least one repeat that needs a blank between
        targets.append(lab)
        t_lens.append(n)
        need = max(min_frames(lab), 1)
        i_lens.append(need if minimal else int(torch.randint(need, T + 1, (1,), generator=g)) if need <= T else T)
    logits = (torch.randn(B, T, V, generator=g) * 3).to(dtype)
    L = max(max(t_lens), 1)
    padded = torch.full((B, L), blank, dtype=torch.long)
    for b, lab in enumerate(targets):
        padded[b, : len(lab)] = torch.tensor(lab, dtype=torch.long)
    tgt = torch.tensor([c for lab in targets for c in lab], dtype=torch.long) if concatenated else padded
    return logits, tgt, torch.tensor(i_lens), torch.tensor(t_lens), blank, targets


def check_against_numpy64(result, logits, targets_list, input_lengths, blank):
    """Every row's path and score equal the float64 NumPy Viterbi's; frame log-probs sum to the score."""
    states, labels, frame_lp, score = result
    B, T, _ = logits.shape
    for b in range(B):
        n = int(input_lengths[b])
        lp = logits[b, :n].double().log_softmax(-1).numpy()
        ref_path, ref_score = viterbi_numpy64(lp, targets_list[b], blank)
        if ref_path is None:
            assert score[b] == float("-inf") and (states[b] == -1).all() and (labels[b] == -1).all()
            continue
        assert states[b, :n].tolist() == list(ref_path), f"row {b}: path differs"
        assert (states[b, n:] == -1).all() and (labels[b, n:] == -1).all()
        ext = [blank] + [x for c in targets_list[b] for x in (c, blank)]
        assert labels[b, :n].tolist() == [ext[s] for s in ref_path]
        np.testing.assert_allclose(float(score[b]), ref_score, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(float(frame_lp[b, :n].double().sum()), ref_score, rtol=1e-5, atol=1e-4)
        want = lp[np.arange(n), labels[b, :n].numpy()]
        np.testing.assert_allclose(frame_lp[b, :n].double().numpy(), want, rtol=1e-5, atol=1e-5)
