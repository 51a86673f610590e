"""A card config end to end on tiny stand-ins: a random pretraining checkpoint of the card's family
(built from a config, nothing downloaded) and a TIMIT corpus in the LDC layout."""

import json

import pytest
import torch
from data_corpus_builders import timit_ldc
from hf_checkpoints import FAMILIES, hf_config, perturb

from fastctc.config import load_config
from fastctc.train.loop import train
from tests.test_config import REPO

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize(
    "card, cls, family, masked",
    [
        ("wav2vec2-base-timit", "Wav2Vec2ForPreTraining", "wav2vec2-base", False),  # group norm: no attention mask
        ("wavlm-large-timit", "WavLMModel", "wavlm-large", True),  # layer norm: attention mask, true lengths
    ],
)
def test_card_config_trains_from_a_pretraining_checkpoint(tmp_path, card, cls, family, masked):
    model_type, layout = FAMILIES[family]
    torch.manual_seed(0)
    hf = perturb(getattr(transformers, cls)(hf_config(model_type, **layout))).eval()
    hf.save_pretrained(tmp_path / "ckpt")
    timit_ldc(tmp_path / "TIMIT")
    cfg = load_config(
        REPO / "configs" / f"{card}.toml",
        [
            f"model.checkpoint={tmp_path / 'ckpt'}",
            f"data.root={tmp_path / 'TIMIT'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.num_workers=0",
            "train.batch_size=2",
            "train.eval_batch_size=2",
            "train.max_steps=3",
            "train.log_every=1",
            "train.threads=1",
            "model.mask_time_length=2",
        ],
    )
    result = train(cfg, tmp_path / "run")
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "train"] == [1, 2, 3]
    assert 0.0 <= result["wer"] and result["cer"] >= 0.0

    out = tmp_path / "run" / "model"
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["return_attention_mask"] is masked
    vocab = json.loads((out / "vocab.json").read_text())
    assert (
        list(vocab)[-2:] == ["[UNK]", "[PAD]"]
        and json.loads((out / "config.json").read_text())["pad_token_id"] == vocab["[PAD]"]
    )
    # the frozen feature encoder is still the checkpoint's
    ours = transformers.AutoModelForCTC.from_pretrained(out)
    base = hf if cls.endswith("Model") else getattr(hf, model_type)
    got = getattr(ours, model_type).feature_extractor.conv_layers[0].conv.weight
    torch.testing.assert_close(got, base.feature_extractor.conv_layers[0].conv.weight)


def test_checkpoint_preprocessor_decides_normalisation_and_attention_mask(tmp_path, capsys):
    model_type, layout = FAMILIES["wav2vec2-base"]
    torch.manual_seed(0)
    hf = perturb(transformers.Wav2Vec2ForPreTraining(hf_config(model_type, **layout))).eval()
    hf.save_pretrained(tmp_path / "ckpt")
    # a group-norm checkpoint whose feature extractor says: no normalisation, but do pass the mask
    (tmp_path / "ckpt" / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "feature_extractor_type": "Wav2Vec2FeatureExtractor",
                "do_normalize": False,
                "return_attention_mask": True,
                "sampling_rate": 16000,
                "feature_size": 1,
                "padding_value": 0.0,
            }
        )
    )
    timit_ldc(tmp_path / "TIMIT")
    cfg = load_config(
        REPO / "configs" / "wav2vec2-base-timit.toml",
        [
            f"model.checkpoint={tmp_path / 'ckpt'}",
            f"data.root={tmp_path / 'TIMIT'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.num_workers=0",
            "train.batch_size=2",
            "train.eval_batch_size=2",
            "train.max_steps=1",
            "train.threads=1",
            "model.mask_time_length=2",
        ],
    )
    assert cfg.data.do_normalize is True
    train(cfg, tmp_path / "run")
    out = capsys.readouterr().out
    assert "preprocessor_config.json says do_normalize=false; using it instead of data.do_normalize=true" in out
    assert "attention mask on" in out
    assert load_config(tmp_path / "run" / "config.toml").data.do_normalize is False
    pre = json.loads((tmp_path / "run" / "model" / "preprocessor_config.json").read_text())
    assert pre["do_normalize"] is False and pre["return_attention_mask"] is True
