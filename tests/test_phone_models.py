"""Phone models leave as phone models: the export writes transformers' phoneme tokenizer (decoding there
gives space-separated phones), `fastctc transcribe` prints them spaced, and fine-tuning a checkpoint whose
CTC head does not fit the run's vocabulary starts a fresh head, saying so in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import test_data_phones as phone_corpus
import torch
from tiny_inference_model import save_tiny_model, tiny_phone_config

from fastctc.cli import main
from fastctc.config import load_config
from fastctc.data.phones import PHONES_48, PhoneVocab
from fastctc.models import CTCModel, save_pretrained
from fastctc.models.hf_tokenizer import read_vocab
from fastctc.train.run import build_model, resolve_model

transformers = pytest.importorskip("transformers")

VOCAB = PhoneVocab.for_set(48)  # 48 phones + [PAD]


def save_phone_model(directory, seed: int = 0):
    cfg = tiny_phone_config(VOCAB)
    torch.manual_seed(seed)
    model = CTCModel(cfg).eval()
    save_pretrained(model, directory, VOCAB.tokens, phones=True)
    return model


def test_phone_export_decodes_to_spaced_phones_in_transformers_and_in_transcribe(tmp_path, capsys):
    save_phone_model(tmp_path / "m")
    processor = transformers.AutoProcessor.from_pretrained(tmp_path / "m")
    tok = processor.tokenizer
    assert type(tok).__name__ == "Wav2Vec2PhonemeCTCTokenizer" and len(tok) == len(VOCAB)  # nothing added
    assert tok.convert_ids_to_tokens(list(range(len(VOCAB)))) == VOCAB.tokens and tok.pad_token_id == VOCAB.blank
    assert tok("sil dh ax cl k").input_ids == VOCAB.encode("sil dh ax cl k")  # phones in, no phonemizer
    hf = transformers.AutoModelForCTC.from_pretrained(tmp_path / "m").eval()

    rng = np.random.default_rng(0)
    paths, expected = [], []
    for i, n in enumerate((7000, 4100)):
        audio = (0.2 * rng.standard_normal(n)).astype(np.float32)
        sf.write(tmp_path / f"u{i}.wav", audio, 16_000, subtype="FLOAT")
        paths.append(str(tmp_path / f"u{i}.wav"))
        x = processor(audio, sampling_rate=16_000, return_tensors="pt").input_values
        with torch.no_grad():
            expected.append(processor.batch_decode(hf(x).logits.argmax(-1))[0])  # transformers' own decode
    for text in expected:  # space-separated phones of the set, several of them
        assert text == " ".join(text.split()) and len(text.split()) > 2 and set(text.split()) <= set(PHONES_48)

    assert main(["transcribe", str(tmp_path / "m"), *paths, "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"{p}\t{t}" for p, t in zip(paths, expected)]


def test_a_phoneme_tokenizer_saved_by_transformers_decodes_as_transformers_does(tmp_path):
    """A phoneme checkpoint's own tokenizer (espeak-style specials and a word delimiter): read_vocab
    decodes its ids as Wav2Vec2PhonemeCTCTokenizer.decode, specials dropped."""
    index = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", "|", "h", "ə", "l", "oʊ", "w", "ɜː"])}
    (tmp_path / "in.json").write_text(json.dumps(index, ensure_ascii=False), encoding="utf-8")
    tok = transformers.Wav2Vec2PhonemeCTCTokenizer(
        str(tmp_path / "in.json"), do_phonemize=False, word_delimiter_token="|"
    )
    tok.save_pretrained(tmp_path / "ckpt")
    vocab = read_vocab(tmp_path / "ckpt")
    assert vocab.phones and vocab.blank == 0
    ids = [5, 6, 7, 8, 4, 9, 10, 7, 3]  # h ə l oʊ | w ɜː l <unk>, no repeats (greedy_ids merges those)
    assert vocab.decode(ids) == tok.decode(ids, skip_special_tokens=True) == "h ə l oʊ w ɜː l"


def cfg_from(checkpoint, *overrides):
    return load_config(None, [f"model.checkpoint={checkpoint}", *overrides])


def test_a_fitting_head_is_kept_and_other_tokens_of_the_same_width_get_a_fresh_one(tmp_path):
    ours = save_phone_model(tmp_path / "phones")
    lines = []
    cfg, encoder, _ = resolve_model(cfg_from(tmp_path / "phones"), lines.append)
    model = build_model(cfg, encoder, VOCAB, lines.append)
    assert lines == [] and torch.equal(model.lm_head.weight, ours.lm_head.weight)  # the head fits: kept

    chars = ["|", *"abcdefghijklmnopqrstuvwxyz0123456789.,'-!?:;&(", "[UNK]", "[PAD]"]
    save_tiny_model(tmp_path / "chars49", vocab=chars)  # 49 outputs, as many as the phones
    cfg, encoder, _ = resolve_model(cfg_from(tmp_path / "chars49"), lines.append)
    torch.manual_seed(1)
    model = build_model(cfg, encoder, VOCAB, lines.append)
    assert len(lines) == 1 and "starting a fresh CTC head" in lines[0] and "other tokens" in lines[0]
    assert 0.005 < model.lm_head.weight.std() < 0.04 and not model.lm_head.bias.any()  # normal(0, 0.02), zero bias


def test_fine_tuning_a_character_checkpoint_on_phones_starts_a_fresh_head(tmp_path, capsys):
    """Today's user path: a character model re-fine-tuned on TIMIT phones (it failed on the head's shape)."""
    from safetensors.torch import load_file

    from fastctc.train.loop import train

    save_tiny_model(tmp_path / "chars")  # 29 outputs
    phone_corpus.ldc_phone_corpus(tmp_path / "timit")
    overrides = [
        "data.corpus=timit",
        f"data.root={tmp_path / 'timit'}",
        "data.train=train-nosa",
        "data.eval=test-nosa",
        "data.targets=phones",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.num_workers=0",
        "train.threads=1",
        "train.max_steps=1",
        "train.batch_size=2",
        "train.checkpoint_every=0",
        "optim.warmup_steps=1",
    ]
    train(cfg_from(tmp_path / "chars", *overrides), tmp_path / "run")
    said = [line for line in capsys.readouterr().out.splitlines() if "CTC head" in line]
    assert len(said) == 1 and "has 29 outputs, the run's vocabulary 49 tokens" in said[0]
    exported = load_file(tmp_path / "run" / "model" / "model.safetensors")
    start = load_file(tmp_path / "chars" / "model.safetensors")
    assert exported["lm_head.weight"].shape == (49, 32)
    conv = "wav2vec2.feature_extractor.conv_layers.0.conv.weight"  # frozen: still the checkpoint's
    assert torch.equal(exported[conv], start[conv])
    tok = json.loads((tmp_path / "run" / "model" / "tokenizer_config.json").read_text())
    assert tok["tokenizer_class"] == "Wav2Vec2PhonemeCTCTokenizer"
