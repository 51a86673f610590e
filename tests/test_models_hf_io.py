"""Checkpoint reading and writing: both weight-norm spellings, shards, pretraining checkpoints (dropped
keys, fresh head), loud failures, `fastctc convert`, and save_pretrained -> transformers round trips."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch
from hf_checkpoints import FAMILIES, PREFIX, audio_batch, hf_config, perturb, tiny_ctc_model, transformers
from safetensors.torch import save_file

from fastctc.models import CTCModel, EncoderConfig, load_pretrained, save_pretrained
from fastctc.models.config import MODEL_TYPES
from fastctc.models.convert import convert

ATOL = 1e-4


def hf_logits(hf, x, mask):
    with torch.no_grad():
        return hf(x, attention_mask=mask).logits


def native_logits(model, x, lengths):
    with torch.no_grad():
        return model(x, lengths)[0]


def write_checkpoint(path, config, state):
    path.mkdir(parents=True, exist_ok=True)
    config.to_json_file(path / "config.json")
    save_file({k: v.clone().contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
    return path


def test_weight_norm_spellings(tmp_path):
    """weight_g/weight_v (torch.nn.utils.weight_norm) and parametrizations.weight.original0/1."""
    hf = tiny_ctc_model("wav2vec2-base")
    x, lengths, mask = audio_batch()
    ref = hf_logits(hf, x, mask)
    state = hf.state_dict()
    assert "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original0" in state
    old = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in state.items()
    }
    for name, weights in (("new", state), ("old", old)):
        model = load_pretrained(write_checkpoint(tmp_path / name, hf.config, weights))
        assert (native_logits(model, x, lengths) - ref).abs().max() <= ATOL, name
    both = {**state, **{k: v for k, v in old.items() if "weight_g" in k}}
    with pytest.raises(ValueError, match="both map to"):
        load_pretrained(write_checkpoint(tmp_path / "both", hf.config, both))


def test_sharded_checkpoint(tmp_path):
    hf = tiny_ctc_model("hubert-large")
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists() and not (tmp_path / "model.safetensors").exists()
    x, lengths, mask = audio_batch()
    assert (native_logits(load_pretrained(tmp_path), x, lengths) - hf_logits(hf, x, mask)).abs().max() <= ATOL


@pytest.mark.parametrize(
    "cls, family",
    [
        ("Wav2Vec2ForPreTraining", "wav2vec2-base"),  # quantizer, project_q, project_hid
        ("UniSpeechForPreTraining", "unispeech-large"),  # + ctc_proj
        ("HubertModel", "distilhubert"),  # bare model: keys without prefix
        ("WavLMModel", "wavlm-large"),
        ("Data2VecAudioModel", "data2vec-audio"),  # the Hub's data2vec-audio-base/-large are bare models
        ("Wav2Vec2ConformerForPreTraining", "conformer-rope"),  # + the rotary inv_freq buffer
    ],
)
def test_pretraining_checkpoint_gets_fresh_head(tmp_path, cls, family):
    model_type, layout = FAMILIES[family]
    torch.manual_seed(0)
    hf = perturb(getattr(transformers, cls)(hf_config(model_type, **layout, initializer_range=0.5))).eval()
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="vocab_size"):
        load_pretrained(tmp_path)
    model = load_pretrained(tmp_path, vocab_size=7)
    assert model.lm_head.weight.shape == (7, 32)
    assert not model.lm_head.bias.any()
    assert 0.3 < model.lm_head.weight.std().item() < 0.7  # normal(0, initializer_range) as transformers
    # the encoder is the checkpoint's: same hidden states as the transformers base model
    base = hf if cls.endswith("Model") else getattr(hf, PREFIX[model_type])
    x, lengths, mask = audio_batch()
    with torch.no_grad():
        ref = base(x, attention_mask=mask).last_hidden_state
        hidden = {}
        model.lm_head.register_forward_hook(lambda m, inp, out: hidden.setdefault("h", inp[0]))
        model(x, lengths)
    assert (hidden["h"] - ref).abs().max() <= ATOL


def test_missing_masked_spec_embed_is_initialised(tmp_path):
    """A checkpoint pretrained without SpecAugment has no masked_spec_embed; it starts uniform in [0, 1)."""
    hf = tiny_ctc_model("wav2vec2-base", mask_time_prob=0.0)
    hf.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path)
    assert 0 <= model.masked_spec_embed.min() and model.masked_spec_embed.max() < 1


def test_unknown_and_missing_keys_fail_loudly(tmp_path):
    hf = tiny_ctc_model("wav2vec2-large")
    state = hf.state_dict()
    extra = {**state, "wav2vec2.encoder.layers.0.attention.rel_attn_embed.weight": torch.zeros(32, 4)}
    with pytest.raises(KeyError, match="rel_attn_embed"):
        load_pretrained(write_checkpoint(tmp_path / "extra", hf.config, extra))
    dropped = {k: v for k, v in state.items() if "layers.2.final_layer_norm.bias" not in k}
    with pytest.raises(KeyError, match=r"encoder\.layers\.2\.final_layer_norm\.bias"):
        load_pretrained(write_checkpoint(tmp_path / "missing", hf.config, dropped))
    with pytest.raises(ValueError, match="lm_head"):
        load_pretrained(write_checkpoint(tmp_path / "ok", hf.config, state), vocab_size=5)


def test_conformer_keys_fail_loudly(tmp_path):
    """The conformer's table has its blocks' keys, not wav2vec2's layers', and every BatchNorm statistic."""
    hf = tiny_ctc_model("conformer-rel-pos")
    state = hf.state_dict()
    wav2vec2_layer = {**state, "wav2vec2_conformer.encoder.layers.0.attention.q_proj.bias": torch.zeros(32)}
    with pytest.raises(KeyError, match=r"layers\.0\.attention\.q_proj\.bias"):
        load_pretrained(write_checkpoint(tmp_path / "w2v", hf.config, wav2vec2_layer))
    dropped = {k: v for k, v in state.items() if "layers.1.conv_module.batch_norm.running_var" not in k}
    with pytest.raises(KeyError, match=r"layers\.1\.conv_module\.batch_norm\.running_var"):
        load_pretrained(write_checkpoint(tmp_path / "missing", hf.config, dropped))
    rope = tiny_ctc_model("conformer-rope")
    state = rope.state_dict()
    no_freq = {k: v for k, v in state.items() if "inv_freq" not in k}  # a function of the config: recomputed
    model = load_pretrained(write_checkpoint(tmp_path / "no_inv_freq", rope.config, no_freq))
    x, lengths, mask = audio_batch()
    assert (native_logits(model, x, lengths) - hf_logits(rope, x, mask)).abs().max() <= ATOL


def test_data2vec_audio_keys_fail_loudly(tmp_path):
    """data2vec-audio's table has its positional convs and not wav2vec2's one conv: a key of the other
    family, a missing positional conv or one too many is named."""
    hf = tiny_ctc_model("data2vec-audio")
    state = hf.state_dict()
    wav2vec2_pos = {**state, "data2vec_audio.encoder.pos_conv_embed.conv.bias": torch.zeros(32)}
    with pytest.raises(KeyError, match=r"pos_conv_embed\.conv\.bias"):
        load_pretrained(write_checkpoint(tmp_path / "w2v", hf.config, wav2vec2_pos))
    dropped = {k: v for k, v in state.items() if "pos_conv_embed.layers.2.conv.weight" not in k}
    with pytest.raises(KeyError, match=r"pos_conv_embed\.layers\.2\.conv\.weight"):
        load_pretrained(write_checkpoint(tmp_path / "missing", hf.config, dropped))
    extra = {**state, "data2vec_audio.encoder.pos_conv_embed.layers.3.conv.bias": torch.zeros(32)}
    with pytest.raises(KeyError, match=r"layers\.3\.conv\.bias"):
        load_pretrained(write_checkpoint(tmp_path / "extra", hf.config, extra))


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("model_type", "sew", "model_type"),
        ("feat_extract_norm", "batch", "feat_extract_norm"),
        ("hidden_act", "tanh", "hidden_act"),
        ("add_adapter", True, "add_adapter"),
    ],
)
def test_unsupported_config_values_fail_loudly(tmp_path, key, value, match):
    hf = tiny_ctc_model("wav2vec2-base")
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg[key] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=match):
        load_pretrained(tmp_path)


def test_hubert_conv_pos_batch_norm_is_refused(tmp_path):
    hf = tiny_ctc_model("hubert-large")
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "conv_pos_batch_norm": True}))
    with pytest.raises(ValueError, match="conv_pos_batch_norm"):
        load_pretrained(tmp_path)


def test_convert_pytorch_bin(tmp_path):
    hf = tiny_ctc_model("wavlm-base")
    (tmp_path / "bin").mkdir()
    hf.config.to_json_file(tmp_path / "bin" / "config.json")
    torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="fastctc convert"):
        load_pretrained(tmp_path / "bin")
    convert(tmp_path / "bin", tmp_path / "st")
    assert (tmp_path / "st" / "config.json").exists()
    x, lengths, mask = audio_batch()
    assert (native_logits(load_pretrained(tmp_path / "st"), x, lengths) - hf_logits(hf, x, mask)).abs().max() <= ATOL


VOCAB = ["a", "b", "c", "d", "e", "f", "g", "|", "'", "[UNK]", "[PAD]"]  # blank = [PAD], the last id


@pytest.mark.parametrize("family", list(FAMILIES))
def test_save_pretrained_round_trip(tmp_path, family):
    """A native model exported with save_pretrained gives transformers the same logits, and the
    processor files load with the recipe's settings."""
    hf = tiny_ctc_model(family, seed=3)
    hf.save_pretrained(tmp_path / "in")
    model = load_pretrained(tmp_path / "in")
    with torch.no_grad():  # make it a model fastctc "trained": weights no longer the checkpoint's
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_pretrained(model, tmp_path / "out", VOCAB, do_normalize=family != "distilhubert")

    back, info = transformers.AutoModelForCTC.from_pretrained(tmp_path / "out", output_loading_info=True)
    back.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"], info  # the checkpoint is whole
    assert type(back).__name__ == MODEL_TYPES[model.config.model_type]
    processor = transformers.Wav2Vec2Processor.from_pretrained(tmp_path / "out")
    assert processor.tokenizer.pad_token_id == back.config.pad_token_id == len(VOCAB) - 1
    assert len(processor.tokenizer) == len(VOCAB)
    layer_norm = model.config.feat_extract_norm == "layer"
    assert processor.feature_extractor.return_attention_mask == layer_norm
    assert processor.feature_extractor.do_normalize == (family != "distilhubert")

    x, lengths, _ = audio_batch()
    audio = [x[i, : lengths[i]].numpy() for i in range(len(lengths))]
    inputs = processor(audio, sampling_rate=16000, return_tensors="pt", padding=True)
    mask = inputs.get("attention_mask")
    with torch.no_grad():
        ref = back(inputs.input_values, attention_mask=mask).logits
        out, _ = model(inputs.input_values, lengths if layer_norm else None)
    assert (out - ref).abs().max() <= ATOL
    ids = out.argmax(-1)[0]
    assert isinstance(processor.decode(ids), str)


