"""Transformers-format checkpoints in: the checkpoint -> native key table (WEIGHT_MAP), `load_pretrained`
(the model) and `read_pretrained` (the model and everything needed to feed and decode it).

A checkpoint directory holds config.json and model.safetensors (or model.safetensors.index.json with
shards). Keys may carry the base-model prefix (`wav2vec2.`, `hubert.`, `data2vec_audio.`, `wav2vec2_bert.`,
...: saved from a *ForCTC / *ForPreTraining class) or not (saved from the bare *Model class). A fine-tuned one also
holds the tokenizer and feature-extractor files, which hf_tokenizer.py reads; hf_export.py writes all of them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..errors import CheckpointError, MissingHeadError
from ..vocab import DecoderVocab
from . import conformer, data2vec_audio, w2v_bert
from .config import EncoderConfig, config_from_hf
from .ctc_model import CTCModel
from .hf_adapter import adapter_head_width, languages_in, read_adapter
from .hf_tokenizer import Preprocessing, default_attention_mask, read_json_object, read_preprocessing, read_vocab

# Checkpoint key (prefix stripped) -> native parameter; `{}` is the layer index; None = dropped on
# purpose (pretraining-only parts that CTC fine-tuning discards). Where two checkpoint spellings map to
# one parameter, the first listed is the one save_pretrained writes.
WEIGHT_MAP: dict[str, str | None] = {
    # conv feature encoder (layer_norm: every layer for "layer" norm, layer 0 only for "group")
    "feature_extractor.conv_layers.{}.conv.weight": "feature_extractor.conv_layers.{}.conv.weight",
    "feature_extractor.conv_layers.{}.conv.bias": "feature_extractor.conv_layers.{}.conv.bias",
    "feature_extractor.conv_layers.{}.layer_norm.weight": "feature_extractor.conv_layers.{}.layer_norm.weight",
    "feature_extractor.conv_layers.{}.layer_norm.bias": "feature_extractor.conv_layers.{}.layer_norm.bias",
    # feature projection
    "feature_projection.layer_norm.weight": "feature_projection.layer_norm.weight",
    "feature_projection.layer_norm.bias": "feature_projection.layer_norm.bias",
    "feature_projection.projection.weight": "feature_projection.projection.weight",
    "feature_projection.projection.bias": "feature_projection.projection.bias",
    "masked_spec_embed": "masked_spec_embed",
    # positional conv: torch.nn.utils.parametrizations spelling, then the older weight_norm spelling
    "encoder.pos_conv_embed.conv.parametrizations.weight.original0": "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    "encoder.pos_conv_embed.conv.parametrizations.weight.original1": "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
    "encoder.pos_conv_embed.conv.weight_g": "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    "encoder.pos_conv_embed.conv.weight_v": "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
    "encoder.pos_conv_embed.conv.bias": "encoder.pos_conv_embed.conv.bias",
    "encoder.layer_norm.weight": "encoder.layer_norm.weight",
    "encoder.layer_norm.bias": "encoder.layer_norm.bias",
    # transformer layers
    "encoder.layers.{}.attention.q_proj.weight": "encoder.layers.{}.attention.q_proj.weight",
    "encoder.layers.{}.attention.q_proj.bias": "encoder.layers.{}.attention.q_proj.bias",
    "encoder.layers.{}.attention.k_proj.weight": "encoder.layers.{}.attention.k_proj.weight",
    "encoder.layers.{}.attention.k_proj.bias": "encoder.layers.{}.attention.k_proj.bias",
    "encoder.layers.{}.attention.v_proj.weight": "encoder.layers.{}.attention.v_proj.weight",
    "encoder.layers.{}.attention.v_proj.bias": "encoder.layers.{}.attention.v_proj.bias",
    "encoder.layers.{}.attention.out_proj.weight": "encoder.layers.{}.attention.out_proj.weight",
    "encoder.layers.{}.attention.out_proj.bias": "encoder.layers.{}.attention.out_proj.bias",
    "encoder.layers.{}.layer_norm.weight": "encoder.layers.{}.layer_norm.weight",
    "encoder.layers.{}.layer_norm.bias": "encoder.layers.{}.layer_norm.bias",
    "encoder.layers.{}.feed_forward.intermediate_dense.weight": "encoder.layers.{}.feed_forward.intermediate_dense.weight",
    "encoder.layers.{}.feed_forward.intermediate_dense.bias": "encoder.layers.{}.feed_forward.intermediate_dense.bias",
    "encoder.layers.{}.feed_forward.output_dense.weight": "encoder.layers.{}.feed_forward.output_dense.weight",
    "encoder.layers.{}.feed_forward.output_dense.bias": "encoder.layers.{}.feed_forward.output_dense.bias",
    "encoder.layers.{}.final_layer_norm.weight": "encoder.layers.{}.final_layer_norm.weight",
    "encoder.layers.{}.final_layer_norm.bias": "encoder.layers.{}.final_layer_norm.bias",
    # MMS attention adapters (adapter_attn_dim; also the keys of adapter.<lang>.safetensors, hf_adapter.py)
    "encoder.layers.{}.adapter_layer.norm.weight": "encoder.layers.{}.adapter_layer.norm.weight",
    "encoder.layers.{}.adapter_layer.norm.bias": "encoder.layers.{}.adapter_layer.norm.bias",
    "encoder.layers.{}.adapter_layer.linear_1.weight": "encoder.layers.{}.adapter_layer.linear_1.weight",
    "encoder.layers.{}.adapter_layer.linear_1.bias": "encoder.layers.{}.adapter_layer.linear_1.bias",
    "encoder.layers.{}.adapter_layer.linear_2.weight": "encoder.layers.{}.adapter_layer.linear_2.weight",
    "encoder.layers.{}.adapter_layer.linear_2.bias": "encoder.layers.{}.adapter_layer.linear_2.bias",
    # WavLM gated relative position bias (rel_attn_embed in layer 0 only)
    "encoder.layers.{}.attention.gru_rel_pos_const": "encoder.layers.{}.attention.gru_rel_pos_const",
    "encoder.layers.{}.attention.gru_rel_pos_linear.weight": "encoder.layers.{}.attention.gru_rel_pos_linear.weight",
    "encoder.layers.{}.attention.gru_rel_pos_linear.bias": "encoder.layers.{}.attention.gru_rel_pos_linear.bias",
    "encoder.layers.{}.attention.rel_attn_embed.weight": "encoder.layers.{}.attention.rel_attn_embed.weight",
    # CTC head
    "lm_head.weight": "lm_head.weight",
    "lm_head.bias": "lm_head.bias",
    # pretraining-only: wav2vec2 / UniSpeech / WavLM quantizer and contrastive projections
    "quantizer.codevectors": None,
    "quantizer.weight_proj.weight": None,
    "quantizer.weight_proj.bias": None,
    "project_q.weight": None,
    "project_q.bias": None,
    "project_hid.weight": None,
    "project_hid.bias": None,
    # pretraining-only: UniSpeech's phoneme CTC projection (not our vocabulary)
    "ctc_proj.weight": None,
    "ctc_proj.bias": None,
    # pretraining-only: fairseq HuBERT's target projection and label embeddings
    "final_proj.weight": None,
    "final_proj.bias": None,
    "label_embs_concat": None,
}

# Native parameters a checkpoint may lack: a pretraining checkpoint has no CTC head, and one pretrained
# without SpecAugment has no masked_spec_embed. Both are initialised as transformers does. (The conformer's
# rotary frequencies are a function of its config, already computed.)
_FRESH = ("lm_head.weight", "lm_head.bias", "masked_spec_embed", "encoder.embed_positions.inv_freq")
_ADAPTER = ".adapter_layer."  # in the name of every MMS adapter parameter
_W2V_BERT_ADAPTER = "encoder.adapter."  # the start of every w2v-BERT adapter parameter

_INDEX = re.compile(r"\.(\d+)\.")

# The keys each family adds to WEIGHT_MAP (its own file holds them, beside its modules).
FAMILY_KEYS: dict[str, dict[str, str | None]] = {
    "data2vec-audio": data2vec_audio.KEYS,
    "wav2vec2-conformer": conformer.KEYS,
    "wav2vec2-bert": w2v_bert.KEYS,
}


def key_table(model_type: str) -> dict[str, str | None]:
    """The one checkpoint -> native key table of a family: WEIGHT_MAP and the family's own keys."""
    return {**WEIGHT_MAP, **FAMILY_KEYS.get(model_type, {})}


