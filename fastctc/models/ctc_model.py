"""CTCModel: feature encoder -> feature projection -> SpecAugment (training) -> transformer -> CTC head.
wav2vec2-conformer: the same with conformer blocks for the transformer layers.
w2v-BERT: fbank front end -> feature projection -> SpecAugment (training) -> conformer -> CTC head."""

from __future__ import annotations

import torch
from torch import nn

from .config import FBANK_FAMILIES, EncoderConfig
from .conformer import ConformerEncoder
from .fbank import FbankFrontEnd
from .feature_encoder import FeatureEncoder, FeatureProjection
from .masking import apply_feature_mask, apply_time_mask, spec_augment
from .transformer import Encoder
from .w2v_bert import W2VBertEncoder


class CTCModel(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.config = cfg
        self.fbank = cfg.model_type in FBANK_FAMILIES
        # w2v-BERT's fbank front end has no parameters (its checkpoint has no key for it)
        self.feature_extractor = FbankFrontEnd() if self.fbank else FeatureEncoder(cfg)
        self.feature_projection = FeatureProjection(cfg)
        self.masked_spec_embed = nn.Parameter(torch.empty(cfg.hidden_size).uniform_())
        if self.fbank:
            self.encoder = W2VBertEncoder(cfg)
        elif cfg.model_type == "wav2vec2-conformer":
            self.encoder = ConformerEncoder(cfg)
        else:
            self.encoder = Encoder(cfg)
        self.dropout = nn.Dropout(cfg.final_dropout)
        self.lm_head = nn.Linear(cfg.output_size, cfg.vocab_size)

    def freeze_feature_encoder(self) -> None:
        for p in self.feature_extractor.parameters():
            p.requires_grad_(False)

    def gradient_checkpointing(self, enable: bool = True) -> None:
        """Recompute each transformer layer in backward instead of storing its activations."""
        self.encoder.gradient_checkpointing = enable

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) samples -> (B,) logit frames (<= 0 below one frame), the one count every caller takes: the
        front end's frames (the conv stack's, or w2v-BERT's stacked fbank frames), then w2v-BERT's adapter's
        subsampling. feature_encoder.frame_count is the same count of an int, without a model."""
        return self._encoder_lengths(self.feature_extractor.output_lengths(lengths))

    def _encoder_lengths(self, frames: torch.Tensor) -> torch.Tensor:
        """Front-end frames -> the encoder's output frames (only w2v-BERT's adapter changes them)."""
        return self.encoder.output_lengths(frames) if self.fbank else frames

    def conv_features(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The front end's output, what model.freeze_feature_encoder freezes (transformers' too: the
        feature projection and its layer norm stay trainable): the conv stack's, or w2v-BERT's fbank
        features (C = 160). waveforms (B, N), lengths (B,) samples or None -> (B, T, C). lengths: a group
        norm takes its statistics over each row's own frames; the fbank normalisation too (without them,
        over the whole padded row)."""
        if self.fbank:
            return self.feature_extractor(waveforms, lengths)  # (B, T, 160)
        return self.feature_extractor(waveforms, lengths).transpose(1, 2)

    def forward(
        self,
        waveforms: torch.Tensor | None,
        lengths: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        padding_invariant: bool = False,
        train_encoder: bool = True,
        features: torch.Tensor | None = None,
        mask_feature_indices: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """waveforms (B, N) float, lengths (B,) samples or None (every row full length).

        With lengths, padded frames are zeroed before the positional conv and masked out of attention
        (transformers' attention_mask). padding_invariant (needs lengths): also the group norm of a
        group-norm conv stack takes its statistics over each row's own frames, and every conv after the
        transformer's input (data2vec-audio's positional convs, the conformer's depthwise convs, w2v-BERT's
        adapter convs) sees padding as zeros, so every row's logits are what it gives unpadded, alone (the
        cards' eval_batch_size 1), whatever it is batched with. w2v-BERT's fbank features are normalised
        over each row's own frames in any case (as SeamlessM4TFeatureExtractor does, one utterance at a time).

        mask_time_indices (B, T) bool, optional: frames to replace by masked_spec_embed instead of drawing
        SpecAugment time masks (applied in any mode, as transformers does with the same argument);
        mask_feature_indices (B, D) bool, optional: the same for the channel masks (zeroed channels).
        train_encoder false: everything before the head runs without gradient (fairseq's
        freeze_finetune_updates), so only lm_head learns; the masks and dropouts are drawn as usual.
        features (B, T, C), optional: the front end's output for these rows (conv_features; a frozen-feature
        cache's), used instead of running it; waveforms may then be None (lengths still say each row's samples).
        Returns logits (B, T, V) and logit_lengths (B,) long.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and train_encoder):
            x, logit_lengths = self._encode(
                waveforms, lengths, (mask_time_indices, mask_feature_indices), padding_invariant, features
            )
        return self.lm_head(self.dropout(x)), logit_lengths

    def spans_keep_to_rows(self, lengths_given: bool) -> bool:
        """Whether SpecAugment's time spans stay inside each row's frames (transformers passes the attention
        mask) rather than the padded length: only when the forward has lengths, and never for HuBERT, which
        draws without the mask, so its spans may fall in padding."""
        return lengths_given and self.config.model_type != "hubert"

    def _encode(
        self,
        waveforms: torch.Tensor | None,
        lengths: torch.Tensor | None,
        given_masks: tuple[torch.Tensor | None, torch.Tensor | None],
        padding_invariant: bool,
        features: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's output (B, T, D) before the head's dropout, and the frames per row (B,).
        given_masks: forward's (mask_time_indices, mask_feature_indices), each None or drawn by the caller."""
        cfg = self.config
        if padding_invariant and lengths is None:
            raise ValueError("CTCModel: padding_invariant needs each row's lengths")
        device = (waveforms if features is None else features).device
        lengths = None if lengths is None else lengths.to(device).long()
        if features is None:
            # the fbank front end always normalises over each row's own frames
            row_lengths = lengths if padding_invariant or self.fbank else None
            features = self.conv_features(waveforms, row_lengths)  # (B, T, C)
        B, T = features.shape[:2]
        if lengths is None:
            logit_lengths = torch.full((B,), T, dtype=torch.long, device=device)
            frame_mask = None
        else:
            logit_lengths = self.feature_extractor.output_lengths(lengths).clamp(0, T)
            frame_mask = torch.arange(T, device=device)[None, :] < logit_lengths[:, None]  # (B, T)
        x = self.feature_projection(features)  # (B, T, D)
        mask_time_indices, mask_feature_indices = given_masks
        if cfg.apply_spec_augment and mask_time_indices is not None:
            x = apply_time_mask(x, mask_time_indices.to(device), self.masked_spec_embed)
        if cfg.apply_spec_augment and self.training:
            mask_lengths = logit_lengths if self.spans_keep_to_rows(frame_mask is not None) else None
            time_prob = 0.0 if mask_time_indices is not None else cfg.mask_time_prob
            feature_prob = 0.0 if mask_feature_indices is not None else cfg.mask_feature_prob
            x = spec_augment(
                x,
                self.masked_spec_embed,
                mask_lengths,
                time_prob,
                cfg.mask_time_length,
                cfg.mask_time_min_masks,
                feature_prob,
                cfg.mask_feature_length,
                cfg.mask_feature_min_masks,
            )
        if cfg.apply_spec_augment and mask_feature_indices is not None:  # after the time mask, as upstream
            x = apply_feature_mask(x, mask_feature_indices.to(device))
        x = self.encoder(x, frame_mask, exact_padding=padding_invariant)
        if self.fbank and cfg.add_adapter:  # the adapter subsamples time
            logit_lengths = self._encoder_lengths(logit_lengths).clamp(0, x.shape[1])
        return x, logit_lengths


def exact_logits(
    model: CTCModel, waves: torch.Tensor, lengths: torch.Tensor, features: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one inference forward. waves (B, N), lengths (B,) samples -> logits (B, T, V) and frames (B,):
    each row's logits as it gives them alone and unpadded, and its own frame count, for every family.
    features: the rows' conv-stack output (model.conv_features(waves, lengths)), when a cache holds it."""
    return model(waves, lengths, padding_invariant=True, features=features)
