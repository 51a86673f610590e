"""Transcript normalisation (the recipe's); the character vocabulary lives in fastctc/vocab.py."""

from __future__ import annotations

import re

from ..config import RECIPE_CHARS_TO_IGNORE

# the vocabulary, re-exported: the data layer and its tests name it from here
from ..vocab import PAD, UNK, WORD_DELIMITER, CharVocab, DecoderVocab, ids_to_text  # noqa: F401


def normalise(text: str, chars_to_ignore: str = RECIPE_CHARS_TO_IGNORE, lowercase: bool = True) -> str:
    """Drop ignored characters, lower-case, collapse whitespace (the recipe's order)."""
    if chars_to_ignore:
        text = re.sub("[" + re.escape(chars_to_ignore) + "]", "", text)
    return " ".join((text.lower() if lowercase else text).split())
