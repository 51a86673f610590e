"""Transformers-format checkpoints in and out: the checkpoint -> native key table, `load_pretrained`
(the model), `read_pretrained` (the model and everything needed to feed and decode it) and
`save_pretrained` (the five files read_pretrained reads).

A checkpoint directory holds config.json and model.safetensors (or model.safetensors.index.json with
shards). Keys may carry the base-model prefix (`wav2vec2.`, `hubert.`, `unispeech.`, `wavlm.`: saved
from a *ForCTC / *ForPreTraining class) or not (saved from the bare *Model class). A fine-tuned one also
holds the tokenizer (vocab.json, tokenizer_config.json, perhaps added_tokens.json) and the feature
extractor's preprocessor_config.json.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError
from ..vocab import DecoderVocab
from .config import EncoderConfig, config_from_hf, config_to_hf
from .ctc_model import CTCModel
from .tokenizer_config import is_phoneme_tokenizer, tokenizer_config

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
# without SpecAugment has no masked_spec_embed. Both are initialised as transformers does.
_FRESH = ("lm_head.weight", "lm_head.bias", "masked_spec_embed")

_INDEX = re.compile(r"\.(\d+)\.")


def native_key(key: str, model_type: str) -> tuple[str | None, bool]:
    """(native name or None, known) for a checkpoint key; known is False for a key not in WEIGHT_MAP."""
    prefix = model_type + "."
    if key.startswith(prefix):
        key = key[len(prefix) :]
    m = _INDEX.search(key)
    template = key if m is None else key[: m.start()] + ".{}." + key[m.end() :]
    if template not in WEIGHT_MAP:
        return None, False
    target = WEIGHT_MAP[template]
    return (None if target is None else target.format(*([m.group(1)] if m else []))), True


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


def load_pretrained(
    path, vocab_size: int | None = None, overrides: dict | None = None, fresh_head: bool = False
) -> CTCModel:
    """A CTCModel (eval mode, float32) from a Transformers checkpoint directory.

    vocab_size: size of the CTC head; a checkpoint without a head (pretraining) gets a fresh one of this
    size, initialised as transformers does (normal(0, initializer_range), zero bias). overrides: EncoderConfig
    fields to replace after reading config.json (the fine-tuning recipe's dropouts and SpecAugment).
    fresh_head: ignore the checkpoint's CTC head (it does not fit the new vocabulary) and make a fresh one.
    Any checkpoint key not in WEIGHT_MAP, any parameter left unfilled, or a shape mismatch raises.
    """
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{path}: no config.json (expected a Transformers checkpoint directory)")
    cfg = config_from_hf(json.loads(config_file.read_text()), source=str(config_file))
    changes = dict(overrides or {})
    if vocab_size is not None:
        changes["vocab_size"] = vocab_size
    cfg = dataclasses.replace(cfg, **changes)
    model = CTCModel(cfg)
    params = model.state_dict()

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
                    continue  # dropped on purpose (see WEIGHT_MAP), or a head replaced by a fresh one
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
            f"{unknown}. If a key is pretraining-only, add it to WEIGHT_MAP as None in fastctc/models/hf_io.py"
        )
    if mismatched:
        hint = " (pass vocab_size matching the checkpoint's head)" if any("lm_head" in m for m in mismatched) else ""
        raise ValueError(f"{path}: shape mismatches{hint}: {mismatched}")
    missing = [k for k in params if k not in loaded and k not in _FRESH]
    if missing:
        raise KeyError(f"{path}: parameters not filled by the checkpoint: {missing}")

    head_missing = [k for k in ("lm_head.weight", "lm_head.bias") if k not in loaded]
    if head_missing and vocab_size is None and "vocab_size" not in changes:
        raise ValueError(f"{path} has no CTC head (lm_head); pass vocab_size to create a fresh one")
    if len(head_missing) == 1:
        raise KeyError(f"{path}: the CTC head is incomplete, missing {head_missing}")
    model.load_state_dict(loaded, strict=False)
    with torch.no_grad():
        if head_missing:
            # transformers' PreTrainedModel._init_weights for nn.Linear
            model.lm_head.weight.normal_(0.0, cfg.initializer_range)
            model.lm_head.bias.zero_()
        if "masked_spec_embed" not in loaded:
            model.masked_spec_embed.uniform_()
    return model.eval()


# ---- the whole checkpoint: tokenizer, feature extractor, model ------------------------------------

# Token names that are never text, whichever tokenizer wrote the vocabulary.
_NON_TEXT = ("<s>", "</s>", "[UNK]", "<unk>")


def default_attention_mask(cfg: EncoderConfig) -> bool:
    """Whether a checkpoint whose preprocessor does not say is fed an attention mask: transformers'
    released preprocessors give it only to layer-norm feature encoders (RECIPE.md, Audio)."""
    return cfg.feat_extract_norm == "layer"


@dataclass(frozen=True)
class Preprocessing:
    """What a checkpoint's preprocessor_config.json says; None where it says nothing (or is absent)."""

    do_normalize: bool | None = None
    return_attention_mask: bool | None = None


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


def _read_json(file: Path) -> dict:
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file}: unreadable ({e}); restore it from the checkpoint's source") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(value).__name__}")
    return value


