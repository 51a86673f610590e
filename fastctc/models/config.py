"""EncoderConfig: the sizes and switches of a wav2vec2-shaped CTC encoder.

Field names follow Transformers' config.json (Wav2Vec2Config and relatives) so that reading a
checkpoint's config is one explicit field map.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

_NORMS = ("group", "layer")
_ACTIVATIONS = ("gelu", "relu", "gelu_new", "silu", "swish")
# model_type -> the Transformers CTC class that loads our export (also the checkpoint key prefix)
MODEL_TYPES = {
    "wav2vec2": "Wav2Vec2ForCTC",
    "hubert": "HubertForCTC",
    "unispeech": "UniSpeechForCTC",
    "wavlm": "WavLMForCTC",
    "data2vec-audio": "Data2VecAudioForCTC",
    "wav2vec2-conformer": "Wav2Vec2ConformerForCTC",
    "wav2vec2-bert": "Wav2Vec2BertForCTC",
}
# Families without the conv feature encoder (w2v-BERT reads fbank features, models/fbank.py).
FBANK_FAMILIES = ("wav2vec2-bert",)
_POSITIONS = ("relative", "rotary", "relative_key")
# Families with one layout, whose transformers config has no switch for it: the values config.json
# cannot change (data2vec-audio: a LayerNorm on every conv, a post-LN transformer).
# (wav2vec2-conformer: conformer blocks, one final LayerNorm; its conv stack may be either.)
FIXED_LAYOUT = {
    "data2vec-audio": dict(feat_extract_norm="layer", do_stable_layer_norm=False),
    "wav2vec2-conformer": dict(do_stable_layer_norm=False),
}
_CONV_FIELDS = (
    "conv_dim",
    "conv_kernel",
    "conv_stride",
    "conv_bias",
    "feat_extract_norm",
    "feat_extract_activation",
    "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups",
    "do_stable_layer_norm",
)
# Fields only some families' config.json carries (the others' EncoderConfig keeps the default).
FAMILY_FIELDS = {
    "num_buckets": ("wavlm",),
    "max_bucket_distance": ("wavlm",),
    "conv_pos_kernel_size": ("data2vec-audio",),
    "position_embeddings_type": ("wav2vec2-conformer", *FBANK_FAMILIES),
    "rotary_embedding_base": ("wav2vec2-conformer",),
    "conv_depthwise_kernel_size": ("wav2vec2-conformer", *FBANK_FAMILIES),
    "conformer_conv_dropout": ("wav2vec2-conformer", *FBANK_FAMILIES),
    "feature_projection_input_dim": FBANK_FAMILIES,
    "left_max_position_embeddings": FBANK_FAMILIES,
    "right_max_position_embeddings": FBANK_FAMILIES,
    "add_adapter": FBANK_FAMILIES,
    "num_adapter_layers": FBANK_FAMILIES,
    "adapter_kernel_size": FBANK_FAMILIES,
    "adapter_stride": FBANK_FAMILIES,
    "adapter_act": FBANK_FAMILIES,
    "output_hidden_size": FBANK_FAMILIES,
    "use_intermediate_ffn_before_adapter": FBANK_FAMILIES,
    **{name: tuple(t for t in MODEL_TYPES if t not in FBANK_FAMILIES) for name in _CONV_FIELDS},
}


@dataclass
class EncoderConfig:
    # "wav2vec2" | "hubert" | "unispeech" | "wavlm" | "data2vec-audio" | "wav2vec2-conformer" |
    # "wav2vec2-bert": decides the key prefix, WavLM's relative position bias, data2vec's positional convs,
    # the conformer blocks, w2v-BERT's fbank front end, and whether time masks see the attention mask
    # (HuBERT draws them without it)
    model_type: str = "wav2vec2"
    vocab_size: int = 32
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    # conv feature encoder: one entry per layer
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: str = "group"  # "group": GroupNorm on conv 0 only; "layer": LayerNorm on every conv
    feat_extract_activation: str = "gelu"
    feat_proj_layer_norm: bool = True
    # positional convolution
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    # data2vec-audio: num_conv_pos_embeddings convs of this kernel (layer-normed) instead of one weight-normed
    conv_pos_kernel_size: int = 19
    # conformer blocks (wav2vec2-conformer, w2v-BERT): attention positions (wav2vec2-conformer: "relative",
    # Transformer-XL's, or "rotary" with its base; w2v-BERT: "relative_key", a learned embedding per
    # clamped distance j - i in [-left, right]), the conv module's depthwise kernel (odd; causal in
    # w2v-BERT) and the dropout after it
    position_embeddings_type: str = "relative"
    rotary_embedding_base: int = 10000
    left_max_position_embeddings: int = 64
    right_max_position_embeddings: int = 8
    conv_depthwise_kernel_size: int = 31
    conformer_conv_dropout: float = 0.0
    # w2v-BERT: the stacked fbank width
    feature_projection_input_dim: int = 160
    # w2v-BERT's adapter after the encoder (what transformers' fine-tuning guide turns on): layers of
    # strided convs (each frame count: floor((T + 2 (k // 2) - k) / stride) + 1) with self-attention, of
    # width output_hidden_size (None: hidden_size); with use_intermediate_ffn_before_adapter a half-step
    # ReLU feed-forward before it
    add_adapter: bool = False
    num_adapter_layers: int = 1
    adapter_kernel_size: int = 3
    adapter_stride: int = 2
    adapter_act: str = "relu"
    output_hidden_size: int | None = None
    use_intermediate_ffn_before_adapter: bool = False
    # transformer layout: False = post-LN (base models), True = pre-LN + final LayerNorm (large models)
    do_stable_layer_norm: bool = False
    # MMS attention adapters: a bottleneck of this width after every pre-LN layer (wav2vec2 only); None = none
    adapter_attn_dim: int | None = None
    # WavLM gated relative position bias (bucketed, owned by layer 0)
    num_buckets: int = 320
    max_bucket_distance: int = 800
    # dropouts
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    feat_proj_dropout: float = 0.0
    final_dropout: float = 0.0
    layerdrop: float = 0.0
    # SpecAugment (training mode only)
    apply_spec_augment: bool = True
    mask_time_prob: float = 0.05
    mask_time_length: int = 10
    mask_time_min_masks: int = 2
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 10
    mask_feature_min_masks: int = 0
    pad_token_id: int = 0  # the CTC blank
    initializer_range: float = 0.02  # std of a fresh CTC head, as transformers initialises nn.Linear

    def __post_init__(self) -> None:
        self.conv_dim, self.conv_kernel, self.conv_stride = (
            tuple(self.conv_dim),
            tuple(self.conv_kernel),
            tuple(self.conv_stride),
        )
        problem = encoder_problem(vars(self))
        if problem:
            raise ValueError(f"EncoderConfig: {problem}")

    @property
    def output_size(self) -> int:
        """Width of the encoder's output, the CTC head's input (w2v-BERT's adapter may change it)."""
        return (self.output_hidden_size or self.hidden_size) if self.add_adapter else self.hidden_size

    @property
    def frame_stride(self) -> int:
        """Audio samples per output frame (320 = 20 ms at 16 kHz for the standard stack, and for
        w2v-BERT's fbank hop of 160 stacked by 2)."""
        if self.model_type in FBANK_FAMILIES:
            return 320 * (self.adapter_stride**self.num_adapter_layers if self.add_adapter else 1)
        out = 1
        for s in self.conv_stride:
            out *= s
        return out


# Fields a fine-tuning run may set over a checkpoint's config.json: they change training, not the
# network's shape. Every other field is the checkpoint's (an error to set alongside one), and
# vocab_size / pad_token_id come from the run's vocabulary.
FINE_TUNING_FIELDS = (
    "hidden_dropout",
    "attention_dropout",
    "activation_dropout",
    "feat_proj_dropout",
    "final_dropout",
    "layerdrop",
    "conformer_conv_dropout",
    "apply_spec_augment",
    "mask_time_prob",
    "mask_time_length",
    "mask_time_min_masks",
    "mask_feature_prob",
    "mask_feature_length",
    "mask_feature_min_masks",
    "initializer_range",
    "add_adapter",  # w2v-BERT: true over a checkpoint without one starts a fresh adapter (hf_weights.load_pretrained)
)
# Of those, the ones run_speech_recognition_ctc.py always passes in its config.update (its flags'
# defaults replace the checkpoint's values): dropouts 0.0, layerdrop 0.0, time masks p=0.05 x 10, feature
# masks p=0.0 x 10 (RECIPE.md). fastctc's defaults are these values, so a checkpoint gets them unless the
# config says otherwise. mask_time_min_masks is not among them: the script has no flag for it, so it
# stays the checkpoint's.
RECIPE_FIELDS = (
    "hidden_dropout",
    "attention_dropout",
    "activation_dropout",
    "feat_proj_dropout",
    "final_dropout",
    "layerdrop",
    "mask_time_prob",
    "mask_time_length",
    "mask_feature_prob",
    "mask_feature_length",
)
VOCAB_FIELDS = ("vocab_size", "pad_token_id")

_POSITIVE = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups",
    "conv_pos_kernel_size",
    "rotary_embedding_base",
    "conv_depthwise_kernel_size",
    "mask_time_length",
    "mask_feature_length",
    "num_buckets",
    "max_bucket_distance",
    "layer_norm_eps",
    "feature_projection_input_dim",
    "num_adapter_layers",
    "adapter_kernel_size",
    "adapter_stride",
)
_PROBABILITIES = (
    "hidden_dropout",
    "attention_dropout",
    "activation_dropout",
    "feat_proj_dropout",
    "final_dropout",
    "layerdrop",
    "conformer_conv_dropout",
    "mask_time_prob",
    "mask_feature_prob",
)


