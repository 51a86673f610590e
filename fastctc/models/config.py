"""EncoderConfig: the sizes and switches of a wav2vec2-shaped CTC encoder.

Field names follow Transformers' config.json (Wav2Vec2Config and relatives) so that reading a
checkpoint's config is one explicit field map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_NORMS = ("group", "layer")
_ACTIVATIONS = ("gelu", "relu", "gelu_new", "silu")


@dataclass
class EncoderConfig:
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
    # transformer layout: False = post-LN (base models), True = pre-LN + final LayerNorm (large models)
    do_stable_layer_norm: bool = False
    # dropouts
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    feat_proj_dropout: float = 0.0
    final_dropout: float = 0.0
    layerdrop: float = 0.0
    # SpecAugment (training mode only)
    mask_time_prob: float = 0.05
    mask_time_length: int = 10
    mask_time_min_masks: int = 2
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 10
    mask_feature_min_masks: int = 0
    pad_token_id: int = 0  # the CTC blank

    def __post_init__(self) -> None:
        self.conv_dim, self.conv_kernel, self.conv_stride = (
            tuple(self.conv_dim), tuple(self.conv_kernel), tuple(self.conv_stride)
        )
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
            raise ValueError(
                f"EncoderConfig: conv_dim, conv_kernel and conv_stride need one entry per conv layer, "
                f"got {len(self.conv_dim)}, {len(self.conv_kernel)} and {len(self.conv_stride)}"
            )
        if self.feat_extract_norm not in _NORMS:
            raise ValueError(f"EncoderConfig: feat_extract_norm must be one of {_NORMS}, got {self.feat_extract_norm!r}")
        for name in ("hidden_act", "feat_extract_activation"):
            if getattr(self, name) not in _ACTIVATIONS:
                raise ValueError(f"EncoderConfig: {name} must be one of {_ACTIVATIONS}, got {getattr(self, name)!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"EncoderConfig: hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ValueError(
                f"EncoderConfig: hidden_size {self.hidden_size} is not divisible by "
                f"num_conv_pos_embedding_groups {self.num_conv_pos_embedding_groups}"
            )

    @property
    def frame_stride(self) -> int:
        """Audio samples per output frame (320 = 20 ms at 16 kHz for the standard stack)."""
        out = 1
        for s in self.conv_stride:
            out *= s
        return out