def key_prefix(model_type: str) -> str:
    """The base-model prefix of *ForCTC / *ForPreTraining keys: transformers' base_model_prefix."""
    return model_type.replace("-", "_") + "."


def _template(key: str) -> tuple[str, list[str]]:
    """A key with its layer index replaced by `{}` (WEIGHT_MAP's spelling), and that index (if any)."""
    m = _INDEX.search(key)
    return (key, []) if m is None else (key[: m.start()] + ".{}." + key[m.end() :], [m.group(1)])


def native_key(key: str, model_type: str) -> tuple[str | None, bool]:
    """(native name or None, known) for a checkpoint key; known is False for a key not in the family's table."""
    prefix, table = key_prefix(model_type), key_table(model_type)
    if key.startswith(prefix):
        key = key[len(prefix) :]
    template, index = _template(key)
    if template not in table:
        return None, False
    target = table[template]
    return (None if target is None else target.format(*index)), True


def checkpoint_key(native: str, model_type: str) -> str:
    """The checkpoint key save_pretrained writes for a native parameter (without the model prefix): the
    first spelling in the family's key table that maps to it."""
    template, index = _template(native)
    for ck, target in key_table(model_type).items():
        if target == template:
            return ck.format(*index)
    raise KeyError(f"{native} has no entry in the {model_type} key table (fastctc/models/hf_weights.py: key_table)")


