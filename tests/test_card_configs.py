"""The five card configs carry their card's recipe (DEVELOPERS.md / RECIPE.md), and need only a
checkpoint folder and a corpus root from the user."""

from pathlib import Path

import pytest

from fastctc.config import ConfigError, load_config, resolve_encoder

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# card: (corpus, train, eval, lr, per-process batch, warmup, epochs, eval batch)
CARDS = {
    "wav2vec2-base-timit": ("timit", "train", "test", 1e-4, 32, 1000, 20, 32),
    "distilhubert-timit": ("timit", "train", "test", 1e-4, 32, 1000, 20, 32),
    "unispeech-large-timit": ("timit", "train", "test", 1e-4, 32, 1000, 20, 32),
    "wavlm-large-timit": ("timit", "train", "test", 1e-4, 32, 1000, 100, 8),
    "hubert-large-librispeech100": ("librispeech", "train-clean-100", "dev-clean", 3e-4, 4, 500, 3, 32),
}


@pytest.mark.parametrize("card", sorted(CARDS))
def test_card_config_holds_the_recipe(card, tmp_path):
    corpus, train, eval_, lr, batch, warmup, epochs, eval_batch = CARDS[card]
    cfg = load_config(CONFIGS / f"{card}.toml", [f"model.checkpoint={tmp_path}", f"data.root={tmp_path}"])
    assert (cfg.data.corpus, cfg.data.train, cfg.data.eval) == (corpus, train, eval_)
    assert (cfg.optim.lr, cfg.train.batch_size, cfg.optim.warmup_steps, cfg.train.epochs) == (lr, batch, warmup, epochs)
    assert cfg.train.eval_batch_size == eval_batch
    assert cfg.optim.betas == [0.9, 0.999] and cfg.optim.eps == 1e-8 and cfg.optim.weight_decay == 0.0
    assert cfg.optim.max_grad_norm == 1.0 and cfg.train.seed == 42
    assert cfg.model.freeze_feature_encoder
    m = resolve_encoder(cfg.model)  # [model]'s fine-tuning values (with the checkpoint's shape, once it exists)
    assert m.layerdrop == 0.0
    assert (m.hidden_dropout, m.attention_dropout, m.activation_dropout, m.feat_proj_dropout, m.final_dropout) == (
        0.0,
    ) * 5
    assert (m.mask_time_prob, m.mask_time_length, m.mask_time_min_masks) == (0.05, 10, 2)
    assert cfg.data.max_duration_s == 20.0 and cfg.train.precision == "auto"
    assert cfg.data.do_normalize == (card != "distilhubert-timit")


@pytest.mark.parametrize("card", sorted(CARDS))
def test_card_config_without_a_checkpoint_says_which_one(card):
    with pytest.raises(ConfigError, match=r"model.checkpoint: '[\w.-]+/[\w.-]+' is not a directory"):
        load_config(CONFIGS / f"{card}.toml")


def test_tiny_scratch_config_loads():
    cfg = load_config(CONFIGS / "tiny-scratch.toml", ["data.train=a.jsonl", "data.eval=b.jsonl"])
    assert cfg.model.checkpoint == "" and cfg.data.corpus == "manifest"


def test_fairseq_base_100h_config_holds_fairseqs_settings_on_one_gpu(tmp_path):
    """examples/wav2vec/config/finetuning/base_100h.yaml: max_tokens 3.2 M samples x 2 GPUs x update_freq 4
    is 200 s of padded audio x grad_accum 8 on one GPU; tri-stage lr; fairseq's masking and dropouts."""
    cfg = load_config(CONFIGS / "fairseq-base-100h.toml", [f"model.checkpoint={tmp_path}", f"data.root={tmp_path}"])
    o, t, d = cfg.optim, cfg.train, cfg.data
    assert (d.corpus, d.train, d.eval) == ("librispeech", "train-clean-100", "dev-other")
    assert d.batch_seconds * d.sample_rate == 3_200_000 and t.grad_accum == 2 * 4 and d.max_duration_s == 0
    assert (o.lr, o.betas, o.eps, o.weight_decay) == (3e-5, [0.9, 0.98], 1e-8, 0.0)
    assert (o.schedule, o.phase_ratio, o.init_lr_scale, o.final_lr_scale) == ("tri_stage", [0.1, 0.4, 0.5], 0.01, 0.05)
    assert t.max_steps == 80_000 and t.freeze_finetune_steps == 0 and t.zero_infinity and not d.do_normalize
    m = resolve_encoder(cfg.model)
    assert (m.mask_time_prob, m.mask_time_length, m.mask_time_min_masks) == (0.65, 10, 2)
    assert (m.mask_feature_prob, m.mask_feature_length, m.mask_feature_min_masks) == (0.5, 64, 0)
    assert (m.layerdrop, m.activation_dropout, m.hidden_dropout, m.attention_dropout) == (0.1, 0.1, 0.0, 0.0)
    assert cfg.model.freeze_feature_encoder and cfg.model.attention_mask == "on"


def test_mms_adapter_config_holds_the_adapter_scripts_defaults(tmp_path):
    """run_speech_recognition_ctc_adapter.py's defaults and its README's Common Voice command."""
    cfg = load_config(CONFIGS / "mms-adapter.toml", [f"model.checkpoint={tmp_path}", f"data.root={tmp_path}"])
    m, o, t = cfg.model, cfg.optim, cfg.train
    assert (m.train_only, m.target_language, m.adapter_language, m.gradient_checkpointing) == (
        "adapters",
        "tur",
        "",
        True,
    )
    assert m.encoder["adapter_attn_dim"] == 16
    assert (o.lr, o.warmup_steps, o.schedule, t.epochs, t.batch_size, t.seed) == (1e-3, 100, "linear", 4, 32, 42)
    enc = m.encoder
    assert (enc["final_dropout"], enc["layerdrop"], enc["mask_time_prob"], enc["mask_time_length"]) == (
        0.0,
        0.0,
        0.05,
        10,
    )
    assert (enc["mask_feature_prob"], enc["mask_feature_length"], cfg.data.max_duration_s) == (0.0, 10, 20.0)
