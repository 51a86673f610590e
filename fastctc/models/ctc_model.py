"""CTCModel: feature encoder -> feature projection -> transformer -> CTC head."""

from __future__ import annotations

import torch
from torch import nn

from .config import EncoderConfig
from .feature_encoder import FeatureEncoder, FeatureProjection
from .transformer import Encoder


class CTCModel(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.config = cfg
        self.feature_extractor = FeatureEncoder(cfg)
        self.feature_projection = FeatureProjection(cfg)
        self.masked_spec_embed = nn.Parameter(torch.empty(cfg.hidden_size).uniform_())
        self.encoder = Encoder(cfg)
        self.dropout = nn.Dropout(cfg.final_dropout)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size)

    def freeze_feature_encoder(self) -> None:
        for p in self.feature_extractor.parameters():
            p.requires_grad_(False)

    def forward(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """waveforms (B, N) float, lengths (B,) samples or None (every row full length).

        Returns logits (B, T, V) and logit_lengths (B,) long.
        """
        B, N = waveforms.shape
        features = self.feature_extractor(waveforms).transpose(1, 2)  # (B, T, C)
        T = features.shape[1]
        if lengths is None:
            logit_lengths = torch.full((B,), T, dtype=torch.long, device=waveforms.device)
            frame_mask = None
        else:
            logit_lengths = self.feature_extractor.output_lengths(lengths.to(waveforms.device).long()).clamp(0, T)
            frame_mask = torch.arange(T, device=waveforms.device)[None, :] < logit_lengths[:, None]  # (B, T)
        x = self.feature_projection(features)  # (B, T, D)
        x = self.encoder(x, frame_mask)
        return self.lm_head(self.dropout(x)), logit_lengths