def encoder_problem(v: dict, prefix: str = "", run: bool = False) -> str | None:
    """The first thing wrong with EncoderConfig field values `v`, as "KEY: what" with every key named
    `prefix + field` (the TOML loader passes "model."), or None. The one set of encoder checks.
    run: for a training run, where a dropout or layerdrop of 1 would drop everything (an encoder may hold it)."""
    k = lambda name: prefix + name  # noqa: E731
    n_conv = (len(v["conv_dim"]), len(v["conv_kernel"]), len(v["conv_stride"]))
    if not n_conv[0] == n_conv[1] == n_conv[2] > 0:
        return (
            f"{k('conv_dim')}: {k('conv_dim')}, conv_kernel and conv_stride need the same number (>0) of "
            f"entries, one per conv layer, got {n_conv[0]}, {n_conv[1]} and {n_conv[2]}"
        )
    if not all(x > 0 for x in (*v["conv_dim"], *v["conv_kernel"], *v["conv_stride"])):
        return f"{k('conv_dim')}: conv sizes, kernels and strides must all be > 0"
    for name in _POSITIVE:
        if not v[name] > 0:
            return f"{k(name)}: must be > 0, got {v[name]}"
    for name in _PROBABILITIES:
        if not (0.0 <= v[name] < 1.0 if run else 0.0 <= v[name] <= 1.0):
            return f"{k(name)}: must be in [0, {'1)' if run else '1]'}, got {v[name]}"
    for name in (
        "mask_time_min_masks",
        "mask_feature_min_masks",
        "pad_token_id",
        "left_max_position_embeddings",
        "right_max_position_embeddings",
    ):
        if v[name] is not None and v[name] < 0:  # some config.json files carry pad_token_id null
            return f"{k(name)}: must be >= 0, got {v[name]}"
    choices = {
        "model_type": tuple(MODEL_TYPES),
        "feat_extract_norm": _NORMS,
        "hidden_act": _ACTIVATIONS,
        "feat_extract_activation": _ACTIVATIONS,
        "position_embeddings_type": _POSITIONS,
        "adapter_act": _ACTIVATIONS,
    }
    for name, allowed in choices.items():
        if v[name] not in allowed:
            return f"{k(name)}: must be one of {allowed}, got {v[name]!r}"
    problem = v.get("adapter_attn_dim") is not None and _adapter_problem(v, k)
    if problem:
        return problem
    for name in ("num_attention_heads", "num_conv_pos_embedding_groups"):
        if v["hidden_size"] % v[name]:
            return f"{k(name)}: must divide {k('hidden_size')} {v['hidden_size']}, got {v[name]}"
    return _conformer_problem(v, k) or _fbank_problem(v, k)


