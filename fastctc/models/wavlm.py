"""WavLM's gated relative position bias (Chen et al. 2022, "WavLM", section 2.1).

A bucketed relative-position embedding, owned by layer 0 and computed once per forward; every layer
scales it per head and per query frame with a gate computed from its own input:
    bias[b, h, i, j] = g[b, h, i] * E[bucket(j - i), h]
    g = a * (b * c_h - 1) + 2,  (a, b) = sigmoid of a linear map of the per-head slice of x_i, summed in pairs of 4
Names mirror Transformers' WavLMAttention (rel_attn_embed, gru_rel_pos_linear, gru_rel_pos_const).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import EncoderConfig


def relative_position_buckets(T: int, num_buckets: int, max_distance: int, device=None) -> torch.Tensor:
    """(T, T) long bucket of key j relative to query i, as WavLMAttention._relative_positions_bucket:
    half the buckets per direction, exact below num_buckets // 4, log-spaced up to max_distance."""
    rel = torch.arange(T, device=device)[None, :] - torch.arange(T, device=device)[:, None]  # j - i
    half = num_buckets // 2
    buckets = (rel > 0).long() * half
    rel = rel.abs()
    max_exact = half // 2
    # clamp(min=1) only avoids log(0) on the exact branch, which torch.where discards anyway
    large = (
        max_exact
        + (
            torch.log(rel.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
        ).long()
    )
    large = large.clamp(max=half - 1)
    return buckets + torch.where(rel < max_exact, rel, large)


class WavLMAttention(nn.Module):
    """Self-attention with the gated relative position bias added to the scores. Same projections and
    call as transformer.Attention, plus the layer-0 bias it gates."""

    def __init__(self, cfg: EncoderConfig, has_relative_position_bias: bool):
        super().__init__()
        d = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.dropout = cfg.attention_dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_bucket_distance
        self.gru_rel_pos_const = nn.Parameter(torch.ones(1, self.num_heads, 1, 1))
        self.gru_rel_pos_linear = nn.Linear(cfg.hidden_size // self.num_heads, 8)
        self.rel_attn_embed = nn.Embedding(cfg.num_buckets, self.num_heads) if has_relative_position_bias else None

    def position_bias(self, T: int) -> torch.Tensor:  # (H, T, T), layer 0 only
        buckets = relative_position_buckets(T, self.num_buckets, self.max_distance, self.rel_attn_embed.weight.device)
        return self.rel_attn_embed(buckets).permute(2, 0, 1)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None, position_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, T, D = x.shape
        H = self.num_heads
        xh = x.view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, D/H)
        gate_a, gate_b = torch.sigmoid(self.gru_rel_pos_linear(xh).view(B, H, T, 2, 4).sum(-1)).chunk(2, dim=-1)
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0  # (B, H, T, 1)
        if key_mask is None:
            bias = gate * position_bias[None]  # (B, H, T, T)
        else:
            # padded keys get -inf, added in the same pass as the gating: one (B, H, T, T) write, and no
            # backward pass for the mask (a masked_fill would cost one of each)
            key_bias = torch.zeros(key_mask.shape, dtype=gate.dtype, device=gate.device).masked_fill(
                ~key_mask, float("-inf")
            )[:, None, None, :]  # (B, 1, 1, T)
            bias = torch.addcmul(key_bias, gate, position_bias[None])  # (B, H, T, T)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, D/H)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, D/H)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, D))
