"""The two sides the model benchmarks compare: a transformers *ForCTC model and the native CTCModel
holding the same weights, per family, at three sizes, with the fine-tuning recipe's settings.

Sizes:
  tiny  a few thousand parameters, for the smoke test (seconds);
  base  the family's layout at base width (768 wide, 12 layers; DistilHuBERT 2) with short audio:
        what a 2-core CPU finishes in minutes;
  card  the model card's architecture (large = 1024 wide, 24 layers) at its training batch: GPU only.
Recipe settings on both sides (RECIPE.md): dropouts and layerdrop 0, SpecAugment time masks
p=0.05 x 10 (min 2), feature encoder frozen, blank = [PAD] = the last id. Group-norm models see no
attention mask and CTC uses padded lengths; layer-norm models get the mask and true lengths.
Nothing is downloaded: transformers builds its model from a config with random weights, saves it,
and fastctc.models.load_pretrained reads that checkpoint back (the path a user takes).
"""

from __future__ import annotations

import dataclasses
import tempfile

import torch

from ..models import CTCModel, default_attention_mask, load_pretrained

VOCAB = 32  # the cards' character vocabularies are 30-32 tokens

BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
GROUP_POST_LN = dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False)
LAYER_PRE_LN = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    conv_dim=(16, 16, 16),
    conv_kernel=(10, 3, 3),
    conv_stride=(5, 2, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)
RECIPE = dict(
    hidden_dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    feat_proj_dropout=0.0,
    final_dropout=0.0,
    layerdrop=0.0,
    mask_time_prob=0.05,
    mask_time_length=10,
    mask_time_min_masks=2,
    ctc_loss_reduction="mean",
    ctc_zero_infinity=True,
)


@dataclasses.dataclass(frozen=True)
class Family:
    model_type: str
    layout: dict  # norm layout (+ family-specific keys)
    card_width: dict  # BASE or LARGE
    card_batch: int  # the card's per-GPU training batch
    card_seconds: float  # a typical padded utterance of the card's corpus


# The five model cards (RECIPE.md): TIMIT utterances ~3 s at batch 32; LibriSpeech ~15 s at 4 per GPU.
FAMILIES = {
    "wav2vec2-base": Family("wav2vec2", GROUP_POST_LN, BASE, 32, 3.0),
    "distilhubert": Family(
        "hubert", dict(GROUP_POST_LN, feat_proj_layer_norm=False, num_hidden_layers=2), BASE, 32, 3.0
    ),
    "unispeech-large": Family("unispeech", LAYER_PRE_LN, LARGE, 32, 3.0),
    "wavlm-large": Family("wavlm", LAYER_PRE_LN, LARGE, 32, 3.0),
    "hubert-large": Family("hubert", LAYER_PRE_LN, LARGE, 4, 15.0),
}
SIZES = ("tiny", "base", "card")


def hf_config(family: str, size: str):
    """The transformers config of `family` at `size` with the recipe's settings."""
    import transformers

    fam = FAMILIES[family]
    width = {"tiny": TINY, "base": BASE, "card": fam.card_width}[size]
    keys = {**width, **fam.layout, **RECIPE, "vocab_size": VOCAB, "pad_token_id": VOCAB - 1}
    return transformers.AutoConfig.for_model(fam.model_type, **keys)


def build_pair(family: str, size: str, seed: int = 0) -> tuple[torch.nn.Module, CTCModel]:
    """(transformers *ForCTC, native CTCModel) with the same random weights, train mode, float32, CPU,
    feature encoder frozen on both sides."""
    try:
        import transformers
    except ImportError as e:
        raise SystemExit("this benchmark compares against transformers: pip install transformers") from e
    transformers.utils.logging.disable_progress_bar()  # "Writing model shards" would clutter the table
    torch.manual_seed(seed)
    hf = transformers.AutoModelForCTC.from_config(hf_config(family, size))
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        native = load_pretrained(tmp)
    hf.freeze_feature_encoder()
    native.freeze_feature_encoder()
    return hf.train(), native.train()


def uses_attention_mask(model: CTCModel) -> bool:
    """The checkpoints' convention: only layer-norm feature encoders get an attention mask."""
    return default_attention_mask(model.config)


def audio_batch(batch: int, seconds: float, seed: int = 0, sample_rate: int = 16_000):
    """(waveforms (B, N), lengths (B,)): a length-bucketed batch, rows from N down to 90% of N, zero-padded."""
    g = torch.Generator().manual_seed(seed)
    N = int(seconds * sample_rate)
    lengths = torch.linspace(N, 0.9 * N, batch).long() if batch > 1 else torch.tensor([N])
    waves = torch.randn(batch, N, generator=g) * (torch.arange(N)[None, :] < lengths[:, None])
    return waves, lengths


def targets_for(model: CTCModel, lengths: torch.Tensor, seed: int = 0):
    """(targets (B, S) padded with 0, target_lengths (B,)): random labels (never the blank), about one
    per four frames, as characters per frame run in the cards' corpora."""
    g = torch.Generator().manual_seed(seed + 1)
    frames = model.output_lengths(lengths)
    target_lengths = (frames // 4).clamp(min=1)
    S = int(target_lengths.max())
    targets = torch.randint(0, VOCAB - 1, (len(lengths), S), generator=g)  # blank = VOCAB - 1 excluded
    targets = targets * (torch.arange(S)[None, :] < target_lengths[:, None])
    return targets, target_lengths
