"""A Transformers checkpoint's tokenizer and feature-extractor files, read and written: vocab.json (+ its
added tokens in added_tokens.json and tokenizer_config.json) and preprocessor_config.json.

What the model itself is (config.json, the weights) is hf_weights.py's; save_pretrained (hf_export.py)
writes these files through the writers here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from ..vocab import BOS, EOS, PAD, UNK, WORD_DELIMITER, DecoderVocab, write_vocab_json
from .config import FBANK_FAMILIES, EncoderConfig

# Token names that are never text, whichever tokenizer wrote the vocabulary.
_NON_TEXT = ("<s>", "</s>", "[UNK]", "<unk>")


def read_json_object(file: Path) -> dict:
    """A checkpoint's JSON file, which must hold an object; anything else names the file."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file}: unreadable ({e}); restore it from the checkpoint's source") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(value).__name__}")
    return value


# ---- preprocessor_config.json (the feature extractor) ----------------------------------------------


def default_attention_mask(cfg: EncoderConfig) -> bool:
    """Whether a checkpoint whose preprocessor does not say is fed an attention mask: transformers'
    released preprocessors give it only to layer-norm feature encoders (RECIPE.md, Audio), and
    SeamlessM4TFeatureExtractor (w2v-BERT) always."""
    return cfg.feat_extract_norm == "layer" or cfg.model_type in FBANK_FAMILIES


@dataclass(frozen=True)
class Preprocessing:
    """What a checkpoint's preprocessor_config.json says; None where it says nothing (or is absent)."""

    do_normalize: bool | None = None
    return_attention_mask: bool | None = None


def read_preprocessing(path) -> Preprocessing:
    file = Path(path) / "preprocessor_config.json"
    if not file.is_file():
        return Preprocessing()
    pre = read_json_object(file)
    said = [None if pre.get(k) is None else bool(pre[k]) for k in ("do_normalize", "return_attention_mask")]
    if pre.get("feature_extractor_type") == _FBANK_EXTRACTOR:
        said[0] = False  # it never normalises the waveform (its fbank features are normalised in the model)
    return Preprocessing(*said)


_FBANK_EXTRACTOR = "SeamlessM4TFeatureExtractor"


def write_preprocessor_config(
    directory: Path, do_normalize: bool, return_attention_mask: bool, fbank: bool = False
) -> None:
    """preprocessor_config.json as Wav2Vec2FeatureExtractor reads it (16 kHz mono, right padding with 0),
    or, fbank (w2v-BERT), as SeamlessM4TFeatureExtractor does (80 mel bins stacked by 2, always a mask)."""
    if fbank:
        if do_normalize:
            raise ValueError(
                "save_pretrained: w2v-BERT's feature extractor does not normalise the waveform; pass do_normalize=False"
            )
        preprocessor = {
            "feature_extractor_type": _FBANK_EXTRACTOR,
            "processor_class": "Wav2Vec2BertProcessor",
            "feature_size": 80,
            "num_mel_bins": 80,
            "sampling_rate": 16000,
            "padding_value": 0.0,
            "padding_side": "right",
            "stride": 2,
            "return_attention_mask": True,
        }
        (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
        return
    preprocessor = {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "processor_class": "Wav2Vec2Processor",
        "feature_size": 1,
        "sampling_rate": 16000,
        "padding_value": 0.0,
        "padding_side": "right",
        "do_normalize": do_normalize,
        "return_attention_mask": return_attention_mask,
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")


# ---- the tokenizer: vocab.json, added tokens, tokenizer_config.json --------------------------------


def _token_name(value) -> str | None:
    """tokenizer_config.json spells a special token as a string or, in older files, {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def _tokens_in_id_order(path: Path, tok: dict) -> list[str]:
    """vocab.json's tokens and the added ones (added_tokens.json, tokenizer_config.json's
    added_tokens_decoder), in id order; ids must agree between the files and run 0..n-1."""
    vocab_file, tok_file, added_file = path / "vocab.json", path / "tokenizer_config.json", path / "added_tokens.json"
    index = read_json_object(vocab_file)
    if not all(isinstance(i, int) for i in index.values()):
        raise CheckpointError(
            f"{vocab_file}: expected {{token: id}}; a per-language (nested) vocabulary "
            "is not supported, save the one language's tokenizer"
        )
    added = [(t, i, added_file) for t, i in (read_json_object(added_file) if added_file.is_file() else {}).items()]
    added += [(_token_name(v), int(i), tok_file) for i, v in tok.get("added_tokens_decoder", {}).items()]
    by_id = {i: t for t, i in index.items()}
    for token, i, source in added:
        if by_id.setdefault(i, token) != token:
            raise CheckpointError(f"{source}: id {i} is {token!r} there but {by_id[i]!r} in {vocab_file.name}")
    if sorted(by_id) != list(range(len(by_id))):
        raise CheckpointError(
            f"{vocab_file}: token ids (added tokens included) must be 0..{len(by_id) - 1} without gaps"
        )
    return [by_id[i] for i in range(len(by_id))]


def read_vocab(path, blank: int | None = None) -> DecoderVocab | None:
    """The tokenizer's whole vocabulary: vocab.json plus its added tokens (added_tokens.json and
    tokenizer_config.json's added_tokens_decoder; Wav2Vec2CTCTokenizer adds <s> and </s> there, so a
    recipe-trained head is 2 wider than vocab.json). None when there is no vocab.json.

    blank: the CTC blank's id if known (config.json's pad_token_id); else the tokenizer's pad token."""
    path = Path(path)
    if not (path / "vocab.json").is_file():
        return None
    tok_file = path / "tokenizer_config.json"
    tok = read_json_object(tok_file) if tok_file.is_file() else {}
    tokens = _tokens_in_id_order(path, tok)
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


