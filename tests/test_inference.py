"""read_pretrained and `fastctc eval`/`transcribe` on checkpoints that transformers itself saved."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from hf_checkpoints import tiny_ctc_model

from fastctc.cli import main
from fastctc.data.text import CharVocab, DecoderVocab
from fastctc.errors import CheckpointError
from fastctc.models import default_attention_mask, read_pretrained

transformers = pytest.importorskip("transformers")
jiwer = pytest.importorskip("jiwer")

TEXTS = ["a bad cab", "dead beef", "fade"]


def _recipe_checkpoint(path, seed=0):
    """What run_speech_recognition_ctc.py saves: Wav2Vec2CTCTokenizer over vocab.json (letters, |, [UNK],
    [PAD]) adds <s> and </s>, so the CTC head is len(tokenizer) = vocab.json + 2 wide; group-norm
    feature extractor without attention mask."""
    chars = sorted(set("".join(TEXTS)) | {"g"})
    index = {("|" if c == " " else c): i for i, c in enumerate(chars)}
    index.update({"[UNK]": len(index), "[PAD]": len(index) + 1})
    path.mkdir()
    (path / "vocab_in.json").write_text(json.dumps(index))
    tok = transformers.Wav2Vec2CTCTokenizer(
        str(path / "vocab_in.json"), unk_token="[UNK]", pad_token="[PAD]", word_delimiter_token="|"
    )
    (path / "vocab_in.json").unlink()
    assert len(tok) == len(index) + 2  # <s>, </s>: the recipe's case
    hf = tiny_ctc_model("wav2vec2-base", seed=seed, vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    with torch.no_grad():  # make the added tokens win some frames, so dropping them is exercised
        hf.lm_head.bias[tok.bos_token_id] += 0.5
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(path)
    return hf, tok


def _hand_decode(hf, tok, audio):
    """Transformers' logits for one utterance, greedy: collapse repeats, drop <s>, </s>, [UNK]; the
    tokenizer then drops [PAD] and turns | into spaces."""
    x = torch.from_numpy((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7))[None]
    with torch.no_grad():
        ids = hf(x).logits.argmax(-1)[0].tolist()
    specials = {tok.bos_token_id, tok.eos_token_id, tok.unk_token_id}
    kept = [k for k, _ in itertools.groupby(ids) if k not in specials]
    return " ".join(tok.decode(kept, group_tokens=False).split()), ids


def test_read_pretrained_takes_the_tokenizers_added_tokens(tmp_path):
    hf, tok = _recipe_checkpoint(tmp_path / "ckpt")
    assert len(json.loads((tmp_path / "ckpt" / "vocab.json").read_text())) == len(tok) - 2
    loaded = read_pretrained(tmp_path / "ckpt")
    assert loaded.vocab.tokens == tok.convert_ids_to_tokens(list(range(len(tok))))
    assert loaded.blank == loaded.vocab.blank == tok.pad_token_id
    assert {loaded.vocab.tokens[i] for i in loaded.vocab.specials} == {"<s>", "</s>", "[UNK]"}
    assert loaded.do_normalize is True and loaded.attention_mask is False
    assert loaded.model.config.vocab_size == len(tok)
    x = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x)[0], hf(x).logits, rtol=1e-4, atol=1e-4)


def test_eval_scores_a_recipe_checkpoint_as_jiwer_does_on_transformers_greedy_output(tmp_path, capsys):
    hf, tok = _recipe_checkpoint(tmp_path / "ckpt")
    rng = np.random.default_rng(0)
    rows, refs, hyps, all_ids = [], [], [], []
    for i, text in enumerate(TEXTS):
        audio = (rng.standard_normal(3000 + 700 * i) * 0.1).astype(np.float32)
        sf.write(tmp_path / f"u{i}.wav", audio, 16_000)
        rows.append(json.dumps({"audio": f"u{i}.wav", "text": text}))
        hyp, ids = _hand_decode(hf, tok, audio)
        refs.append(text)
        hyps.append(hyp)
        all_ids += ids
    assert set(all_ids) & {tok.bos_token_id, tok.eos_token_id}, "the head's added outputs should win a frame"
    (tmp_path / "eval.jsonl").write_text("\n".join(rows) + "\n")
    # batch 1: a group-norm checkpoint sees padding as audio, and the reference runs unpadded
    assert main(["eval", str(tmp_path / "ckpt"), "--data", str(tmp_path / "eval.jsonl"), "--batch-size", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["utterances"] == 3
    assert result["wer"] == pytest.approx(jiwer.wer(refs, hyps)) and result["cer"] == pytest.approx(
        jiwer.cer(refs, hyps)
    )


def test_read_pretrained_refuses_a_head_the_tokenizer_does_not_cover(tmp_path):
    _recipe_checkpoint(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "added_tokens.json").unlink()
    config = json.loads((tmp_path / "ckpt" / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {
        k: v for k, v in config["added_tokens_decoder"].items() if v["content"] not in ("<s>", "</s>")
    }
    (tmp_path / "ckpt" / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="tokenizer has 10 tokens .* but the CTC head 12"):
        read_pretrained(tmp_path / "ckpt")


def test_read_pretrained_names_a_clashing_added_token(tmp_path):
    _recipe_checkpoint(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "added_tokens.json").write_text(json.dumps({"<s>": 0}))
    with pytest.raises(CheckpointError, match=r"added_tokens.json: id 0 is '<s>' there but '\|' in vocab.json"):
        read_pretrained(tmp_path / "ckpt")


def test_one_decode_for_both_vocabularies():
    tokens = ["|", "a", "b", "<s>", "[UNK]", "[PAD]"]
    ids = [1, 5, 0, 0, 3, 2, 4, 5, 1, 0]
    # CharVocab (references: blank dropped, [UNK] kept); DecoderVocab (hypotheses: specials dropped too)
    assert CharVocab(tokens).decode(ids) == "a <s>b[UNK]a"
    assert DecoderVocab(tokens, blank=5, specials=frozenset({3, 4})).decode(ids) == "a ba"


def test_default_attention_mask_follows_the_feature_encoder_norm():
    from fastctc.models import EncoderConfig

    assert default_attention_mask(EncoderConfig(feat_extract_norm="layer")) is True
    assert default_attention_mask(EncoderConfig(feat_extract_norm="group")) is False


def test_transcribe_a_missing_file_and_a_missing_model_say_so_in_one_line(tmp_path):
    _recipe_checkpoint(tmp_path / "ckpt")
    proc = subprocess.run(
        [sys.executable, "-m", "fastctc", "transcribe", str(tmp_path / "ckpt"), str(tmp_path / "nope.wav")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr == f"fastctc transcribe: skipping {tmp_path / 'nope.wav'}: no such file (check the path)\n"
    proc = subprocess.run(
        [sys.executable, "-m", "fastctc", "transcribe", str(tmp_path / "none"), str(tmp_path / "nope.wav")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"fastctc transcribe: {tmp_path / 'none'}: no model here")
