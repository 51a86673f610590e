"""SpecAugment as transformers' Wav2Vec2 applies it in training: random time spans take the learned
`masked_spec_embed`, random channel spans are zeroed.

The span sampling reproduces `transformers.models.wav2vec2.modeling_wav2vec2._compute_mask_indices`:
  - one uniform `eps` per batch; spans per row n = int(prob * length / span + eps), at least min_spans,
    at most seq_len // span and at most length - span + 1;
  - n distinct starts drawn uniformly from [0, length - span]; spans may overlap; positions past the
    end clip to seq_len - 1;
  - a row drawing no span while others do marks frame seq_len - 1 (upstream's dummy index); when a
    full-length row would draw none (short batches: prob * seq_len / span + eps < 1), nothing is masked.
It draws with torch's RNG instead of numpy's, vectorised over the batch (no Python loop per row), with
static shapes and no host sync, and the masks are applied with `torch.where` rather than an in-place
masked write, so torch.compile traces it.

Channel masks against fairseq's wav2vec2 fine-tuning (mask_channel_prob / mask_channel_length are
model.mask_feature_prob / mask_feature_length; its compute_mask_indices with mask_channel_selection
"static", no overlap rule, no minimum). The same: spans per row int(prob * channels / span + u), the
channels of the projected hidden size zeroed in every frame, after the time mask (mask_channel_before
false). The differences (tests/test_models_masking.py measures what they change):
  - fairseq's starts lie in [0, channels - span - 1], so its last channel is never masked; ours in
    [0, channels - span], as transformers';
  - fairseq then makes every row of a batch mask as many channels as its least-masked row, by unmasking
    random channels of the others (require_same_masks), so a row's mask may no longer be whole spans;
    our rows are drawn independently, so a batch of B rows masks more channels on average;
  - fairseq draws u per row (num_mask_ver 2; per batch in its older versions), we per batch: the same when
    prob * channels / span is whole, as base_100h's 0.5 * 768 / 64 = 6.
"""

from __future__ import annotations

import torch


def _num_spans(lengths: torch.Tensor, seq_len: int, prob: float, span: int, min_spans: int, eps) -> torch.Tensor:
    """Spans per row, upstream's compute_num_masked_span. lengths: (B,) long, eps: scalar (tensor or float)."""
    n = torch.floor(prob * lengths / span + eps).long()  # int() of a non-negative value
    n = n.clamp(min=min_spans)
    n = torch.where(n * span > seq_len, torch.full_like(n, seq_len // span), n)
    n = torch.minimum(n, (lengths - (span - 1)).clamp(min=0))
    return n


def compute_span_mask(
    batch: int,
    seq_len: int,
    prob: float,
    span: int,
    min_spans: int = 0,
    lengths: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Bool mask (batch, seq_len), True = masked. lengths (batch,) valid positions per row, or None (all)."""
    if span < 1:
        raise ValueError("SpecAugment: mask length has to be at least 1")
    if span > seq_len:
        raise ValueError(f"SpecAugment: mask length {span} is longer than the sequence ({seq_len} frames)")
    # A static bound on the spans of any row (upstream's max_num_masked_span with eps taken as 1), so
    # shapes never depend on a random draw; the extra slots repeat the row's first start, as upstream pads.
    max_spans = min(max(int(prob * seq_len / span + 1), min_spans), seq_len // span, seq_len - span + 1)
    if max_spans == 0:
        return torch.zeros(batch, seq_len, dtype=torch.bool, device=device)
    if lengths is None:
        lengths = torch.full((batch,), seq_len, dtype=torch.long, device=device)
    lengths = lengths.to(device=device, dtype=torch.long)
    eps = torch.rand((), device=device)
    n = _num_spans(lengths, seq_len, prob, span, min_spans, eps)  # (B,)

    # n distinct uniform starts in [0, length - span]: the top-n of iid uniform scores over the valid
    # starts (invalid ones score -1 and are never among the first n, since n <= valid count).
    n_starts = seq_len - span + 1
    scores = torch.rand(batch, n_starts, device=device)  # (B, S)
    valid = torch.arange(n_starts, device=device)[None, :] < (lengths - span + 1)[:, None]
    scores = torch.where(valid, scores, torch.full_like(scores, -1.0))
    starts = scores.topk(max_spans, dim=1).indices  # (B, K), random order

    slot = torch.arange(max_spans, device=device)[None, :]  # (1, K)
    dummy = torch.where(n > 0, starts[:, 0], torch.full_like(starts[:, 0], seq_len - 1))  # (B,)
    starts = torch.where(slot < n[:, None], starts, dummy[:, None])
    idx = (starts[:, :, None] + torch.arange(span, device=device)).reshape(batch, -1)  # (B, K * span)
    idx = idx.clamp(max=seq_len - 1)
    mask = torch.zeros(batch, seq_len, dtype=torch.bool, device=device).scatter(1, idx, True)
    # upstream masks nothing at all when a full-length row would draw no span (its max_num_masked_span is 0
    # for this eps): no dummy frame either, which the static bound above cannot know
    full = torch.full((1,), seq_len, dtype=torch.long, device=device)
    any_span = _num_spans(full, seq_len, prob, span, min_spans, eps)[0] > 0
    return mask & any_span


def apply_time_mask(x: torch.Tensor, mask: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
    """x (B, T, D), mask (B, T) bool, embed (D,): masked frames become embed (gradient flows to embed)."""
    return torch.where(mask[:, :, None], embed.to(x.dtype), x)


def apply_feature_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x (B, T, D), mask (B, D) bool: masked channels become zero in every frame."""
    return torch.where(mask[:, None, :], torch.zeros((), dtype=x.dtype, device=x.device), x)


def spec_augment(
    x: torch.Tensor,
    embed: torch.Tensor,
    lengths: torch.Tensor | None,
    time_prob: float,
    time_span: int,
    time_min_spans: int,
    feature_prob: float,
    feature_span: int,
    feature_min_spans: int,
) -> torch.Tensor:
    """Time then feature masking of x (B, T, D) as Wav2Vec2Model._mask_hidden_states does in training.

    lengths (B,) valid frames per row (spans stay inside them) or None (every row full length).
    """
    B, T, D = x.shape
    if time_prob > 0:
        mask = compute_span_mask(B, T, time_prob, time_span, time_min_spans, lengths, x.device)
        x = apply_time_mask(x, mask, embed)
    if feature_prob > 0:
        mask = compute_span_mask(B, D, feature_prob, feature_span, feature_min_spans, None, x.device)
        x = apply_feature_mask(x, mask)
    return x
