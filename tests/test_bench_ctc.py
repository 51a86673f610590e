"""`fastctc bench ctc`'s correctness side on a CPU: the cuDNN case's relabelling, and a failed float64
check failing the command (after its figures and JSON line are printed)."""

from __future__ import annotations

import json

import pytest
import torch

from fastctc.bench import ctc as bench_ctc


def test_cudnn_case_relabels_so_no_target_is_the_blank():
    logits, labels, _, target_lengths = bench_ctc.make_case(4, 30, 10, 8, torch.float32, "cpu", blank=7)
    assert (labels == 0).any()  # blank 7: 0 is an ordinary label here, cuDNN's blank
    flat, il, tl = bench_ctc.cudnn_case(logits, labels, target_lengths, 10, blank=7)
    want = torch.cat([labels[b, : target_lengths[b]] for b in range(4)])
    assert (flat != 0).all() and flat.dtype == torch.int32 and len(flat) == int(target_lengths.sum())
    # a rotation of the ids: equal labels stay equal, distinct ones distinct (repeats keep their cost)
    assert torch.equal(flat[:, None] == flat[None, :], want[:, None] == want[None, :])


def test_a_failed_correctness_check_fails_the_command(monkeypatch, capsys):
    failing = {"loss_err": 1.0, "loss_bound": 1e-5, "grad_max_err": 0.5, "grad_worst_excess": 0.4, "ok": False}
    passing = dict(failing, loss_err=0.0, grad_worst_excess=-1.0, ok=True)
    monkeypatch.setattr(
        bench_ctc, "interpreted_correctness", lambda: {"torch.float32": passing, "torch.bfloat16": failing}
    )
    with pytest.raises(bench_ctc.KernelCheckError, match="small case torch.bfloat16"):
        bench_ctc.main(["--cards", "timit"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # printed before the failure
    assert report["failed_checks"] == ["small case torch.bfloat16"]


def test_a_crashed_interpreted_check_counts_as_failed():
    report = {"correctness": {"error": "Traceback ..."}, "shapes": []}
    assert bench_ctc.failed_checks(report) == ["small case error"]
    shape = {"card": "librispeech", "B": 8, "T": 1750, "L": 550, "vs_float64": {"ok": False}}
    assert bench_ctc.failed_checks({"shapes": [shape]}) == ["librispeech B=8 T=1750 L=550"]
