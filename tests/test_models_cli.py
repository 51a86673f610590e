"""`fastctc convert` and `fastctc parity` through the command line, on a tiny checkpoint."""

from __future__ import annotations

import json

import torch
from hf_checkpoints import tiny_ctc_model

from fastctc.cli import main


def test_convert_then_parity(tmp_path, capsys):
    hf = tiny_ctc_model("unispeech-large")
    (tmp_path / "bin").mkdir()
    hf.config.to_json_file(tmp_path / "bin" / "config.json")
    torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    assert main(["convert", str(tmp_path / "bin"), str(tmp_path / "st")]) == 0
    assert (tmp_path / "st" / "model.safetensors").exists()

    capsys.readouterr()
    assert main(["parity", str(tmp_path / "st"), "--seconds", "0.15", "--summary"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result["cases"]) == {"no padding", "padding"}
    for case in result["cases"].values():
        assert case["logits_abs"] <= 1e-4 and case["grad_rel"] <= 1e-4
        assert case["grad_tensors"] == sum(1 for p in hf.parameters()) - 1  # all but masked_spec_embed
        assert case["native_s"] > 0 and case["transformers_s"] > 0


def test_parity_on_a_checkpoint_without_a_ctc_head_uses_a_fresh_one(tmp_path, capsys):
    """A pretraining checkpoint (no lm_head) loads only with a vocabulary size: parity picks 32 itself,
    on the typed error load_pretrained raises, and says so."""
    import pytest

    from fastctc.bench.recipe_checkpoint import write_checkpoint
    from fastctc.config import load_config
    from fastctc.errors import MissingHeadError
    from fastctc.models import load_pretrained

    sizes = [
        "model.hidden_size=32",
        "model.num_attention_heads=2",
        "model.intermediate_size=37",
        "model.num_hidden_layers=1",
        "model.conv_dim=[16, 16, 16, 16, 16, 16, 16]",
        "model.num_conv_pos_embedding_groups=2",
    ]
    ckpt = write_checkpoint(load_config(None, sizes).model, tmp_path / "ckpt", seed=0)
    with pytest.raises(MissingHeadError, match="no CTC head"):
        load_pretrained(ckpt)
    assert main(["parity", str(ckpt), "--seconds", "0.15", "--summary"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "checkpoint has no CTC head: using a fresh one of 32 tokens (set --vocab-size)"
    result = json.loads(out[-1])
    for case in result["cases"].values():
        assert case["logits_abs"] <= 1e-4 and case["grad_rel"] <= 1e-4
