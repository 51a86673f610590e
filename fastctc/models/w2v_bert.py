"""w2v-BERT 2.0's context network (Chung et al. 2021, "w2v-BERT"; Seamless 2023): conformer blocks over
the stacked fbank features of fbank.py, with relative-key attention, and its checkpoint keys.

A block, as Transformers' Wav2Vec2BertEncoderLayer runs it (every LayerNorm with layer_norm_eps):
    x = x + FFN1(LN(x)) / 2
    x = x + Dropout(SelfAttention(LN(x)))      scores q.k / sqrt(dh) + q.E[clamp(j - i, -left, right)] / sqrt(dh)
    x = x + ConvModule(x)                      LN -> pointwise (D -> 2D) -> GLU -> causal depthwise conv -> LN -> act -> pointwise
    x = LN(x + FFN2(LN(x)) / 2)
The encoder zeroes padded frames and applies dropout before the blocks; there is no final LayerNorm.
The depthwise conv is causal (left padding k - 1), so a valid frame reads only earlier, valid frames:
padding never reaches it, and a batched row is what it is alone without any extra masking.

With add_adapter (transformers' fine-tuning guide turns it on), an adapter follows (optionally after a
half-step ReLU feed-forward, use_intermediate_ffn_before_adapter): an optional projection to
output_hidden_size, then layers that each subsample time by adapter_stride:
    r = GLU(Conv_s(LN(x)));  x = r + Dropout(SelfAttention(GLU(Conv_s(LN(x)))));  x = x + FFN(LN(x))
with plain attention (no positions). Its convs are not causal: with exact padding the padded frames enter
them as zeros (what a row alone sees past its end); without, as transformers, as whatever they hold.
Names mirror Transformers' Wav2Vec2Bert* modules so that the key table is an identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import EncoderConfig
from .conformer import BLOCK_KEYS
from .feature_encoder import activation, adapter_output_length
from .transformer import FeedForward, run_layers

_LAYER_KEYS = BLOCK_KEYS + ["self_attn.distance_embedding.weight"]
_LAYER_KEYS += [f"conv_module.depthwise_layer_norm.{p}" for p in ("weight", "bias")]
# Checkpoint key (base-model prefix `wav2vec2_bert.` stripped) -> native name, `{}` the layer index: the keys
# this family adds to hf_weights.WEIGHT_MAP (whose feature_projection, masked_spec_embed and lm_head it shares;
# wav2vec2's conv and transformer keys have no place in this model, so a checkpoint holding one fails loudly).
KEYS: dict[str, str | None] = {f"encoder.layers.{{}}.{k}": f"encoder.layers.{{}}.{k}" for k in _LAYER_KEYS}
# the adapter and the feed-forward before it sit beside the encoder upstream, inside it here
_ADAPTER_LAYER_KEYS = [
    f"{m}.{p}"
    for m in ("residual_layer_norm", "residual_conv", "self_attn_layer_norm", "self_attn_conv", "ffn_layer_norm")
    for p in ("weight", "bias")
]
_ADAPTER_LAYER_KEYS += [f"self_attn.linear_{n}.{p}" for n in ("q", "k", "v", "out") for p in ("weight", "bias")]
_ADAPTER_LAYER_KEYS += [f"ffn.{lin}.{p}" for lin in ("intermediate_dense", "output_dense") for p in ("weight", "bias")]
KEYS.update({f"adapter.layers.{{}}.{k}": f"encoder.adapter.layers.{{}}.{k}" for k in _ADAPTER_LAYER_KEYS})
KEYS.update(
    {f"adapter.{m}.{p}": f"encoder.adapter.{m}.{p}" for m in ("proj", "proj_layer_norm") for p in ("weight", "bias")}
)
KEYS.update(
    {
        f"intermediate_ffn.{lin}.{p}": f"encoder.intermediate_ffn.{lin}.{p}"
        for lin in ("intermediate_dense", "output_dense")
        for p in ("weight", "bias")
    }
)


def relative_key_bias(q: torch.Tensor, table: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """(B, H, T, dh) queries, (left + right + 1, dh) distance embeddings -> (B, H, T, T) scores
    q_i . E[clamp(j - i, -left, right) + left], unscaled. Computed as q E^T (B, H, T, P), then gathered per
    (i, j): never the (T, T, dh) embedding tensor upstream's einsum builds."""
    T = q.shape[2]
    by_distance = q @ table.to(q.dtype).T  # (B, H, T, P)
    pos = torch.arange(T, device=q.device)
    index = ((pos[None, :] - pos[:, None]).clamp(-left, right) + left).expand(*q.shape[:2], T, T)  # (B, H, T, T)
    return by_distance.gather(-1, index)


