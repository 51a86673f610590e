"""`fastctc export MODEL --onnx OUT.onnx`: onnxruntime's logits on padded batches of mixed lengths equal
fastctc's, and transformers' one utterance at a time, unpadded; the metadata says how to feed and decode."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from hf_checkpoints import tiny_ctc_model

from fastctc.cli import main
from fastctc.data.batching import pad_waveforms
from fastctc.models import load_pretrained, save_pretrained
from fastctc.models.ctc_model import exact_logits

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOKENS = ["|", *"abcdefgh", "[UNK]", "[PAD]"]  # the tiny checkpoints' 11 outputs, blank = [PAD] = 10
ATOL = 1e-4
# (family, do_normalize): a group-norm model fed no attention mask, and a layer-norm one with WavLM's
# relative position bias, fed a mask; DistilHuBERT's convention of un-normalised audio on the first
LAYOUTS = [("wav2vec2-base", False), ("wavlm-large", True)]


def exported(family: str, do_normalize: bool, tmp_path):
    """A Transformers-format checkpoint of the tiny family saved by fastctc, and its ONNX export."""
    hf = tiny_ctc_model(family)
    hf.save_pretrained(tmp_path / "hf")
    native = load_pretrained(tmp_path / "hf")
    save_pretrained(native, tmp_path / "run" / "model", TOKENS, do_normalize=do_normalize)
    assert main(["export", str(tmp_path / "run"), "--onnx", str(tmp_path / "m.onnx")]) == 0  # a run directory
    return hf, native, tmp_path / "m.onnx"


def mixed_lengths(seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.3 * rng.standard_normal(int(n))).astype(np.float32) for n in (5203, 911, 3777, 2400, 6100)]


@pytest.mark.parametrize("family,do_normalize", LAYOUTS)
def test_onnxruntime_equals_fastctc_and_transformers_on_a_padded_batch_and_metadata_says_how(
    family, do_normalize, tmp_path, capsys
):
    hf, native, path = exported(family, do_normalize, tmp_path)
    assert "max |logit difference|" in capsys.readouterr().out
    audios = mixed_lengths()
    waves, lengths = pad_waveforms(audios, do_normalize)  # (5, 6100): another batch and length than the trace's
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, frames = session.run(None, {"input_values": waves.numpy(), "input_lengths": lengths.numpy()})
    with torch.no_grad():
        ref, ref_frames = exact_logits(native, waves, lengths)
    assert logits.shape == tuple(ref.shape) and frames.tolist() == ref_frames.tolist()
    for i, t in enumerate(frames.tolist()):
        np.testing.assert_allclose(logits[i, :t], ref[i, :t].numpy(), rtol=0, atol=ATOL)
        with torch.no_grad():  # transformers on the row alone, unpadded: what the row means
            alone = hf(waves[i : i + 1, : lengths[i]]).logits[0].numpy()
        assert alone.shape[0] == t
        np.testing.assert_allclose(logits[i, :t], alone, rtol=0, atol=ATOL)
    one, _ = session.run(None, {"input_values": waves[:1, :5203].numpy(), "input_lengths": lengths[:1].numpy()})
    np.testing.assert_allclose(one[0], logits[0, : one.shape[1]], rtol=0, atol=ATOL)  # batch of one

    # the metadata: how to feed the graph and decode its logits
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    mask = family == "wavlm-large"  # only the layer-norm feature encoder is fed a mask by default
    assert json.loads(meta["do_normalize"]) is do_normalize and json.loads(meta["return_attention_mask"]) is mask
    assert ("sqrt(var(x) + 1e-07)" in meta["normalization"]) is do_normalize
    assert "input_lengths" in meta["attention_mask"] and ("no attention mask" in meta["attention_mask"]) is not mask
    assert json.loads(meta["vocab"]) == TOKENS and meta["blank_id"] == "10" and json.loads(meta["special_ids"]) == [9]
    assert meta["model_type"] == hf.config.model_type and meta["tokenizer"] == "characters"
    assert int(meta["frame_stride_samples"]) == 20 and int(meta["sampling_rate"]) == 16_000  # strides 5 x 2 x 2
    # the graph's inputs and outputs, batch and length dynamic
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.input}
    assert dims == {"input_values": ["batch", "samples"], "input_lengths": ["batch"]}
    assert [o.name for o in proto.graph.output] == ["logits", "logit_lengths"]


def test_export_refuses_a_bad_target_and_a_missing_package(tmp_path, capsys, monkeypatch):
    save_pretrained(load_pretrained_tiny(tmp_path), tmp_path / "m", TOKENS)
    assert main(["export", str(tmp_path / "m"), "--onnx", str(tmp_path / "m.pt")]) == 2
    assert "with the .onnx suffix" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "m"), "--onnx", str(tmp_path / "nope" / "m.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    assert main(["export", str(tmp_path / "m"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'fastctc[onnx]'" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()


def load_pretrained_tiny(tmp_path):
    tiny_ctc_model("wav2vec2-base", num_hidden_layers=1).save_pretrained(tmp_path / "hf")
    return load_pretrained(tmp_path / "hf")
