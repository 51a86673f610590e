"""A Transformers-format wav2vec2 pretraining checkpoint, the starting point of a mini card, written the way
a Hub pretraining checkpoint is laid out: random init at a config's [model] sizes, or the encoder of a
model fastctc trained (`fastctc bench recipe --pretrain-on CONFIG`), its CTC head and tokenizer removed.

    write_checkpoint(cfg.model, "runs/ckpt/tiny-w2v2", seed=0)
    write_pretrained_checkpoint("runs/pretrain/model", "runs/ckpt/mini-timit-pretrained", seed=0)

The folder holds config.json (architectures Wav2Vec2ForPreTraining), model.safetensors (keys
`wav2vec2.*` plus the quantizer and projections CTC fine-tuning drops) and preprocessor_config.json
(Wav2Vec2FeatureExtractor: 16 kHz, do_normalize, the attention-mask convention of the norm type).
No vocab.json: as with a real pretraining checkpoint, both systems build the vocabulary from the corpus.
Needs transformers (the `bench` extra).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..config import ModelConfig, resolve_encoder
from ..models import default_attention_mask

# [model] keys -> Wav2Vec2Config keys with the same meaning (fine-tuning knobs included, so that a key
# the recipe script has no flag for, mask_time_min_masks, comes from the checkpoint as in a real card)
CONFIG_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "conv_dim",
    "conv_kernel",
    "conv_stride",
    "conv_bias",
    "feat_extract_norm",
    "do_stable_layer_norm",
    "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups",
    "mask_time_min_masks",
)


# What a pretraining checkpoint holds that CTC training never touches: the quantizer and the contrastive
# projections (random init here, as fine-tuning drops them)
PRETRAINING_ONLY = ("quantizer.", "project_hid.", "project_q.")


def _refuse_existing(directory: Path) -> None:
    if (directory / "config.json").exists():
        raise FileExistsError(
            f"{directory} already holds a checkpoint (config.json); choose another folder or delete it"
        )


def write_checkpoint(model_cfg: ModelConfig, directory: str | Path, seed: int = 0) -> Path:
    """Write the checkpoint to `directory` (created; must not hold a config.json yet) and return it."""
    import transformers

    directory = Path(directory)
    _refuse_existing(directory)
    encoder = resolve_encoder(model_cfg)  # a from-scratch config: EncoderConfig's defaults + its [model]
    config = transformers.Wav2Vec2Config(
        **{k: getattr(encoder, k) for k in CONFIG_KEYS}, architectures=["Wav2Vec2ForPreTraining"]
    )
    torch.manual_seed(seed)
    model = transformers.Wav2Vec2ForPreTraining(config).eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    transformers.Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16_000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=default_attention_mask(encoder),
    ).save_pretrained(directory)
    (directory / "MADE_BY.json").write_text(
        json.dumps({"by": "fastctc bench recipe --make-checkpoint", "seed": seed}) + "\n"
    )
    return directory


def write_pretrained_checkpoint(trained: str | Path, directory: str | Path, seed: int = 0, note: dict | None = None):
    """The encoder of `trained` (a Transformers-format wav2vec2 CTC folder fastctc wrote: a run's model/)
    as a Wav2Vec2ForPreTraining checkpoint in `directory`: every `wav2vec2.*` weight copied, the quantizer
    and projections random init (`seed`), no lm_head, no vocab.json or tokenizer files. The feature
    extractor's settings (do_normalize, the attention-mask convention) are the trained model's."""
    import transformers

    trained, directory = Path(trained), Path(directory)
    _refuse_existing(directory)
    source = json.loads((trained / "config.json").read_text())
    if source.get("model_type") != "wav2vec2":
        raise ValueError(
            f"{trained}/config.json: model_type {source.get('model_type')!r}; a pretraining checkpoint is written "
            "from a wav2vec2 model only (train the --pretrain-on config from scratch, without model.checkpoint)"
        )
    config = transformers.Wav2Vec2Config(
        **{k: source[k] for k in CONFIG_KEYS}, architectures=["Wav2Vec2ForPreTraining"]
    )
    torch.manual_seed(seed)
    model = transformers.Wav2Vec2ForPreTraining(config).eval()
    weights = {k: v for k, v in load_file(str(trained / "model.safetensors")).items() if not k.startswith("lm_head.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # a model trained without SpecAugment has no masked_spec_embed: it stays random init, as in transformers
    left = [k for k in missing if not k.startswith(PRETRAINING_ONLY) and k != "wav2vec2.masked_spec_embed"]
    if left or unexpected:
        raise ValueError(
            f"{trained}/model.safetensors does not fit Wav2Vec2ForPreTraining at its config.json's sizes: "
            f"missing {left[:3]}, unexpected {unexpected[:3]}"
        )
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    transformers.Wav2Vec2FeatureExtractor.from_pretrained(trained).save_pretrained(directory)
    made_by = {"by": "fastctc bench recipe --make-checkpoint --pretrain-on", "from": str(trained), "seed": seed}
    (directory / "MADE_BY.json").write_text(json.dumps({**made_by, **(note or {})}) + "\n")
    return directory
