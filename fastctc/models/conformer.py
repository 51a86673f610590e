"""wav2vec2-conformer's context network (Gulati et al. 2020, "Conformer"): conformer blocks over the
wav2vec2 conv feature encoder, with relative (Transformer-XL) or rotary positions, and its checkpoint keys.

A block, as Transformers' Wav2Vec2ConformerEncoderLayer runs it:
    x = x + FFN1(LN(x)) / 2
    x = x + Dropout(SelfAttention(LN(x), positions))
    x = x + ConvModule(x)          LN -> pointwise (D -> 2D) -> GLU -> depthwise conv -> BatchNorm -> act -> pointwise
    x = LN(x + FFN2(LN(x)) / 2)
The encoder zeroes padded frames, applies dropout, runs the blocks and ends with a LayerNorm. It also
holds wav2vec2's weight-normed positional conv, which transformers builds and loads but never calls:
here it is kept frozen, so that a checkpoint round-trips whole.
Names mirror Transformers' Wav2Vec2Conformer* modules so that the key table is an identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import EncoderConfig
from .feature_encoder import activation
from .transformer import FeedForward, PositionalConvEmbedding, run_layers

# A conformer block's keys that wav2vec2-conformer and w2v-BERT share (w2v_bert.py adds its own to these).
BLOCK_KEYS = [
    f"{norm}.{p}"
    for norm in ("ffn1_layer_norm", "self_attn_layer_norm", "ffn2_layer_norm", "final_layer_norm")
    for p in ("weight", "bias")
]
BLOCK_KEYS += [
    f"{ffn}.{lin}.{p}"
    for ffn in ("ffn1", "ffn2")
    for lin in ("intermediate_dense", "output_dense")
    for p in ("weight", "bias")
]
BLOCK_KEYS += [f"self_attn.linear_{n}.{p}" for n in ("q", "k", "v", "out") for p in ("weight", "bias")]
BLOCK_KEYS += [
    "conv_module.layer_norm.weight",
    "conv_module.layer_norm.bias",
    "conv_module.pointwise_conv1.weight",
    "conv_module.depthwise_conv.weight",
    "conv_module.pointwise_conv2.weight",
]
_LAYER_KEYS = BLOCK_KEYS + ["self_attn.linear_pos.weight", "self_attn.pos_bias_u", "self_attn.pos_bias_v"]
_LAYER_KEYS += [
    f"conv_module.batch_norm.{p}" for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
]
# Checkpoint key (base-model prefix stripped) -> native name, `{}` the layer index: the keys this family
# adds to hf_weights.WEIGHT_MAP, whose wav2vec2 layer keys have no place here and so fail loudly.
KEYS: dict[str, str | None] = {f"encoder.layers.{{}}.{k}": f"encoder.layers.{{}}.{k}" for k in _LAYER_KEYS}
KEYS["encoder.embed_positions.inv_freq"] = "encoder.embed_positions.inv_freq"  # rotary only (a buffer)


def relative_position_table(T: int, d: int, device) -> torch.Tensor:
    """(2T - 1, d) float32 sinusoids of the relative positions T-1, T-2, ..., -(T-1) (row k is position
    T-1-k), interleaved sin/cos, as Wav2Vec2ConformerRelPositionalEmbedding's table sliced to T."""
    rel = torch.arange(T - 1, -T, -1, device=device, dtype=torch.float32)[:, None]  # (2T-1, 1)
    freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * -(math.log(10000.0) / d))
    angle = rel * freq  # (2T-1, d/2)
    return torch.stack((angle.sin(), angle.cos()), dim=-1).reshape(2 * T - 1, d)