def _conformer_problem(v: dict, k) -> str | None:
    """What the conformer blocks' and the one-layout families' checks find."""
    if v["conv_depthwise_kernel_size"] % 2 == 0:  # upstream's 'SAME' padding needs an odd kernel (both families)
        return f"{k('conv_depthwise_kernel_size')}: must be odd, got {v['conv_depthwise_kernel_size']}"
    if v["position_embeddings_type"] == "rotary" and (v["hidden_size"] // v["num_attention_heads"]) % 2:
        return f"{k('num_attention_heads')}: rotary positions need an even head size, got {v['hidden_size']} / {v['num_attention_heads']}"
    if v["model_type"] == "wav2vec2-conformer" and v["position_embeddings_type"] not in ("relative", "rotary"):
        return f"{k('position_embeddings_type')}: wav2vec2-conformer's attention positions are 'relative' or 'rotary', got {v['position_embeddings_type']!r}"
    for name, value in FIXED_LAYOUT.get(v["model_type"], {}).items():
        if v[name] != value:
            return f"{k(name)}: {v['model_type']} has one layout, {name} = {value!r}; got {v[name]!r}"
    return None


def _fbank_problem(v: dict, k) -> str | None:
    """What w2v-BERT's checks find: its fbank width, the one attention fastctc implements, its adapter."""
    if v["model_type"] not in FBANK_FAMILIES:
        if v["add_adapter"]:
            return f"{k('add_adapter')}: fastctc implements w2v-BERT's adapter only, not {v['model_type']}'s"
        return None
    out = v["output_hidden_size"]
    if out is not None and not (out > 0 and out % v["num_attention_heads"] == 0):
        return f"{k('output_hidden_size')}: must be > 0 and a multiple of {k('num_attention_heads')} {v['num_attention_heads']}, got {out}"
    if v["use_intermediate_ffn_before_adapter"] and not v["add_adapter"]:
        return f"{k('use_intermediate_ffn_before_adapter')}: needs {k('add_adapter')} = true (transformers refuses it alone)"
    if v["feature_projection_input_dim"] != 160:
        return f"{k('feature_projection_input_dim')}: w2v-BERT's front end makes 160 (80 mel bins stacked by 2), got {v['feature_projection_input_dim']}"
    if v["position_embeddings_type"] != "relative_key":
        return f"{k('position_embeddings_type')}: fastctc implements w2v-BERT's 'relative_key' attention only, got {v['position_embeddings_type']!r}"
    return None


def _adapter_problem(v: dict, k) -> str | None:
    """transformers builds MMS adapters only in Wav2Vec2EncoderLayerStableLayerNorm: elsewhere the key
    would load as a network without them."""
    if not v["adapter_attn_dim"] > 0:
        return f"{k('adapter_attn_dim')}: must be > 0 (16 in MMS), got {v['adapter_attn_dim']}"
    if v["model_type"] != "wav2vec2" or not v["do_stable_layer_norm"]:
        return (
            f"{k('adapter_attn_dim')}: attention adapters exist only in wav2vec2's pre-LN layout "
            f"(model_type 'wav2vec2', do_stable_layer_norm true, as MMS), got model_type {v['model_type']!r} "
            f"with do_stable_layer_norm {str(v['do_stable_layer_norm']).lower()}"
        )
    return None


# An MMS language adapter's file in a checkpoint directory (transformers' WAV2VEC2_ADAPTER_SAFE_FILE)
ADAPTER_FILE = "adapter.{}.safetensors"
ADAPTER_LANGUAGE = re.compile(r"[A-Za-z0-9_-]+")  # a file-name part: an ISO 639-3 code (tur) or any tag


# ---- config.json (Transformers) <-> EncoderConfig -----------------------------------------------

# Keys read into the EncoderConfig field of the same name.
HF_FIELDS = tuple(f for f in EncoderConfig.__dataclass_fields__)

# Transformers' defaults where they differ from ours, for a config.json that omits the key
# (our defaults are the fine-tuning recipe's; Wav2Vec2Config and relatives default to these).
_HF_DEFAULTS = {
    "hidden_dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.1,
    "final_dropout": 0.1,
    "layerdrop": 0.1,
    "conformer_conv_dropout": 0.1,
}
# Per family, where its transformers config class defaults otherwise (Wav2Vec2BertConfig: facebook/w2v-bert-2.0's
# sizes, swish, relative-key attention, no dropout in the encoder; Data2VecAudioConfig: 5 positional convs).
_HF_FAMILY_DEFAULTS = {
    "wav2vec2-bert": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "hidden_act": "swish",
        "position_embeddings_type": "relative_key",
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
    },
    "data2vec-audio": {"num_conv_pos_embeddings": 5},
}