def test_save_pretrained_from_scratch_config(tmp_path):
    """A CTCModel built from an EncoderConfig (the from-scratch trainer's path) exports as well."""
    cfg = EncoderConfig(
        vocab_size=len(VOCAB),
        hidden_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=40,
        conv_dim=(8, 8),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=9,
        num_conv_pos_embedding_groups=2,
        mask_time_prob=0.0,
    )
    torch.manual_seed(0)
    model = CTCModel(cfg).eval()
    save_pretrained(model, tmp_path, VOCAB)
    back = transformers.AutoModelForCTC.from_pretrained(tmp_path).eval()
    x, _, _ = audio_batch()
    with torch.no_grad():
        assert (model(x)[0] - back(x).logits).abs().max() <= ATOL
    assert load_pretrained(tmp_path).config == dataclasses.replace(cfg, pad_token_id=len(VOCAB) - 1)


def test_save_pretrained_takes_a_token_to_id_dict_and_refuses_gaps(tmp_path):
    """A {token: id} vocabulary is written as the same tokenizer as its list in id order; ids with a gap
    cannot index a CTC head and are refused."""
    from fastctc.models.hf_tokenizer import read_vocab

    cfg = EncoderConfig(
        vocab_size=len(VOCAB),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=8,
        conv_dim=(4,),
        conv_kernel=(10,),
        conv_stride=(5,),
        num_conv_pos_embeddings=3,
        num_conv_pos_embedding_groups=2,
    )
    model = CTCModel(cfg).eval()
    shuffled = dict(sorted({t: i for i, t in enumerate(VOCAB)}.items()))  # not in id order
    save_pretrained(model, tmp_path / "dict", shuffled)
    save_pretrained(model, tmp_path / "list", VOCAB)
    assert read_vocab(tmp_path / "dict") == read_vocab(tmp_path / "list")
    assert read_vocab(tmp_path / "dict").tokens == VOCAB
    tokenizer = transformers.Wav2Vec2CTCTokenizer.from_pretrained(tmp_path / "dict")
    assert tokenizer.convert_ids_to_tokens(list(range(len(VOCAB)))) == VOCAB
    gap = {t: i + (i >= 3) for i, t in enumerate(VOCAB)}
    with pytest.raises(ValueError, match=r"save_pretrained: vocab ids must be 0\.\.10 without gaps"):
        save_pretrained(model, tmp_path / "gap", gap)