def read_preprocessing(path) -> Preprocessing:
    file = Path(path) / "preprocessor_config.json"
    if not file.is_file():
        return Preprocessing()
    pre = _read_json(file)
    return Preprocessing(
        *(None if pre.get(k) is None else bool(pre[k]) for k in ("do_normalize", "return_attention_mask"))
    )


def _token_name(value) -> str | None:
    """tokenizer_config.json spells a special token as a string or, in older files, {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def read_vocab(path, blank: int | None = None) -> DecoderVocab | None:
    """The tokenizer's whole vocabulary: vocab.json plus its added tokens (added_tokens.json and
    tokenizer_config.json's added_tokens_decoder; Wav2Vec2CTCTokenizer adds <s> and </s> there, so a
    recipe-trained head is 2 wider than vocab.json). None when there is no vocab.json.

    blank: the CTC blank's id if known (config.json's pad_token_id); else the tokenizer's pad token."""
    path = Path(path)
    vocab_file = path / "vocab.json"
    if not vocab_file.is_file():
        return None
    index = _read_json(vocab_file)
    if not all(isinstance(i, int) for i in index.values()):
        raise CheckpointError(
            f"{vocab_file}: expected {{token: id}}; a per-language (nested) vocabulary "
            "is not supported, save the one language's tokenizer"
        )
    tok_file, added_file = path / "tokenizer_config.json", path / "added_tokens.json"
    tok = _read_json(tok_file) if tok_file.is_file() else {}
    added = [(t, i, added_file) for t, i in (_read_json(added_file) if added_file.is_file() else {}).items()]
    added += [(_token_name(v), int(i), tok_file) for i, v in tok.get("added_tokens_decoder", {}).items()]
    by_id = {i: t for t, i in index.items()}
    for token, i, source in added:
        if by_id.setdefault(i, token) != token:
            raise CheckpointError(f"{source}: id {i} is {token!r} there but {by_id[i]!r} in {vocab_file.name}")
    if sorted(by_id) != list(range(len(by_id))):
        raise CheckpointError(
            f"{vocab_file}: token ids (added tokens included) must be 0..{len(by_id) - 1} without gaps"
        )
    tokens = [by_id[i] for i in range(len(by_id))]
    ids = {t: i for i, t in enumerate(tokens)}
    if blank is None:
        pad = _token_name(tok.get("pad_token"))
        blank = ids.get(pad, ids.get("[PAD]", ids.get("<pad>")))
    if blank is None:
        raise CheckpointError(
            f"{path}: cannot tell the CTC blank: config.json has no pad_token_id and the "
            "tokenizer no pad token ([PAD]/<pad>)"
        )
    phones = is_phoneme_tokenizer(tok)  # whose decode also drops its word delimiter, if it has one
    keys = ("bos_token", "eos_token", "unk_token", *(("word_delimiter_token",) if phones else ()))
    names = {*_NON_TEXT, *(_token_name(tok.get(k)) for k in keys)}
    return DecoderVocab(tokens, int(blank), frozenset(ids[t] for t in names if t in ids), phones=phones)


