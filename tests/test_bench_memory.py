"""The XLS-R / MMS memory model (fastctc/bench/memory.py, printed by `fastctc bench cost`): a layer's saved
activations against a count by hand, the sizes' parameters against transformers' own models, the table's
arithmetic; and one training step with gradient checkpointing equal to the same step without it."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from fastctc.kernels import ctc_loss

from fastctc.bench import memory
from fastctc.cli import main
from fastctc.models import CTCModel


def test_a_layers_saved_activations_are_what_a_hand_count_gives():
    """Per pre-LN layer, in bf16 (2 B): each LayerNorm's input, the q/k/v projections' shared input, q, k,
    v, the attention output and out_proj's copy of it (the fused kernels'), the feed-forward's input, the
    GELU's input and output_dense's input (F wide); fp32 (4 B): the attention's log-sum-exp per head and
    frame, and each LayerNorm's mean and rstd per frame."""
    cfg = dataclasses.replace(
        memory.size_config("xls-r-300m"),
        hidden_size=64,
        num_attention_heads=4,
        intermediate_size=96,
        conv_dim=(32, 32),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    a = memory.activation_bytes(memory.measured_model(cfg, "all"), layers=5, seconds=0.1)
    T, D, F, H = a["frames"], 64, 96, 4
    assert a["layer"] == 2 * T * D * (2 + 1 + 4 + 1 + 1) + 2 * T * F * 2 + 4 * H * T + 2 * 2 * T * 4
    assert a["layer_input"] == 2 * T * D and a["ctc"] == 2 * T * cfg.vocab_size * 4


def test_the_sizes_have_transformers_parameter_counts_and_the_table_adds_up(capsys):
    transformers = pytest.importorskip("transformers")
    out = main(
        ["bench", "cost", "--cards", "distilhubert-timit", "--memory-sizes", "mms-1b-all", "--memory-batch", "8"]
    )
    assert out == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    adapters, whole = report["memory"]
    with torch.device("meta"):
        hf = transformers.Wav2Vec2ForCTC(
            transformers.Wav2Vec2Config(**memory.SIZES["mms-1b-all"], vocab_size=memory.VOCAB)
        )
    assert adapters["params"] == whole["params"] == sum(p.numel() for p in hf.parameters())
    assert adapters["trainable"] == sum(p.numel() for p in hf._get_adapters().values())  # load_adapter's tensors
    frozen_conv = sum(p.numel() for p in hf.wav2vec2.feature_extractor.parameters())
    assert whole["trainable"] == whole["params"] - frozen_conv
    for row in (adapters, whole):
        assert row["static_bytes"] == 4 * row["params"] + 16 * row["trainable"] + 2 * (row["params"] - frozen_conv)
        for mode in ("plain", "checkpointed"):
            total = row["static_bytes"] + 8 * row["at_batch"][f"{mode}_per_utt"]
            assert row[mode]["total_bytes"] == total and row[mode]["fits_80gb"] == (total <= 0.9 * 80 * 2**30)
        assert row["checkpointed"]["total_bytes"] < row["plain"]["total_bytes"]
        assert row["checkpointed"]["max_batch_long"] > row["plain"]["max_batch_long"] > 0


def test_a_step_with_gradient_checkpointing_equals_the_step_without_it():
    """MMS-1b's layer (1280 wide, adapters) at a reduced depth of 2, dropout on so that the recomputation
    must replay the same random draws: loss and every gradient equal."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(memory.size_config("mms-1b-all", num_hidden_layers=2), hidden_dropout=0.1)
    model = CTCModel(cfg).train()
    model.freeze_feature_encoder()
    lengths = torch.tensor([6400, 4800])
    waves = torch.randn(2, 6400) * (torch.arange(6400)[None, :] < lengths[:, None])
    targets, target_lengths = torch.randint(0, cfg.vocab_size - 1, (2, 5)), torch.tensor([5, 3])

    def step(checkpointing: bool):
        model.gradient_checkpointing(checkpointing)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same SpecAugment spans and dropout masks
        logits, frames = model(waves, lengths)
        loss = ctc_loss(logits, targets, frames, target_lengths, blank=cfg.vocab_size - 1, reduction="mean")
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_loss, plain = step(False)
    loss, grads = step(True)
    assert torch.equal(loss, plain_loss)  # measured: bitwise equal
    assert grads.keys() == plain.keys() and len(grads) > 20
    assert all(torch.equal(grads[n], plain[n]) for n in plain)