class RotaryFrequencies(nn.Module):
    """The rotary angles' frequencies base^(-2i/dh) (Su et al. 2021) as upstream's persistent buffer, so
    a checkpoint round-trips whole; a checkpoint without it keeps these values, the same function."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        dh, base = cfg.hidden_size // cfg.num_attention_heads, cfg.rotary_embedding_base
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dh, 2, dtype=torch.int64).float() / dh)))

    def forward(self, T: int) -> torch.Tensor:
        """(2, T, head_dim) float32 cos and sin of the rotary angles, halves repeated."""
        positions = torch.arange(T, device=self.inv_freq.device, dtype=torch.float32)
        angle = positions[:, None] * self.inv_freq.float()  # (T, dh/2)
        angle = torch.cat((angle, angle), dim=-1)
        return torch.stack((angle.cos(), angle.sin()))


def relative_to_absolute(scores: torch.Tensor) -> torch.Tensor:
    """(B, H, T, 2T-1) scores by relative position (column c is position T-1-c) -> (B, H, T, T) with
    [i, j] the score of position i - j (Transformer-XL's shift, Dai et al. 2019, appendix B): flattened,
    entry (i, j) sits at i * (2T-1) + (T-1-i+j) = (T-1) + i * (2T-2) + j, so rows of 2T-2 from T-1 on."""
    B, H, T, W = scores.shape
    if T == 1:
        return scores
    flat = scores.reshape(B, H, T * W)
    return flat[:, :, T - 1 : T - 1 + T * (W - 1)].reshape(B, H, T, W - 1)[..., :T]


class SelfAttention(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        d, self.num_heads = cfg.hidden_size, cfg.num_attention_heads
        self.head_size = d // self.num_heads
        self.dropout = cfg.attention_dropout
        self.relative = cfg.position_embeddings_type == "relative"
        self.linear_q, self.linear_k, self.linear_v, self.linear_out = (nn.Linear(d, d) for _ in range(4))
        if self.relative:
            self.linear_pos = nn.Linear(d, d, bias=False)
            self.pos_bias_u = nn.Parameter(torch.zeros(self.num_heads, self.head_size))  # content bias
            self.pos_bias_v = nn.Parameter(torch.zeros(self.num_heads, self.head_size))  # position bias

    def _rotate(self, x: torch.Tensor, cos_sin: torch.Tensor) -> torch.Tensor:
        """Rotary positions, applied to the layer's input before the q and k projections (as upstream)."""
        B, T, D = x.shape
        xh = x.view(B, T, self.num_heads, self.head_size)
        half = self.head_size // 2
        rotated = torch.cat((-xh[..., half:], xh[..., :half]), dim=-1)
        cos, sin = (t.to(x.dtype)[None, :, None, :] for t in cos_sin)  # (1, T, 1, dh)
        return (xh * cos + rotated * sin).view(B, T, D)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None, positions: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); positions: relative_position_table (2T-1, D) or rotary_cos_sin (2, T, dh)."""
        B, T, D = x.shape
        H, dh = self.num_heads, self.head_size

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, H, dh).transpose(1, 2)  # (B, H, T, dh)

        qk_in = x if self.relative else self._rotate(x, positions)
        q, k, v = heads(self.linear_q(qk_in)), heads(self.linear_k(qk_in)), heads(self.linear_v(x))
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, T) True = attend
        if self.relative:
            # scores = (q + u) k^T + shift((q + v) p^T), both scaled by 1/sqrt(dh) (Transformer-XL's a+c, b+d)
            p = self.linear_pos(positions.to(x.dtype)).view(2 * T - 1, H, dh).permute(1, 2, 0)  # (H, dh, 2T-1)
            by_position = relative_to_absolute((q + self.pos_bias_v[:, None, :]) @ p) / math.sqrt(dh)  # (B, H, T, T)
            if mask is not None:
                by_position = by_position.masked_fill(~mask, float("-inf"))
            q, mask = q + self.pos_bias_u[:, None, :], by_position
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.linear_out(y.transpose(1, 2).reshape(B, T, D))


class ConvolutionModule(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        d, k = cfg.hidden_size, cfg.conv_depthwise_kernel_size
        self.layer_norm = nn.LayerNorm(d)  # upstream's default eps, not layer_norm_eps
        self.pointwise_conv1 = nn.Conv1d(d, 2 * d, 1, bias=False)
        self.depthwise_conv = nn.Conv1d(d, d, k, padding=(k - 1) // 2, groups=d, bias=False)
        self.batch_norm = nn.BatchNorm1d(d)
        self.act = activation(cfg.hidden_act)
        self.pointwise_conv2 = nn.Conv1d(d, d, 1, bias=False)
        self.dropout = nn.Dropout(cfg.conformer_conv_dropout)

    def forward(self, x: torch.Tensor, conv_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D). conv_mask (B, T), for exact padding: padded frames enter the depthwise
        conv (the only op here mixing frames) as zeros, what a row alone sees past its end; without it, as
        transformers, they carry whatever the layers before made of them."""
        y = F.glu(self.pointwise_conv1(self.layer_norm(x).transpose(1, 2)), dim=1)  # (B, D, T)
        if conv_mask is not None:
            y = torch.where(conv_mask[:, None, :], y, 0.0)
        y = self.act(self.batch_norm(self.depthwise_conv(y)))
        return self.dropout(self.pointwise_conv2(y)).transpose(1, 2)


class ConformerLayer(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        d = cfg.hidden_size
        # upstream builds these with nn.LayerNorm's default eps, whatever layer_norm_eps says
        self.ffn1_layer_norm, self.self_attn_layer_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ffn2_layer_norm, self.final_layer_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ffn1, self.ffn2 = FeedForward(cfg), FeedForward(cfg)
        self.self_attn = SelfAttention(cfg)
        self.self_attn_dropout = nn.Dropout(cfg.attention_dropout)  # upstream's choice of rate
        self.conv_module = ConvolutionModule(cfg)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None, positions: torch.Tensor, conv_mask: torch.Tensor | None
    ) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        x = x + 0.5 * self.ffn1(self.ffn1_layer_norm(x))
        x = x + self.self_attn_dropout(self.self_attn(self.self_attn_layer_norm(x), key_mask, positions))
        x = x + self.conv_module(x, conv_mask)
        return self.final_layer_norm(x + 0.5 * self.ffn2(self.ffn2_layer_norm(x)))


class ConformerEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.relative = cfg.position_embeddings_type == "relative"
        self.embed_positions = None if self.relative else RotaryFrequencies(cfg)
        self.layerdrop = cfg.layerdrop
        self.gradient_checkpointing = False  # recompute each layer in backward (training only)
        self.pos_conv_embed = PositionalConvEmbedding(cfg).requires_grad_(False)  # never called (see above)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.layers = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def positions(self, T: int, device) -> torch.Tensor:
        """What every layer's attention takes: the relative sinusoids (2T-1, D) or rotary cos/sin (2, T, dh)."""
        if self.relative:
            return relative_position_table(T, self.layer_norm.normalized_shape[0], device)
        return self.embed_positions(T)

    def forward(
        self, x: torch.Tensor, frame_mask: torch.Tensor | None, exact_padding: bool = False
    ) -> torch.Tensor:  # (B, T, D)
        """exact_padding: padded frames reach no valid frame (they are zeroed before every depthwise conv),
        as CTCModel's padding_invariant; else as transformers, which zeroes them once, here."""
        if frame_mask is not None:
            x = x * frame_mask[..., None].to(x.dtype)
        x = self.dropout(x)
        conv_mask = frame_mask if exact_padding else None
        x = run_layers(self, x, (frame_mask, self.positions(x.shape[1], x.device), conv_mask))
        return self.layer_norm(x)
