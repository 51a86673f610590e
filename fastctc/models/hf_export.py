"""Transformers-format checkpoints out: `save_pretrained` writes the five files read_pretrained reads
(config.json, model.safetensors and, through hf_tokenizer.py, vocab.json, tokenizer_config.json,
preprocessor_config.json), which AutoModelForCTC and Wav2Vec2Processor load; for an MMS model also its
language adapter (hf_adapter.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..vocab import PAD
from .config import FBANK_FAMILIES, EncoderConfig, config_to_hf
from .ctc_model import CTCModel
from .hf_adapter import write_adapter
from .hf_tokenizer import default_attention_mask, write_preprocessor_config, write_tokenizer
from .hf_weights import checkpoint_key, key_prefix


def _tokens(vocab: Sequence[str] | Mapping[str, int]) -> list[str]:
    """The tokens in id order, from a list or a {token: id} dict (whose ids must be 0..n-1)."""
    if not isinstance(vocab, Mapping):
        return list(vocab)
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ValueError(f"save_pretrained: vocab ids must be 0..{len(tokens) - 1} without gaps")
    return tokens


def _write_weights(model: CTCModel, file: Path) -> None:
    """model.safetensors under the checkpoint's key names (prefixed, as the *ForCTC classes save them)."""
    cfg = model.config
    # transformers builds masked_spec_embed only when some SpecAugment probability is positive
    keep_embed = cfg.mask_time_prob > 0 or cfg.mask_feature_prob > 0
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "masked_spec_embed" and not keep_embed:
            continue
        key = checkpoint_key(name, cfg.model_type)
        key = key if key.startswith("lm_head.") else key_prefix(cfg.model_type) + key
        dtype = torch.float32 if tensor.is_floating_point() else tensor.dtype  # a BatchNorm's step count stays int
        tensors[key] = tensor.detach().to("cpu", dtype).contiguous()
    save_file(tensors, str(file), metadata={"format": "pt"})


def save_pretrained(
    model: CTCModel,
    directory,
    vocab: Sequence[str] | Mapping[str, int],
    do_normalize: bool | None = None,
    return_attention_mask: bool | None = None,
    phones: bool = False,
    adapter_language: str | None = None,
) -> None:
    """Write a Transformers checkpoint (config.json, model.safetensors, vocab.json,
    preprocessor_config.json, tokenizer_config.json) that AutoModelForCTC and Wav2Vec2Processor load.

    vocab: the tokens in id order (list) or a {token: id} dict; do_normalize: the feature extractor's
    per-utterance normalisation (false for DistilHuBERT; default true, and false for w2v-BERT, whose
    SeamlessM4TFeatureExtractor has none); return_attention_mask: whether the model
    is fed an attention mask (default: default_attention_mask); phones: each token is a phone, and the
    tokenizer written is transformers' phoneme tokenizer, which decodes to space-separated phones;
    adapter_language: also write the model's MMS adapters and head as adapter.<language>.safetensors, which
    Wav2Vec2ForCTC.load_adapter(language) reads (beside this checkpoint, or copied next to its base model's).
    """
    cfg: EncoderConfig = model.config
    tokens = _tokens(vocab)
    if len(tokens) != cfg.vocab_size:
        raise ValueError(f"save_pretrained: vocab has {len(tokens)} tokens, the CTC head {cfg.vocab_size}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    hf_config = config_to_hf(cfg)
    hf_config["pad_token_id"] = tokens.index(PAD) if PAD in tokens else cfg.pad_token_id  # the CTC blank
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    _write_weights(model, directory / "model.safetensors")
    write_tokenizer(directory, tokens, phones)
    mask = default_attention_mask(cfg) if return_attention_mask is None else return_attention_mask
    fbank = cfg.model_type in FBANK_FAMILIES
    do_normalize = not fbank if do_normalize is None else do_normalize
    write_preprocessor_config(directory, do_normalize, mask, fbank=fbank)
    if adapter_language:
        write_adapter(model, directory, adapter_language)