def read_encoder_config(path) -> EncoderConfig:
    """The EncoderConfig of the checkpoint directory `path` (its config.json)."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise CheckpointError(
            f"{path}: no config.json; expected a Transformers-format checkpoint directory "
            "(config.json + model.safetensors)"
        )
    try:
        return config_from_hf(_read_json(file), source=str(file))
    except (TypeError, ValueError) as e:
        raise CheckpointError(str(e)) from None


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
    path, vocab_size: int | None = None, overrides: dict | None = None, fresh_head: bool = False
) -> Pretrained:
    """A Transformers-format CTC checkpoint directory read whole, as save_pretrained writes it.

    vocab_size, overrides, fresh_head: as for load_pretrained (the CTC head's size; the fine-tuning recipe's
    knobs; a fresh head in place of the checkpoint's).
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
    pad_token_id = _read_json(config_file).get("pad_token_id")
    preprocessing = read_preprocessing(path)
    vocab = read_vocab(path, pad_token_id) if vocab_size is None else None
    try:
        model = load_pretrained(path, vocab_size=vocab_size, overrides=overrides, fresh_head=fresh_head)
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


def _hf_key(native: str) -> str:
    """The checkpoint key save_pretrained writes for a native parameter (without the model prefix)."""
    m = _INDEX.search(native)
    template = native if m is None else native[: m.start()] + ".{}." + native[m.end() :]
    for ck, target in WEIGHT_MAP.items():
        if target == template:
            return ck.format(*([m.group(1)] if m else []))
    raise KeyError(f"{native} has no entry in WEIGHT_MAP (fastctc/models/hf_io.py)")


def save_pretrained(
    model: CTCModel,
    directory,
    vocab,
    do_normalize: bool = True,
    return_attention_mask: bool | None = None,
    phones: bool = False,
) -> None:
    """Write a Transformers checkpoint (config.json, model.safetensors, vocab.json,
    preprocessor_config.json, tokenizer_config.json) that AutoModelForCTC and Wav2Vec2Processor load.

    vocab: the tokens in id order (list) or a {token: id} dict; do_normalize: the feature extractor's
    per-utterance normalisation (false for DistilHuBERT); return_attention_mask: whether the model
    is fed an attention mask (default: default_attention_mask); phones: each token is a phone, and the
    tokenizer written is transformers' phoneme tokenizer, which decodes to space-separated phones.
    """
    cfg: EncoderConfig = model.config
    token_to_id = dict(vocab) if isinstance(vocab, dict) else {t: i for i, t in enumerate(vocab)}
    if len(token_to_id) != cfg.vocab_size:
        raise ValueError(f"save_pretrained: vocab has {len(token_to_id)} tokens, the CTC head {cfg.vocab_size}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    hf_config = config_to_hf(cfg)
    hf_config["pad_token_id"] = token_to_id.get("[PAD]", cfg.pad_token_id)  # the CTC blank
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")

    # transformers builds masked_spec_embed only when some SpecAugment probability is positive
    keep_embed = cfg.mask_time_prob > 0 or cfg.mask_feature_prob > 0
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "masked_spec_embed" and not keep_embed:
            continue
        key = _hf_key(name)
        key = key if key.startswith("lm_head.") else f"{cfg.model_type}.{key}"
        tensors[key] = tensor.detach().to("cpu", torch.float32).contiguous()
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})

    (directory / "vocab.json").write_text(json.dumps(token_to_id, indent=2, ensure_ascii=False) + "\n")
    tokenizer = tokenizer_config(token_to_id, phones)
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer, indent=2) + "\n")
    preprocessor = {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "processor_class": "Wav2Vec2Processor",
        "feature_size": 1,
        "sampling_rate": 16000,
        "padding_value": 0.0,
        "padding_side": "right",
        "do_normalize": do_normalize,
        "return_attention_mask": (
            default_attention_mask(cfg) if return_attention_mask is None else return_attention_mask
        ),
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
