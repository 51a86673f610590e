"""Native wav2vec2-family encoders with a CTC head.

Public API: `load_pretrained(path, vocab_size=None)` -> CTCModel, whose forward maps waveforms (B, N)
and lengths (B,) or None to logits (B, T, V) and logit lengths (B,); `CTCModel.save_pretrained(dir, vocab)`.
"""

from .config import EncoderConfig, config_from_hf, config_to_hf
from .ctc_model import CTCModel
from .hf_io import load_pretrained

__all__ = ["EncoderConfig", "CTCModel", "load_pretrained", "config_from_hf", "config_to_hf"]