def _checkpoint_files(path: Path) -> list[Path]:
    single, index = path / "model.safetensors", path / "model.safetensors.index.json"
    if single.exists():
        return [single]
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / s for s in shards]
    if (path / "pytorch_model.bin").exists():
        raise FileNotFoundError(
            f"{path} holds only pytorch_model.bin; fastctc reads safetensors. Convert it first: "
            f"fastctc convert {path} OUT_DIR"
        )
    raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json")


def _open_safetensors(file: Path):
    """safe_open, with the file named when its header is damaged (safetensors' own message names none)."""
    try:
        return safe_open(str(file), framework="pt")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file}: damaged or not a safetensors file ({e}); download or copy it again") from None


def _read_weights(
    path: Path, cfg: EncoderConfig, params: dict[str, torch.Tensor], fresh_head: bool = False, fresh: tuple = ()
) -> dict[str, torch.Tensor]:
    """Every checkpoint tensor under its native name, in the model's dtype. A key with no place in the
    model, two keys for one parameter, a shape mismatch or a parameter left unfilled (but _FRESH, and
    those whose name holds one of `fresh`: fresh adapters) raise."""
    loaded: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    unknown, mismatched = [], []
    for file in _checkpoint_files(path):
        with _open_safetensors(file) as f:
            for key in f.keys():
                target, known = native_key(key, cfg.model_type)
                if not known or (target is not None and target not in params):
                    unknown.append(key)
                    continue
                if target is None or (fresh_head and target.startswith("lm_head.")):
                    continue  # dropped on purpose (see WEIGHT_MAP)
                if target in loaded:
                    raise ValueError(f"{file}: {key} and {sources[target]} both map to {target}")
                tensor = f.get_tensor(key)
                if tensor.shape != params[target].shape:
                    mismatched.append(f"{key} {tuple(tensor.shape)} -> {target} {tuple(params[target].shape)}")
                    continue
                loaded[target], sources[target] = tensor.to(params[target].dtype), key
    if unknown:
        raise KeyError(
            f"{path}: checkpoint keys with no place in the model {cfg.model_type} as configured by config.json: "
            f"{unknown}. If a key is pretraining-only, add it as None to WEIGHT_MAP in fastctc/models/hf_weights.py "
            f"(or to the family's KEYS)"
        )
    if mismatched:
        hint = " (pass vocab_size matching the checkpoint's head)" if any("lm_head" in m for m in mismatched) else ""
        raise ValueError(f"{path}: shape mismatches{hint}: {mismatched}")
    missing = [k for k in params if k not in loaded and k not in _FRESH and not any(p in k for p in fresh)]
    if missing and all(_ADAPTER in k for k in missing):  # an MMS checkpoint whose adapters are per-language files
        raise KeyError(
            f"{path}: config.json has adapter_attn_dim but the checkpoint holds no adapter weights; name the "
            f"language to load them from (model.adapter_language, one of {languages_in(path) or 'none found'})"
        )
    if missing:
        raise KeyError(f"{path}: parameters not filled by the checkpoint: {missing}")
    return loaded


