"""The transformer context network: weight-normed grouped positional conv, then self-attention
layers in either layout (post-LN as in base models, pre-LN "stable layer norm" as in large models).

Names mirror Transformers' Wav2Vec2Encoder / Wav2Vec2EncoderStableLayerNorm. WavLM swaps in the
attention of wavlm.py; its relative position bias is computed once by layer 0 and passed to every layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import EncoderConfig
from .data2vec_audio import PositionalConvStack
from .feature_encoder import activation
from .wavlm import WavLMAttention


class PositionalConvEmbedding(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        k = cfg.num_conv_pos_embeddings
        conv = nn.Conv1d(cfg.hidden_size, cfg.hidden_size, k, padding=k // 2, groups=cfg.num_conv_pos_embedding_groups)
        # weight norm over the kernel dimension (dim=2), as wav2vec 2.0 does
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.trim = 1 if k % 2 == 0 else 0  # an even kernel with padding k//2 yields one extra frame
        self.act = activation(cfg.feat_extract_activation)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D). frame_mask is not needed: one conv, whose input has padding zeroed."""
        y = self.conv(x.transpose(1, 2))
        if self.trim:
            y = y[:, :, : -self.trim]
        return self.act(y).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        d = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.dropout = cfg.attention_dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None, position_bias: torch.Tensor | None = None
    ) -> torch.Tensor:  # (B, T, D) -> (B, T, D); position_bias is WavLM's and unused here
        B, T, D = x.shape
        H = self.num_heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, D/H)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, T) True = attend
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, D/H)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, D))


class FeedForward(nn.Module):
    def __init__(self, cfg: EncoderConfig, width: int | None = None, act: str | None = None):
        """width, act: the input/output size and activation when not hidden_size and hidden_act
        (w2v-BERT's adapter and its intermediate feed-forward)."""
        super().__init__()
        d = width or cfg.hidden_size
        self.intermediate_dense = nn.Linear(d, cfg.intermediate_size)
        self.output_dense = nn.Linear(cfg.intermediate_size, d)
        self.intermediate_dropout = nn.Dropout(cfg.activation_dropout)
        self.output_dropout = nn.Dropout(cfg.hidden_dropout)
        self.act = activation(act or cfg.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.intermediate_dropout(self.act(self.intermediate_dense(x)))
        return self.output_dropout(self.output_dense(x))


class AttnAdapter(nn.Module):
    """MMS's per-language attention adapter (transformers' Wav2Vec2AttnAdapterLayer): LayerNorm, a
    down-projection to adapter_attn_dim, ReLU, back up; its output is added to the layer's. Its LayerNorm
    keeps torch's eps (1e-5), not layer_norm_eps, as transformers builds it."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.hidden_size)
        self.linear_1 = nn.Linear(cfg.hidden_size, cfg.adapter_attn_dim)
        self.linear_2 = nn.Linear(cfg.adapter_attn_dim, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        return self.linear_2(F.relu(self.linear_1(self.norm(x))))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: EncoderConfig, index: int = 0):
        super().__init__()
        self.pre_ln = cfg.do_stable_layer_norm
        self.attention = WavLMAttention(cfg, index == 0) if cfg.model_type == "wavlm" else Attention(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.feed_forward = FeedForward(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        # pre-LN only (models/config.py refuses it elsewhere, as transformers has none there)
        self.adapter_layer = AttnAdapter(cfg) if cfg.adapter_attn_dim is not None else None

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None, position_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.pre_ln:
            x = x + self.dropout(self.attention(self.layer_norm(x), key_mask, position_bias))
            x = x + self.feed_forward(self.final_layer_norm(x))
            return x if self.adapter_layer is None else x + self.adapter_layer(x)
        x = self.layer_norm(x + self.dropout(self.attention(x, key_mask, position_bias)))
        return self.final_layer_norm(x + self.feed_forward(x))


class Encoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.pre_ln = cfg.do_stable_layer_norm
        self.layerdrop = cfg.layerdrop
        self.wavlm = cfg.model_type == "wavlm"
        self.gradient_checkpointing = False  # recompute each layer in backward (training only)
        data2vec = cfg.model_type == "data2vec-audio"
        self.pos_conv_embed = PositionalConvStack(cfg) if data2vec else PositionalConvEmbedding(cfg)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.layers = nn.ModuleList(EncoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))

    def forward(
        self, x: torch.Tensor, frame_mask: torch.Tensor | None, exact_padding: bool = False
    ) -> torch.Tensor:  # (B, T, D)
        """exact_padding: padding never reaches a valid frame (data2vec-audio's positional convs), as
        CTCModel's padding_invariant; else as transformers, which zeroes it once, here."""
        if frame_mask is not None:
            x = x * frame_mask[..., None].to(x.dtype)  # padded frames are zero before the positional conv
        x = x + self.pos_conv_embed(x, frame_mask if exact_padding else None)
        if not self.pre_ln:
            x = self.layer_norm(x)
        x = self.dropout(x)
        position_bias = self.layers[0].attention.position_bias(x.shape[1]) if self.wavlm else None  # (H, T, T)
        x = run_layers(self, x, (frame_mask, position_bias), keep_first=self.wavlm)  # WavLM's layer 0 owns the bias
        return self.layer_norm(x) if self.pre_ln else x


def run_layers(encoder: nn.Module, x: torch.Tensor, args: tuple, keep_first: bool = False) -> torch.Tensor:
    """x -> layer(x, *args) for each of encoder.layers, with LayerDrop (encoder.layerdrop, never dropping
    layer 0 if keep_first) and activation checkpointing (encoder.gradient_checkpointing) in training.

    LayerDrop as transformers: one draw per layer and step, dropped with probability layerdrop. Eager:
    drawn on the CPU (no device sync) and a dropped layer is skipped, so it costs nothing and its
    parameters get no gradient, as in transformers. Compiled: drawn on the device before the loop and
    applied with torch.where, so no graph break; a dropped layer still runs there and its parameters get
    a zero gradient."""
    layers = encoder.layers
    compiling = torch.compiler.is_compiling()
    drop = skip = None
    if encoder.training and encoder.layerdrop > 0:
        drop = torch.rand(len(layers), device=x.device if compiling else "cpu") < encoder.layerdrop  # (L,)
        if keep_first:
            drop[0] = False
        if not compiling:
            skip, drop = drop.tolist(), None  # a CPU tensor: no sync
    for i, layer in enumerate(layers):
        if skip is not None and skip[i]:
            continue
        if encoder.gradient_checkpointing and encoder.training and torch.is_grad_enabled():
            y = checkpoint(layer, x, *args, use_reentrant=False)
        else:
            y = layer(x, *args)
        x = y if drop is None else torch.where(drop[i], x, y)
    return x
