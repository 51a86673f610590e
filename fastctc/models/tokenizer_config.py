"""tokenizer_config.json as transformers reads it: Wav2Vec2CTCTokenizer for a character model, or
Wav2Vec2PhonemeCTCTokenizer for a phone model, so that transformers decodes each the way it was trained.

The character tokenizer concatenates tokens and turns `|` into spaces: phones would come out glued
("shiy"). The phoneme tokenizer joins tokens with its phone delimiter, a space ("sh iy"); with
do_phonemize false it takes and gives phones as they are, so no phonemizer (espeak) is needed.
"""

from __future__ import annotations

from ..vocab import BOS, EOS, PAD, UNK, WORD_DELIMITER

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
