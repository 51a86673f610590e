"""CTCModel: feature encoder -> feature projection -> SpecAugment (training) -> transformer -> CTC head.
w2v-BERT: fbank front end -> feature projection -> SpecAugment (training) -> conformer -> CTC head."""

from __future__ import annotations

import torch
from torch import nn

from .config import FBANK_FAMILIES, EncoderConfig
from .fbank import FbankFrontEnd
from .feature_encoder import FeatureEncoder, FeatureProjection
from .masking import apply_time_mask, spec_augment
from .transformer import Encoder
from .w2v_bert import W2VBertEncoder


class CTCModel(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.config = cfg
        self.fbank = cfg.model_type in FBANK_FAMILIES
        self.feature_extractor = (
            FbankFrontEnd() if self.fbank else FeatureEncoder(cfg)
        )  # the front end has no parameters
        self.feature_projection = FeatureProjection(cfg)
        self.masked_spec_embed = nn.Parameter(torch.empty(cfg.hidden_size).uniform_())
        self.encoder = W2VBertEncoder(cfg) if self.fbank else Encoder(cfg)
        self.dropout = nn.Dropout(cfg.final_dropout)
        self.lm_head = nn.Linear(cfg.output_size, cfg.vocab_size)

    def freeze_feature_encoder(self) -> None:
        for p in self.feature_extractor.parameters():
            p.requires_grad_(False)

    def gradient_checkpointing(self, enable: bool = True) -> None:
        """Recompute each transformer layer in backward instead of storing its activations."""
        self.encoder.gradient_checkpointing = enable

    def forward(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        padding_invariant: bool = False,
        train_encoder: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """waveforms (B, N) float, lengths (B,) samples or None (every row full length).

        With lengths, padded frames are zeroed before the positional conv and masked out of attention
        (transformers' attention_mask). padding_invariant (needs lengths): also the group norm of a
        group-norm conv stack takes its statistics over each row's own frames, so every row's logits are
        what it gives unpadded, alone (the cards' eval_batch_size 1), whatever it is batched with.
        w2v-BERT is so in any case: its fbank features are normalised over each row's own frames (as
        SeamlessM4TFeatureExtractor does, one utterance at a time) and no later layer lets padding in.

        mask_time_indices (B, T) bool, optional: frames to replace by masked_spec_embed instead of drawing
        SpecAugment time masks (applied in any mode, as transformers does with the same argument).
        train_encoder false: everything before the head runs without gradient (fairseq's
        freeze_finetune_updates), so only lm_head learns; the masks and dropouts are drawn as usual.
        Returns logits (B, T, V) and logit_lengths (B,) long.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and train_encoder):
            x, logit_lengths = self._encode(waveforms, lengths, mask_time_indices, padding_invariant)
        return self.lm_head(self.dropout(x)), logit_lengths

    def _encode(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | None,
        mask_time_indices: torch.Tensor | None,
        padding_invariant: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's output (B, T, D) before the head's dropout, and the frames per row (B,)."""
        cfg = self.config
        B, N = waveforms.shape
        if padding_invariant and lengths is None:
            raise ValueError("CTCModel: padding_invariant needs each row's lengths")
        lengths = None if lengths is None else lengths.to(waveforms.device).long()
        if self.fbank:
            features = self.feature_extractor(waveforms, lengths)  # (B, T, 160)
        else:
            features = self.feature_extractor(waveforms, lengths if padding_invariant else None).transpose(1, 2)
        T = features.shape[1]
        if lengths is None:
            logit_lengths = torch.full((B,), T, dtype=torch.long, device=waveforms.device)
            frame_mask = None
        else:
            logit_lengths = self.feature_extractor.output_lengths(lengths).clamp(0, T)
            frame_mask = torch.arange(T, device=waveforms.device)[None, :] < logit_lengths[:, None]  # (B, T)
        x = self.feature_projection(features)  # (B, T, D)
        if cfg.apply_spec_augment and mask_time_indices is not None:
            x = apply_time_mask(x, mask_time_indices, self.masked_spec_embed)
        if cfg.apply_spec_augment and self.training:
            # HuBERT draws time spans without the attention mask, so they may fall in padding
            mask_lengths = None if frame_mask is None or cfg.model_type == "hubert" else logit_lengths
            time_prob = 0.0 if mask_time_indices is not None else cfg.mask_time_prob
            x = spec_augment(
                x,
                self.masked_spec_embed,
                mask_lengths,
                time_prob,
                cfg.mask_time_length,
                cfg.mask_time_min_masks,
                cfg.mask_feature_prob,
                cfg.mask_feature_length,
                cfg.mask_feature_min_masks,
            )
        x = self.encoder(x, frame_mask, exact_padding=padding_invariant)
        if self.fbank and cfg.add_adapter:  # the adapter subsamples time
            logit_lengths = self.encoder.output_lengths(logit_lengths).clamp(0, x.shape[1])
        return x, logit_lengths


def exact_logits(model: CTCModel, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The one inference forward. waves (B, N), lengths (B,) samples -> logits (B, T, V) and frames (B,):
    each row's logits as it gives them alone and unpadded, and its own frame count, for every family."""
    return model(waves, lengths, padding_invariant=True)