class SelfAttention(nn.Module):
    """Relative-key attention, or (the adapter's, of width output_hidden_size) plain attention."""

    def __init__(self, cfg: EncoderConfig, adapter: bool = False):
        super().__init__()
        d, self.num_heads = (cfg.output_size if adapter else cfg.hidden_size), cfg.num_attention_heads
        self.head_size = d // self.num_heads
        self.dropout = cfg.attention_dropout
        self.left, self.right = cfg.left_max_position_embeddings, cfg.right_max_position_embeddings
        self.linear_q, self.linear_k, self.linear_v, self.linear_out = (nn.Linear(d, d) for _ in range(4))
        self.distance_embedding = None if adapter else nn.Embedding(self.left + self.right + 1, self.head_size)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        B, T, D = x.shape
        H, dh = self.num_heads, self.head_size

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, H, dh).transpose(1, 2)  # (B, H, T, dh)

        q, k, v = heads(self.linear_q(x)), heads(self.linear_k(x)), heads(self.linear_v(x))
        bias = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, T) True = attend
        if self.distance_embedding is not None:
            bias = relative_key_bias(q, self.distance_embedding.weight, self.left, self.right) / math.sqrt(dh)
            if key_mask is not None:
                bias = bias.masked_fill(~key_mask[:, None, None, :], float("-inf"))  # (B, H, T, T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0)
        return self.linear_out(y.transpose(1, 2).reshape(B, T, D))


