"""Native wav2vec2-family encoders with a CTC head."""

from .config import EncoderConfig
from .ctc_model import CTCModel

__all__ = ["EncoderConfig", "CTCModel"]