def load_pretrained(
    path,
    vocab_size: int | None = None,
    overrides: dict | None = None,
    fresh_head: bool = False,
    adapter_language: str | None = None,
) -> CTCModel:
    """A CTCModel (eval mode, float32) from a Transformers checkpoint directory.

    vocab_size: size of the CTC head; a checkpoint without a head (pretraining) gets a fresh one of this
    size, initialised as transformers does (normal(0, initializer_range), zero bias). overrides: EncoderConfig
    fields to replace after reading config.json (the fine-tuning recipe's dropouts and SpecAugment; an
    adapter_attn_dim over a config.json without one adds fresh MMS adapters, and add_adapter over a w2v-BERT
    one without an adapter a fresh adapter, initialised as transformers initialises the weights a checkpoint lacks).
    fresh_head: ignore the checkpoint's CTC head (it does not fit the new vocabulary) and make a fresh one.
    adapter_language: also read `adapter.<language>.safetensors` (hf_adapter.py) over the checkpoint's
    adapters and head, as Wav2Vec2ForCTC.load_adapter does; its head's width is the default vocab_size.
    Any checkpoint key not in WEIGHT_MAP, any parameter left unfilled, or a shape mismatch raises.
    """
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{path}: no config.json (expected a Transformers checkpoint directory)")
    cfg = config_from_hf(json.loads(config_file.read_text()), source=str(config_file))
    changes = dict(overrides or {})
    if adapter_language:
        if cfg.adapter_attn_dim is None:
            raise ValueError(
                f"{config_file}: no adapter_attn_dim, so the checkpoint has no language adapters to load "
                f"({adapter_language!r}); leave adapter_language empty"
            )
        vocab_size = adapter_head_width(path, adapter_language) if vocab_size is None else vocab_size
    if vocab_size is not None:
        changes["vocab_size"] = vocab_size
    fresh_adapters = cfg.adapter_attn_dim is None and changes.get("adapter_attn_dim") is not None
    model = CTCModel(dataclasses.replace(cfg, **changes))
    fresh = (_ADAPTER,) if fresh_adapters else ()  # the adapters _read_weights may leave unfilled
    fresh += (_W2V_BERT_ADAPTER,) if _fresh_adapter(cfg, model.config, path) else ()
    # with a language adapter, the head is the adapter file's (the checkpoint's is another language's)
    loaded = _read_weights(path, model.config, model.state_dict(), fresh_head or bool(adapter_language), fresh)
    if adapter_language:
        adapter = read_adapter(path, adapter_language, model)
        loaded.update({k: v for k, v in adapter.items() if not (fresh_head and k.startswith("lm_head."))})

    head_missing = [k for k in ("lm_head.weight", "lm_head.bias") if k not in loaded]
    if head_missing and "vocab_size" not in changes:
        raise MissingHeadError(f"{path} has no CTC head (lm_head); pass vocab_size to create a fresh one")
    if len(head_missing) == 1:
        raise KeyError(f"{path}: the CTC head is incomplete, missing {head_missing}")
    model.load_state_dict(loaded, strict=False)
    _initialise_fresh(model, loaded, fresh)
    return model.eval()


@torch.no_grad()
def _initialise_fresh(model: CTCModel, loaded: dict[str, torch.Tensor], fresh: tuple) -> None:
    """What the checkpoint did not hold, as transformers' PreTrainedModel._init_weights initialises it:
    nn.Linear normal(0, initializer_range) with a zero bias, LayerNorm ones and zeros; `fresh`: the adapters
    _read_weights let go unfilled (MMS attention adapters, a w2v-BERT adapter)."""
    std = model.config.initializer_range
    if "lm_head.weight" not in loaded:
        model.lm_head.weight.normal_(0.0, std)
        model.lm_head.bias.zero_()
    if "masked_spec_embed" not in loaded:
        model.masked_spec_embed.uniform_()
    for layer in model.encoder.layers if _ADAPTER in fresh else ():
        adapter = layer.adapter_layer
        adapter.norm.reset_parameters()
        for linear in (adapter.linear_1, adapter.linear_2):
            linear.weight.normal_(0.0, std)
            linear.bias.zero_()
    if _W2V_BERT_ADAPTER in fresh:
        w2v_bert.init_adapter(model.encoder.adapter, std)