class ConvolutionModule(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        d, self.kernel = cfg.hidden_size, cfg.conv_depthwise_kernel_size
        self.layer_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.pointwise_conv1 = nn.Conv1d(d, 2 * d, 1, bias=False)
        self.depthwise_conv = nn.Conv1d(d, d, self.kernel, groups=d, bias=False)
        self.depthwise_layer_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.act = activation(cfg.hidden_act)
        self.pointwise_conv2 = nn.Conv1d(d, d, 1, bias=False)
        self.dropout = nn.Dropout(cfg.conformer_conv_dropout)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        y = self.layer_norm(x)
        if frame_mask is not None:
            y = torch.where(
                frame_mask[..., None], y, 0.0
            )  # upstream zeroes padded frames here (no valid frame reads them)
        y = F.glu(self.pointwise_conv1(y.transpose(1, 2)), dim=1)  # (B, D, T)
        y = self.depthwise_conv(F.pad(y, (self.kernel - 1, 0)))  # causal: frame t reads t - k + 1 .. t
        y = self.act(self.depthwise_layer_norm(y.transpose(1, 2)))  # (B, T, D)
        return self.dropout(self.pointwise_conv2(y.transpose(1, 2))).transpose(1, 2)


class ConformerLayer(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        d, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.ffn1_layer_norm, self.self_attn_layer_norm = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
        self.ffn2_layer_norm, self.final_layer_norm = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
        self.ffn1, self.ffn2 = FeedForward(cfg), FeedForward(cfg)
        self.self_attn = SelfAttention(cfg)
        self.self_attn_dropout = nn.Dropout(cfg.attention_dropout)  # upstream's choice of rate
        self.conv_module = ConvolutionModule(cfg)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        x = x + 0.5 * self.ffn1(self.ffn1_layer_norm(x))
        x = x + self.self_attn_dropout(self.self_attn(self.self_attn_layer_norm(x), frame_mask))
        x = x + self.conv_module(x, frame_mask)
        return self.final_layer_norm(x + 0.5 * self.ffn2(self.ffn2_layer_norm(x)))


class AdapterLayer(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        d, eps, self.kernel, self.stride = (
            cfg.output_size,
            cfg.layer_norm_eps,
            cfg.adapter_kernel_size,
            cfg.adapter_stride,
        )
        self.residual_layer_norm, self.self_attn_layer_norm = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
        self.residual_conv, self.self_attn_conv = (
            nn.Conv1d(d, 2 * d, self.kernel, stride=self.stride, padding=self.stride // 2) for _ in range(2)
        )
        self.self_attn = SelfAttention(cfg, adapter=True)
        self.self_attn_dropout = nn.Dropout(cfg.conformer_conv_dropout)  # upstream's choice of rate
        self.ffn_layer_norm = nn.LayerNorm(d, eps=eps)
        self.ffn = FeedForward(cfg, width=d, act=cfg.adapter_act)

    def _pool(self, conv: nn.Conv1d, y: torch.Tensor, conv_mask: torch.Tensor | None) -> torch.Tensor:
        if conv_mask is not None:
            y = torch.where(conv_mask[..., None], y, 0.0)
        return F.glu(conv(y.transpose(1, 2)), dim=1).transpose(1, 2)  # (B, T', D)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None, conv_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, D) -> (B, T', D). key_mask (B, T'): the output frames to attend; conv_mask (B, T), for
        exact padding: the input frames the convs read as themselves (the others as zeros)."""
        residual = self._pool(self.residual_conv, self.residual_layer_norm(x), conv_mask)
        y = self._pool(self.self_attn_conv, self.self_attn_layer_norm(x), conv_mask)
        x = residual + self.self_attn_dropout(self.self_attn(y, key_mask))
        return x + self.ffn(self.ffn_layer_norm(x))


class Adapter(nn.Module):
    """LayerDrop does not reach it (upstream's adapter loop may skip a layer, but then still counts the
    frames that layer would have subsampled, so its logits and its frame counts disagree)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        d_out = cfg.output_size
        self.proj = nn.Linear(cfg.hidden_size, d_out) if d_out != cfg.hidden_size else None
        self.proj_layer_norm = nn.LayerNorm(d_out, eps=cfg.layer_norm_eps) if self.proj is not None else None
        self.layers = nn.ModuleList(AdapterLayer(cfg) for _ in range(cfg.num_adapter_layers))

    def output_lengths(self, lengths):
        for layer in self.layers:
            lengths = adapter_output_length(lengths, layer.kernel, layer.stride)
        return lengths

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None, exact_padding: bool) -> torch.Tensor:
        """(B, T, D) -> (B, T', output_size); lengths (B,) valid frames or None (every frame valid)."""
        if self.proj is not None:
            x = self.proj_layer_norm(self.proj(x))
        for layer in self.layers:
            conv_mask = None if lengths is None or not exact_padding else _valid(lengths, x.shape[1])
            T_out = (x.shape[1] + 2 * (layer.stride // 2) - layer.kernel) // layer.stride + 1  # the convs' frames
            lengths = None if lengths is None else adapter_output_length(lengths, layer.kernel, layer.stride)
            x = layer(x, None if lengths is None else _valid(lengths, T_out), conv_mask)
        return x


@torch.no_grad()
def init_adapter(adapter: Adapter, initializer_range: float) -> None:
    """A fresh adapter as transformers initialises one (Wav2Vec2BertPreTrainedModel._init_weights): linear
    layers normal(0, initializer_range) with zero bias, LayerNorms one and zero, convs Kaiming-normal with
    a bias uniform in +-sqrt(groups / (in_channels * kernel))."""
    for m in adapter.modules():
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, initializer_range)
            m.bias.zero_()
        elif isinstance(m, nn.LayerNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()
        elif isinstance(m, nn.Conv1d):
            nn.init.kaiming_normal_(m.weight)
            k = math.sqrt(m.groups / (m.in_channels * m.kernel_size[0]))
            m.bias.uniform_(-k, k)


def _valid(lengths: torch.Tensor, T: int) -> torch.Tensor:
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]  # (B, T)


class W2VBertEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.layerdrop = cfg.layerdrop
        self.gradient_checkpointing = False  # recompute each layer in backward (training only)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.layers = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.num_hidden_layers))
        ffn = cfg.add_adapter and cfg.use_intermediate_ffn_before_adapter
        self.intermediate_ffn = FeedForward(cfg, act="relu") if ffn else None
        self.adapter = Adapter(cfg) if cfg.add_adapter else None

    def output_lengths(self, frames: torch.Tensor) -> torch.Tensor:
        """Output frames of `frames` stacked fbank frames (the adapter subsamples)."""
        return frames if self.adapter is None else self.adapter.output_lengths(frames)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None, exact_padding: bool = False) -> torch.Tensor:
        """(B, T, D) -> (B, T', output_size); frame_mask (B, T) True = valid. Padding reaches no valid frame
        of the conformer blocks (see the module docstring); exact_padding keeps it out of the adapter's convs."""
        if frame_mask is not None:
            x = torch.where(frame_mask[..., None], x, 0.0)  # padded frames are zero, as upstream
        x = run_layers(self, self.dropout(x), (frame_mask,))
        if self.intermediate_ffn is not None:
            x = x + 0.5 * self.intermediate_ffn(x)
        if self.adapter is not None:
            x = self.adapter(x, None if frame_mask is None else frame_mask.sum(-1), exact_padding)
        return x