def test_config_map_edges(tmp_path):
    """Keys only one family reads; unknown keys warn by name; export refuses what transformers can't build."""
    from fastctc.models import config_from_hf, config_to_hf

    hf = transformers.AutoConfig.for_model("wav2vec2").to_dict()
    assert config_from_hf({**hf, "feat_proj_layer_norm": False}).feat_proj_layer_norm  # Wav2Vec2 ignores it
    assert not config_from_hf({**hf, "model_type": "hubert", "feat_proj_layer_norm": False}).feat_proj_layer_norm
    with pytest.warns(UserWarning, match="shiny_new_switch"):
        config_from_hf({**hf, "shiny_new_switch": 1})
    with pytest.raises(ValueError, match="model_type='hubert'"):
        config_to_hf(EncoderConfig(feat_proj_layer_norm=False))
    assert "feat_proj_layer_norm" in config_to_hf(EncoderConfig(model_type="hubert", feat_proj_layer_norm=False))
    # data2vec-audio has one layout: Data2VecAudioConfig ignores these keys, and so does the map
    d2v = transformers.AutoConfig.for_model("data2vec-audio").to_dict()
    cfg = config_from_hf({**d2v, "feat_extract_norm": "group", "do_stable_layer_norm": True})
    assert (cfg.feat_extract_norm, cfg.do_stable_layer_norm, cfg.conv_pos_kernel_size) == ("layer", False, 19)
    assert "feat_extract_norm" not in config_to_hf(cfg) and config_to_hf(cfg)["conv_pos_kernel_size"] == 19
    assert "conv_pos_kernel_size" not in config_to_hf(EncoderConfig())
    with pytest.raises(ValueError, match="one layout"):
        EncoderConfig(model_type="data2vec-audio")  # the default conv stack is group-normed


@pytest.mark.parametrize("model_type", list(MODEL_TYPES))
def test_a_config_json_without_optional_keys_reads_as_transformers_defaults(model_type):
    """A config.json naming only its model_type is the network transformers' config class builds with its own
    defaults (Wav2Vec2BertConfig's w2v-bert-2.0 sizes and relative-key attention, Data2VecAudioConfig's
    5 positional convs), field by field; the full default dict warns of no key it leaves unread."""
    from fastctc.models import config_from_hf

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = config_from_hf(transformers.AutoConfig.for_model(model_type).to_dict())
    bare = config_from_hf({"model_type": model_type})
    assert bare.output_size == full.output_size  # output_hidden_size None (hidden_size) or its value
    assert dataclasses.replace(bare, output_hidden_size=None) == dataclasses.replace(full, output_hidden_size=None)
