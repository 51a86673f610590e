"""Tiny random Transformers checkpoints of each family, built from a config (nothing downloaded).

Shared by the tests/test_models_*.py files. Every parameter is perturbed away from transformers'
init (LayerNorms at ones, zero biases, ...) so that a swapped or ignored tensor shows in the outputs.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

# (model_type, config overrides): each family in the layouts its cards use
TINY = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=37,
    conv_dim=(16, 16, 16),
    conv_kernel=(10, 3, 3),
    conv_stride=(5, 2, 2),
    num_conv_pos_embeddings=16,  # even: exercises the trim of the extra frame
    num_conv_pos_embedding_groups=4,
    vocab_size=11,
    pad_token_id=10,
)
GROUP_POST_LN = dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False)
LAYER_PRE_LN = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
# the conformer checkpoints' layer-normed conv stack and swish, with a short depthwise kernel
LAYER_CONFORMER = dict(
    feat_extract_norm="layer", conv_bias=True, hidden_act="swish", num_hidden_layers=2, conv_depthwise_kernel_size=5
)

FAMILIES = {
    "wav2vec2-base": ("wav2vec2", GROUP_POST_LN),
    "wav2vec2-large": ("wav2vec2", LAYER_PRE_LN),
    "distilhubert": ("hubert", dict(GROUP_POST_LN, feat_proj_layer_norm=False, num_hidden_layers=2)),
    "hubert-large": ("hubert", LAYER_PRE_LN),
    "unispeech-large": ("unispeech", LAYER_PRE_LN),
    "wavlm-base": ("wavlm", dict(GROUP_POST_LN, num_buckets=32, max_bucket_distance=64)),
    "wavlm-large": ("wavlm", dict(LAYER_PRE_LN, num_buckets=32, max_bucket_distance=64)),
    # one layout (layer-normed convs, post-LN); 3 positional convs of an even kernel: exercises the trim
    "data2vec-audio": (
        "data2vec-audio",
        dict(conv_bias=False, num_hidden_layers=2, num_conv_pos_embeddings=3, conv_pos_kernel_size=6),
    ),
    "conformer-rel-pos": ("wav2vec2-conformer", dict(LAYER_CONFORMER, position_embeddings_type="relative")),
    "conformer-rope": ("wav2vec2-conformer", dict(LAYER_CONFORMER, position_embeddings_type="rotary")),
}


class _Prefix(dict):
    """model_type -> the base model's attribute and key prefix (transformers' base_model_prefix)."""

    def __missing__(self, model_type: str) -> str:
        return model_type.replace("-", "_")


PREFIX = _Prefix()


def hf_config(model_type: str, **overrides):
    return transformers.AutoConfig.for_model(model_type, **{**TINY, **overrides})


@torch.no_grad()
def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(0.1 * torch.randn(p.shape, generator=g))
    for name, b in model.named_buffers():  # BatchNorm statistics (the conformer's), variances kept positive
        if name.endswith("running_mean"):
            b.add_(0.1 * torch.randn(b.shape, generator=g))
        elif name.endswith("running_var"):
            b.mul_(torch.exp(0.2 * torch.randn(b.shape, generator=g)))
    return model


def tiny_ctc_model(family: str, seed: int = 0, **overrides):
    """A random transformers *ForCTC model of the family, eval mode, float32."""
    model_type, layout = FAMILIES[family]
    torch.manual_seed(seed)
    model = transformers.AutoModelForCTC.from_config(hf_config(model_type, **{**layout, **overrides}))
    return perturb(model, seed).eval()


def base_model(hf_ctc):
    return getattr(hf_ctc, PREFIX[hf_ctc.config.model_type])


def audio_batch(lengths=(1600, 1237, 903), seed: int = 1):
    """Zero-padded waveforms (B, N), lengths (B,) and the matching transformers attention_mask."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    N = int(lengths.max())
    x = torch.randn(len(lengths), N, generator=g)
    mask = torch.arange(N)[None, :] < lengths[:, None]
    return x * mask, lengths, mask.long()
