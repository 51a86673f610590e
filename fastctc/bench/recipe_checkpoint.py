"""A random-init, Transformers-format wav2vec2 pretraining checkpoint at a config's [model] sizes: the
starting point of a mini card, written the way a Hub pretraining checkpoint is laid out.

    write_checkpoint(cfg.model, "runs/ckpt/tiny-w2v2", seed=0)

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


def write_checkpoint(model_cfg: ModelConfig, directory: str | Path, seed: int = 0) -> Path:
    """Write the checkpoint to `directory` (created; must not hold a config.json yet) and return it."""
    import transformers

    directory = Path(directory)
    if (directory / "config.json").exists():
        raise FileExistsError(
            f"{directory} already holds a checkpoint (config.json); choose another folder or delete it"
        )
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
