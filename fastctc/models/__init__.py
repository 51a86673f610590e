"""Native wav2vec2-family encoders with a CTC head.

Public API: `load_pretrained(path, vocab_size=None)` -> CTCModel, whose forward maps waveforms (B, N)
and lengths (B,) or None to logits (B, T, V) and logit lengths (B,); `read_pretrained(path)` -> the model
with its vocabulary, blank, normalisation and attention-mask convention; `save_pretrained(model, dir, vocab)`.
"""

from .config import EncoderConfig, config_from_hf, config_to_hf
from .ctc_model import CTCModel
from .hf_export import save_pretrained
from .hf_tokenizer import default_attention_mask
from .hf_weights import Pretrained, load_pretrained, read_pretrained

__all__ = [
    "EncoderConfig",
    "CTCModel",
    "Pretrained",
    "load_pretrained",
    "read_pretrained",
    "save_pretrained",
    "default_attention_mask",
    "config_from_hf",
    "config_to_hf",
]