# Keys whose only supported value is the one given: anything else changes the network.
_HF_REQUIRED = {
    "add_adapter": (False, None),  # wav2vec2's adapter stack is not implemented (w2v-BERT's is: FAMILY_FIELDS)
    "conv_pos_batch_norm": (False, None),  # HuBERT variant with BatchNorm instead of weight norm
}

# Keys that do not affect a CTC encoder: generic config keys, pretraining heads, other task heads,
# loss settings (the trainer owns the loss), legacy names, the conformer's relative-position table size
# (extended past it, so it changes no value). The add_adapter stack's sizes (num_adapter_layers,
# adapter_kernel_size, adapter_stride, output_hidden_size) are not listed: they are EncoderConfig fields,
# which w2v-BERT reads (FAMILY_FIELDS); every other family's config.json carries them unread, its
# add_adapter being refused above.
_HF_IGNORED = frozenset(
    """
    _name_or_path architectures transformers_version torch_dtype dtype id2label label2id bos_token_id
    eos_token_id return_dict output_attentions output_hidden_states problem_type is_encoder_decoder
    chunk_size_feed_forward tie_word_embeddings use_cache add_cross_attention tokenizer_class prefix
    task_specific_params finetuning_task _attn_implementation_autoset
    max_source_positions
    codevector_dim num_codevector_groups num_codevectors_per_group proj_codevector_dim
    contrastive_logits_temperature diversity_loss_weight num_negatives feat_quantizer_dropout
    num_ctc_classes replace_prob
    classifier_proj_size use_weighted_layer_sum tdnn_dim tdnn_kernel tdnn_dilation xvector_output_dim
    ctc_loss_reduction ctc_zero_infinity
    num_feat_extract_layers feat_extract_dropout gradient_checkpointing freeze_feat_extract_train
    mask_channel_length mask_channel_min_space mask_channel_other mask_channel_prob mask_channel_selection
    mask_time_min_space mask_time_other mask_time_selection no_mask_channel_overlap no_mask_time_overlap
    """.split()
)


