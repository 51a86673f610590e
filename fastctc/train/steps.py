"""One optimizer step: its micro-batches (`steps`), their loss and gradients (`forward_backward`), and the
update (`optimizer_step`). Nothing here reads a value back from the device: a step runs ahead of the
host, and the progress line fetches what it reports once per line (progress.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from fastctc.kernels import ctc_loss

from ..data.batching import Batch
from .recipe_streams import recipe_masks
from .run import Run


def steps(run: Run) -> Iterator[list[Batch]]:
    """Each remaining optimizer step's micro-batches (train.grad_accum of them), epoch after epoch.

    Owns the position a checkpoint records: `state.epoch` and `state.batch_in_epoch` advance here, and
    a resumed run starts where they point. The sampler hands this rank its share of each step's
    world_size x grad_accum neighbouring batches, so DDP and accumulation see the same utterances per
    step. An incomplete accumulation at an epoch's end is dropped, not carried into the next epoch.
    """
    state, accum = run.state, run.cfg.train.grad_accum
    while state.step < run.total_steps:
        run.sampler.set_epoch(state.epoch, start=state.batch_in_epoch // accum)  # saved at step boundaries
        micro: list[Batch] = []
        for batch in run.loader:
            micro.append(batch)
            if len(micro) < accum:
                continue
            state.batch_in_epoch += accum
            yield micro
            micro = []
            if state.step >= run.total_steps:
                return
        state.epoch += 1
        state.batch_in_epoch = 0


def stand_in_batch(sample_rate: int) -> Batch:
    """One second of silence with an empty target: under DDP a rank whose every file failed to load
    still takes part in the step's all-reduce, its loss weighted 0."""
    return Batch(
        torch.zeros(1, sample_rate),
        torch.tensor([sample_rate]),
        torch.zeros(1, 1, dtype=torch.long),
        torch.zeros(1, dtype=torch.long),
        [],
    )


def micro_batch_loss(run: Run, batch: Batch) -> torch.Tensor:
    """The CTC loss (mean over utterances of loss / target length, the recipe's "mean") of one batch."""
    device, model, invariant = run.device, run.model, run.cfg.train.padding_invariant
    # (B, N), pinned by the loader on CUDA; a batch whose frozen features are all stored came unread
    waves = batch.waveforms.to(device, non_blocking=True) if batch.audio else None
    if run.augment is not None:  # on the device, in fp32; a speed change gives (B, N') and new lengths
        waves, lengths = run.augment(waves, batch)
    else:
        lengths = batch.lengths.to(device, non_blocking=True)  # (B,)
    # a host bool that flips once: torch.compile recompiles at the switch, never per step
    train_encoder = run.state.step >= run.cfg.train.freeze_finetune_steps
    with run.precision.autocast():
        features = None
        if run.features is not None:  # the frozen conv stack's output, computed once per utterance
            conv = run.features.conv
            compute = (lambda: conv(waves, lengths if invariant else None)) if batch.audio else None
            features = run.features.train.features(batch.ids, batch.lengths, batch.waveforms.shape[1], compute)
            waves = None
        masks = recipe_batch_masks(run, batch) if run.cfg.train.random_streams == "recipe" else {}
        if invariant:  # each row as it is alone (and its own CTC length)
            logits, logit_lengths = run.step_model(
                waves, lengths, padding_invariant=True, train_encoder=train_encoder, features=features, **masks
            )  # (B, T, V), (B,)
        else:
            logits, logit_lengths = run.step_model(
                waves, lengths if run.use_mask else None, train_encoder=train_encoder, features=features, **masks
            )
    if not run.use_mask and not run.cfg.train.padding_invariant and run.cfg.train.ctc_true_lengths:
        logit_lengths = model.output_lengths(lengths).clamp(max=logits.shape[1])
    return ctc_loss(
        logits,
        batch.targets.to(device, non_blocking=True),
        logit_lengths,
        batch.target_lengths.to(device, non_blocking=True),
        blank=run.vocab.blank,
        reduction="mean",
        zero_infinity=run.cfg.train.zero_infinity,
    )


def recipe_batch_masks(run: Run, batch: Batch) -> dict[str, torch.Tensor]:
    """The Trainer's SpecAugment masks for this batch (train/recipe_streams.py), drawn on the host from the
    batch's host lengths and sent with the batch: no device value is read back."""
    model = run.model
    frames = model.feature_extractor.output_lengths(batch.lengths)  # (B,) host
    padded = int(model.feature_extractor.output_lengths(torch.tensor([batch.waveforms.shape[1]]))[0])
    rows = model.spans_keep_to_rows(run.use_mask or run.cfg.train.padding_invariant)  # the forward's lengths
    masks = recipe_masks(model.config, frames, padded, rows)
    return {k: m.to(run.device, non_blocking=True) for k, m in masks.items()}


def forward_backward(run: Run, micro_batches: list[Batch]) -> torch.Tensor:
    """Accumulate one step's gradients; returns the sum of its micro-batches' losses (a device scalar)."""
    accum = len(micro_batches)
    loss_sum = torch.zeros((), device=run.device)
    for i, batch in enumerate(micro_batches):
        weight = 1.0
        if not batch.texts:
            batch, weight = stand_in_batch(run.cfg.data.sample_rate), 0.0
        # under DDP, gradients are all-reduced only on the step's last micro-batch
        last = i == accum - 1
        sync = run.ddp.no_sync() if run.ddp is not None and not last else contextlib.nullcontext()
        with sync:
            loss = micro_batch_loss(run, batch)
            run.scaler.scale(loss * (weight / accum)).backward()
        loss_sum += loss.detach() * weight
    return loss_sum


def optimizer_step(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip, apply the update unless a gradient is not finite, zero the gradients, advance the schedule,
    update the weight average.

    Returns (grad_norm, skipped) as device scalars. The skip is decided on the device, the way
    GradScaler does it: fused AdamW reads a `found_inf` flag and leaves the parameters, its moments and
    its step count untouched when it is set. A non-finite loss gives non-finite gradients, so this
    catches it too; under DDP the gradients are all-reduced, so every rank skips together. While
    train.freeze_finetune_steps holds the encoder, its parameters have no gradient: AdamW and the clip
    leave them (and their moments) out, as fairseq's Adam does.
    """
    optimizer = run.optimizer
    run.scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.optim.max_grad_norm)
    skipped = ~torch.isfinite(grad_norm)
    if run.scaler.is_enabled():  # fp16: the scaler finds the same inf/NaN gradients and skips the same way
        run.scaler.step(optimizer)
        run.scaler.update()
    elif optimizer.defaults.get("fused"):
        optimizer.found_inf = skipped.float()
        optimizer.step()
        del optimizer.found_inf
    elif not skipped.item():  # host sync: only optimizers without a found_inf flag (never ours)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    run.schedule.step()
    if run.average is not None:  # a skipped step leaves the weights, and so adds them once more
        run.average.update(run.state.step + 1)
    return grad_norm, skipped