def _fresh_adapter(checkpoint: EncoderConfig, cfg: EncoderConfig, path: Path) -> bool:
    """Whether the model gets a fresh w2v-BERT adapter: add_adapter turned on over a checkpoint without one,
    as transformers' from_pretrained(..., add_adapter=True) in its fine-tuning guide. Turning one off is refused."""
    if checkpoint.add_adapter and not cfg.add_adapter:
        raise ValueError(
            f"{path}: the checkpoint has an adapter (add_adapter true in config.json); it cannot be turned off"
        )
    return cfg.add_adapter and not checkpoint.add_adapter


# ---- the whole checkpoint: model, tokenizer, feature extractor --------------------------------------


def read_encoder_config(path) -> EncoderConfig:
    """The EncoderConfig of the checkpoint directory `path` (its config.json)."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise CheckpointError(
            f"{path}: no config.json; expected a Transformers-format checkpoint directory "
            "(config.json + model.safetensors)"
        )
    try:
        return config_from_hf(read_json_object(file), source=str(file))
    except (TypeError, ValueError) as e:
        raise CheckpointError(str(e)) from None


@dataclass
class Pretrained:
    """A checkpoint read whole: the model and what feeding and decoding it need."""

    model: CTCModel
    vocab: DecoderVocab | None  # the tokenizer's whole vocabulary, added tokens included (None: see read_pretrained)
    blank: int  # the CTC blank (config.json's pad_token_id, else the tokenizer's pad token)
    do_normalize: bool  # per-utterance (x - mean) / sqrt(var + 1e-5) before padding
    attention_mask: bool  # fed lengths (True) or padded zeros seen as audio (False)
    preprocessing: Preprocessing  # what preprocessor_config.json itself said
    path: Path


def head_width(path) -> int | None:
    """Outputs of the checkpoint's CTC head (rows of lm_head.weight), None without one; reads file headers only."""
    path = Path(path)
    try:
        files = _checkpoint_files(path)
    except FileNotFoundError as e:
        raise CheckpointError(str(e)) from None
    for file in files:
        with _open_safetensors(file) as f:
            if "lm_head.weight" in f.keys():
                return f.get_slice("lm_head.weight").get_shape()[0]
    return None


def read_pretrained(
    path,
    vocab_size: int | None = None,
    overrides: dict | None = None,
    fresh_head: bool = False,
    adapter_language: str | None = None,
) -> Pretrained:
    """A Transformers-format CTC checkpoint directory read whole, as save_pretrained writes it.

    vocab_size, overrides, fresh_head, adapter_language: as for load_pretrained (the CTC head's size; the
    fine-tuning recipe's knobs; a fresh head in place of the checkpoint's; an MMS language adapter).
    With the checkpoint's own head (vocab_size None), its vocabulary must be the head's width; with
    vocab_size (a training run brings its own vocabulary) the tokenizer is not read and vocab is None.
    The checkpoint's own conventions apply: do_normalize from preprocessor_config.json (default true),
    an attention mask as its return_attention_mask says (default: default_attention_mask).
    Every problem raises CheckpointError naming the file.
    """
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(
            f"{path}: no config.json; expected a Transformers-format checkpoint directory "
            "(config.json + model.safetensors)"
        )
    pad_token_id = read_json_object(config_file).get("pad_token_id")
    preprocessing = read_preprocessing(path)
    vocab = read_vocab(path, pad_token_id) if vocab_size is None else None
    try:
        model = load_pretrained(path, vocab_size, overrides, fresh_head, adapter_language)
    except (KeyError, ValueError, OSError, SafetensorError) as e:
        raise CheckpointError(e.args[0] if e.args else str(e)) from e
    if vocab is not None and len(vocab) != model.config.vocab_size:
        raise CheckpointError(
            f"{path}: the tokenizer has {len(vocab)} tokens (vocab.json and its added tokens) "
            f"but the CTC head {model.config.vocab_size}"
        )
    blank = vocab.blank if vocab is not None else model.config.pad_token_id
    return Pretrained(
        model=model,
        vocab=vocab,
        blank=blank,
        do_normalize=True if preprocessing.do_normalize is None else preprocessing.do_normalize,
        attention_mask=(
            default_attention_mask(model.config)
            if preprocessing.return_attention_mask is None
            else preprocessing.return_attention_mask
        ),
        preprocessing=preprocessing,
        path=path,
    )