def config_from_hf(hf: dict, source: str = "config.json") -> EncoderConfig:
    """EncoderConfig from a Transformers config.json dict; unsupported values raise, naming the key."""
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{source}: model_type {model_type!r} is not supported; fastctc loads {tuple(MODEL_TYPES)}")
    for key, allowed in _HF_REQUIRED.items():
        if model_type not in FAMILY_FIELDS.get(key, ()) and hf.get(key) not in allowed:
            raise ValueError(f"{source}: {key}={hf[key]!r} is not supported (expected one of {allowed})")
    n_conv, n_dim = hf.get("num_feat_extract_layers"), len(hf.get("conv_dim", EncoderConfig.conv_dim))
    if n_conv is not None and n_conv != n_dim:
        raise ValueError(f"{source}: num_feat_extract_layers={n_conv} but conv_dim has {n_dim} entries")
    unknown = sorted(set(hf) - set(HF_FIELDS) - set(_HF_REQUIRED) - _HF_IGNORED)
    if unknown:
        # a warning, not an error: checkpoints written by other transformers versions carry extra keys
        warnings.warn(
            f"{source}: keys {unknown} are not read by fastctc; if one changes the network, map it in "
            f"fastctc/models/config.py (HF_FIELDS), else list it in _HF_IGNORED there",
            stacklevel=2,
        )
    ours = [k for k in HF_FIELDS if model_type in FAMILY_FIELDS.get(k, (model_type,))]  # other families' stay default
    defaults = {**_HF_DEFAULTS, **_HF_FAMILY_DEFAULTS.get(model_type, {})}
    values = {k: hf[k] if k in hf else defaults[k] for k in ours if k in hf or k in defaults}
    if values.get("vocab_size", 0) is None:
        del values["vocab_size"]  # a pretraining checkpoint's null; the run's vocabulary sets it
    if model_type != "hubert":
        values["feat_proj_layer_norm"] = True  # only HubertConfig has the switch; the others always normalise
    values.update(FIXED_LAYOUT.get(model_type, {}))  # transformers ignores these keys there, so do we
    return EncoderConfig(**values)


def config_to_hf(cfg: EncoderConfig) -> dict:
    """The config.json that Transformers' AutoConfig/AutoModelForCTC reads back as the same network."""
    out = {k: getattr(cfg, k) for k in HF_FIELDS}
    for k in ("conv_dim", "conv_kernel", "conv_stride"):
        out[k] = list(out[k])
    if cfg.model_type not in FBANK_FAMILIES:
        out["num_feat_extract_layers"] = len(cfg.conv_dim)
    out["architectures"] = [MODEL_TYPES[cfg.model_type]]
    if cfg.model_type != "hubert":
        if not cfg.feat_proj_layer_norm:
            raise ValueError(
                f"save_pretrained: feat_proj_layer_norm=False exists in transformers only for HuBERT; "
                f"set model_type='hubert' (the network is the same) to export a {cfg.model_type} model without it"
            )
        del out["feat_proj_layer_norm"]  # only HubertConfig has the switch; the others always normalise
    for name, families in FAMILY_FIELDS.items():
        if cfg.model_type not in families:
            del out[name]
    for name in FIXED_LAYOUT.get(cfg.model_type, {}):
        del out[name]
    if cfg.adapter_attn_dim is None:
        del out["adapter_attn_dim"]  # exports without adapters stay as they were
    return out