def write_tokenizer(directory: Path, tokens: Sequence[str], phones: bool = False) -> None:
    """vocab.json and tokenizer_config.json, as Wav2Vec2CTCTokenizer (and so Wav2Vec2Processor) loads them;
    phones: the phoneme tokenizer's config instead (see tokenizer_config)."""
    write_vocab_json(directory / "vocab.json", tokens)
    tokenizer = tokenizer_config({t: i for i, t in enumerate(tokens)}, phones)
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer, indent=2) + "\n")


# tokenizer_config.json as transformers reads it: Wav2Vec2CTCTokenizer for a character model, or
# Wav2Vec2PhonemeCTCTokenizer for a phone model, so that transformers decodes each the way it was trained.
# The character tokenizer concatenates tokens and turns `|` into spaces: phones would come out glued
# ("shiy"). The phoneme tokenizer joins tokens with its phone delimiter, a space ("sh iy"); with
# do_phonemize false it takes and gives phones as they are, so no phonemizer (espeak) is needed.
CHAR_TOKENIZER = "Wav2Vec2CTCTokenizer"
PHONEME_TOKENIZER = "Wav2Vec2PhonemeCTCTokenizer"


def tokenizer_config(token_to_id: dict[str, int], phones: bool = False) -> dict:
    """The tokenizer_config.json of a vocabulary; phones: each token is a phone (data.targets = "phones")."""
    # the recipe's head has <s> and </s> outputs (model.bos_eos_tokens); other vocabularies do not
    bos_eos = {"bos_token": BOS if BOS in token_to_id else None, "eos_token": EOS if EOS in token_to_id else None}
    if not phones:
        return {
            "tokenizer_class": CHAR_TOKENIZER,
            "processor_class": "Wav2Vec2Processor",
            "unk_token": UNK,
            "pad_token": PAD,
            "word_delimiter_token": WORD_DELIMITER,
            **bos_eos,
            "do_lower_case": False,
        }
    return {
        "tokenizer_class": PHONEME_TOKENIZER,
        "processor_class": "Wav2Vec2Processor",
        # a phone set has no [UNK] (an unknown label leaves its utterance out); a token not in the
        # vocabulary would be added to it, one output wider than the head
        "unk_token": UNK if UNK in token_to_id else None,
        "pad_token": PAD,
        **bos_eos,
        "do_phonemize": False,
        "phone_delimiter_token": " ",
        "word_delimiter_token": None,
    }


def is_phoneme_tokenizer(tok: dict) -> bool:
    """Whether a tokenizer_config.json is the phoneme tokenizer's (its ids decode to spaced phones)."""
    return tok.get("tokenizer_class") == PHONEME_TOKENIZER
