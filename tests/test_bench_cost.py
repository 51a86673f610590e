"""fastctc bench cost (and bench step --model-cost): FLOPs counted on the meta device agree with
torch's FlopCounterMode on a real run; the table prints every card; no profiler noise in bench step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from fastctc.bench import cost
from fastctc.cli import main
from fastctc.models import CTCModel, EncoderConfig

TINY = dict(
    vocab_size=12,
    pad_token_id=11,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    conv_dim=(16, 16),
    conv_kernel=(10, 3),
    conv_stride=(5, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)


def test_meta_op_cost_counts_what_flop_counter_counts_on_a_real_run(monkeypatch):
    """OpCost's FLOPs (meta device, bf16) equal FlopCounterMode's on a real float32 CPU forward+backward
    of the same model and batch (FLOPs do not depend on the dtype or the device)."""
    cfg = EncoderConfig(**TINY)
    monkeypatch.setattr(cost, "card_config", lambda family: cfg)
    got = cost.step_cost("wav2vec2-base", batch=3, seconds=0.25)

    torch.manual_seed(0)
    model = CTCModel(cfg)
    model.freeze_feature_encoder()
    model.train()
    waves = torch.randn(3, 4000)
    # the math attention (the meta device's path): FlopCounterMode has no formula for CPU flash attention
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        logits, _ = model(waves, torch.full((3,), 4000))
        logits.backward(torch.randn_like(logits))
    B, T, V = logits.shape
    S = 2 * max(1, T // 4) + 1
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    expected = counter.get_total_flops() + B * T * V * 5 + B * T * S * 30 + 12 * trainable
    assert got["flops"] == expected
    assert got["frames"] == T and got["trainable"] == trainable
    assert got["bytes"] > 0 and all(v > 0 for v in got["floor_s"].values())


def test_the_cache_saving_is_the_conv_stacks_forward_by_the_conv_formula(monkeypatch):
    """bench cost's frozen-feature row: the conv stack's forward FLOPs equal 2 x C_in x K x C_out x T_out per
    layer and row (conv_bias off: no bias adds), and the step floor it saves is below the whole step's."""
    cfg = EncoderConfig(**TINY, conv_bias=False)
    monkeypatch.setattr(cost, "card_config", lambda family: cfg)
    got = cost.step_cost("wav2vec2-base", batch=3, seconds=0.25)
    n, c_in, expected = 4000, 1, 0
    for c_out, k, stride in zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride):
        n = (n - k) // stride + 1
        expected += 2 * c_in * k * c_out * n * 3
        c_in = c_out
    saved = got["cached"]
    assert saved["flops"] == expected and saved["gather_bytes"] == 2 * 3 * n * cfg.conv_dim[-1] * 2
    assert all(0 < saved["floor_s"][k] < got["floor_s"][k] for k in got["floor_s"])


def test_linear_layers_cost_two_flops_per_multiply_add():
    """An independent check of the counting itself: a stack of Linear layers, 2 * B * in * out per
    layer forward, twice that backward (input and weight gradients)."""
    counter = cost.OpCost(cost.GPUS)
    with torch.device("meta"):
        net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Linear(128, 32))
        x = torch.empty(10, 64, requires_grad=True)
    with counter:
        net(x).sum().backward()
    fwd = 2 * 10 * (64 * 128 + 128 * 32)
    assert counter.flops == 3 * fwd


def test_bench_step_model_cost_prints_every_card(capsys):
    assert (
        main(
            [
                "bench",
                "step",
                "--model-cost",
                "--cards",
                "wav2vec2-base-timit",
                "hubert-large-librispeech100",
                "--mfu",
                "0.5",
                "--memory-sizes",  # none: tests/test_bench_memory.py covers the memory table
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["bench"] == "cost" and [r["card"] for r in report["results"]] == [
        "wav2vec2-base-timit",
        "hubert-large-librispeech100",
    ]
    assert "predicted, not measured" in out and "989 TFLOP/s" in out and "798 TFLOP/s" in out
    w2v = report["results"][0]
    assert w2v["steps"] == 2900 and w2v["published"] == "32 min"
    # a larger model at longer utterances costs more per step
    assert report["results"][1]["step"]["flops"] > 5 * w2v["step"]["flops"]
    for r in report["results"]:
        g = r["gpus"]["h100"]
        assert g["mfu"]["0.5"] == pytest.approx(r["step"]["flops"] / (0.5 * 989e12) * r["steps"])


def test_bench_step_profile_prints_no_profiler_usdt_lines():
    """kineto writes `USDT:... profiler_start/stop` on file descriptor 2; the benchmark silences it."""
    pytest.importorskip("transformers")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastctc",
            "bench",
            "step",
            "--families",
            "wav2vec2-base",
            "--size",
            "tiny",
            "--batch",
            "2",
            "--seconds",
            "0.2",
            "--repeats",
            "1",
            "--warmup",
            "1",
            "--compile",
            "off",
            "--precision",
            "fp32",
            "--device",
            "cpu",
            "--profile",
            "3",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "USDT" not in proc.stdout + proc.stderr
    assert "-- profile: wav2vec2-base step fastctc" in proc.stdout
