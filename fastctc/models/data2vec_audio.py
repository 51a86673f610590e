"""data2vec-audio's positional embedding (Baevski et al. 2022, "data2vec", section 3.2) and its checkpoint keys.

Where wav2vec2 adds one weight-normed conv of kernel 128, data2vec-audio adds a stack of
`num_conv_pos_embeddings` (5) grouped convs of kernel `conv_pos_kernel_size` (19), each followed by a
LayerNorm without affine parameters and the activation. Everything else is wav2vec2's: a conv stack
with a LayerNorm on every layer, the feature projection and a post-LN transformer.
Names mirror Transformers' Data2VecAudioPositionalConvEmbedding so that the key table is an identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import EncoderConfig
from .feature_encoder import activation

# Checkpoint key (base-model prefix stripped) -> native parameter, `{}` the positional conv's index: the
# keys this family adds to hf_weights.WEIGHT_MAP (it has no `encoder.pos_conv_embed.conv`, so a checkpoint
# holding one fails loudly there, as a key with no place in the model).
KEYS: dict[str, str | None] = {
    "encoder.pos_conv_embed.layers.{}.conv.weight": "encoder.pos_conv_embed.layers.{}.conv.weight",
    "encoder.pos_conv_embed.layers.{}.conv.bias": "encoder.pos_conv_embed.layers.{}.conv.bias",
}


class PositionalConvLayer(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        k = cfg.conv_pos_kernel_size
        self.conv = nn.Conv1d(
            cfg.hidden_size, cfg.hidden_size, k, padding=k // 2, groups=cfg.num_conv_pos_embedding_groups
        )
        self.trim = 1 if k % 2 == 0 else 0  # an even kernel with padding k//2 yields one extra frame
        self.act = activation(cfg.feat_extract_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D, T) -> (B, D, T)
        y = self.conv(x)
        if self.trim:
            y = y[:, :, : -self.trim]
        # upstream's nn.LayerNorm(hidden, elementwise_affine=False): its default eps, not layer_norm_eps
        y = F.layer_norm(y.transpose(1, 2), (y.shape[1],), eps=1e-5).transpose(1, 2)
        return self.act(y)


class PositionalConvStack(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(PositionalConvLayer(cfg) for _ in range(cfg.num_conv_pos_embeddings))

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); x's padded frames already zero. frame_mask (B, T), given for exact
        padding: each conv's padded input frames are zeroed again, as a row alone sees the conv's zero
        padding past its end (the LayerNorm and activation make them non-zero after the first conv, and
        transformers feeds them on, so its batched rows read their neighbours' padding)."""
        keep = None if frame_mask is None else frame_mask[:, None, :]  # (B, 1, T)
        x = x.transpose(1, 2)  # (B, D, T)
        for i, layer in enumerate(self.layers):
            if keep is not None and i > 0:
                x = torch.where(keep, x, 0.0)
            x = layer(x)
        return x.transpose(1, 2)
