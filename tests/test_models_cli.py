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
