"""Each model card's encoder and each other family's released sizes (random weights, short audio) against
transformers, through `fastctc parity`'s comparison. Slow: deselected by default; run with `pytest -m slow`."""

from __future__ import annotations

import pytest
import torch
from hf_checkpoints import transformers

from fastctc.models.parity import compare

BASE = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    feat_extract_norm="group",
    do_stable_layer_norm=False,
    conv_bias=False,
)
LARGE = dict(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    conv_bias=True,
)

# the architectures of the five cards' starting checkpoints (their config.json values)
CARDS = {
    "facebook/wav2vec2-base": ("wav2vec2", BASE),
    "ntu-spml/distilhubert": ("hubert", dict(BASE, num_hidden_layers=2, feat_proj_layer_norm=False)),
    "microsoft/unispeech-large-1500h-cv": ("unispeech", LARGE),
    "facebook/hubert-large-ll60k": ("hubert", LARGE),
    "microsoft/wavlm-large": ("wavlm", dict(LARGE, num_buckets=320, max_bucket_distance=800)),
}
# the families beyond the cards', at their released sizes (Data2VecAudioConfig's positional stack: 5 convs
# of kernel 19 in 16 groups; one layout, so no norm or layer-norm switches; Wav2Vec2BertConfig's defaults
# are facebook/w2v-bert-2.0's: 24 conformer layers of 1024, relative-key attention 64 left / 8 right, kernel 31)
D2V = dict(conv_bias=False, num_conv_pos_embeddings=5, conv_pos_kernel_size=19, num_conv_pos_embedding_groups=16)
FAMILIES = {
    "facebook/data2vec-audio-base": ("data2vec-audio", dict(D2V, hidden_size=768, num_hidden_layers=12)),
    "facebook/data2vec-audio-large": (
        "data2vec-audio",
        dict(D2V, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    ),
    # the conversion script's settings: swish, depthwise kernel 31, the large layer-normed conv stack
    "facebook/wav2vec2-conformer-rel-pos-large": (
        "wav2vec2-conformer",
        dict(LARGE, hidden_act="swish", conv_depthwise_kernel_size=31, position_embeddings_type="relative"),
    ),
    "facebook/wav2vec2-conformer-rope-large": (
        "wav2vec2-conformer",
        dict(LARGE, hidden_act="swish", conv_depthwise_kernel_size=31, position_embeddings_type="rotary"),
    ),
    "facebook/w2v-bert-2.0": ("wav2vec2-bert", {}),
    "facebook/w2v-bert-2.0 with the fine-tuning guide's adapter": ("wav2vec2-bert", dict(add_adapter=True)),
}


@pytest.mark.slow
@pytest.mark.parametrize("card", list(CARDS) + list(FAMILIES))
def test_real_size_parity(tmp_path, card):
    model_type, arch = {**CARDS, **FAMILIES}[card]
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(model_type, vocab_size=32, **arch)
    transformers.AutoModelForCTC.from_config(config).save_pretrained(tmp_path)
    result = compare(tmp_path, seconds=1.0, batch=2, per_tensor=False, float64=True, log=lambda *a: None)
    worst = {n: (c["logits_abs"], c["logits_rel"], c["grad_rel_f64_native"]) for n, c in result["cases"].items()}
    print(f"{card}: (logits abs, logits rel, grad rel vs float64) {worst}")  # what `pytest -m slow -s` reports
    for name, case in result["cases"].items():
        assert case["logits_abs"] <= 1e-4, (name, case)
        # Gradients against transformers run in float64: at 24 layers, transformers' own float32 WavLM
        # gradients (its attention goes through F.multi_head_attention_forward) drift past 1e-4 relative
        # on gru_rel_pos_linear.bias, so float32 against float32 would measure its rounding, not ours.
        assert case["grad_rel_f64_native"] <= 1e-4, (name, case)
