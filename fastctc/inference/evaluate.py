"""The one evaluation path: training's evaluations, `fastctc eval` (greedy, `--lm`, `--lm-sweep`,
`--report`), `transcribe` and `align` all take their logits from `exact_logits` and score through `score`.

Exact: a padded batch computes what each utterance computes alone and unpadded, the cards' protocol
(`eval_batch_size: 1`), for every family. Group-norm checkpoints (wav2vec2-base, distilhubert) see no
attention mask in the recipe, so a padded batch there would normalise conv layer 0 over the padding,
feed padded frames to the positional conv and attend to them; `CTCModel(..., padding_invariant=True)`
takes the group norm's statistics over each row's own frames, zeroes the padded frames before the
positional conv and masks them out of attention. Layer-norm checkpoints need only the attention mask.
Every utterance is decoded over its own frames (the unpadded length), whatever the batch.

`fastctc eval` keeps every utterance of its split, however long: those longer than `chunk_s` run alone in overlapping chunks (chunking.py), so memory stays bounded
by the chunk; they are the one case where evaluation is not the whole-file computation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fastctc.kernels import ctc_loss

from ..config import DataConfig, RunConfig, load_config
from ..data.batching import LengthBucketSampler, make_loader
from ..data.phones import fold_text
from ..data.report import DataReport
from ..decoding import greedy_ids
from ..metrics import cer, per, wer
from ..models.ctc_model import exact_logits
from .chunking import chunked_logits

Fold = Mapping[str, str | None]


@dataclass
class SplitOutput:
    """One pass of a model over an evaluation split."""

    ids: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    hyps: list[str] = field(default_factory=list)  # greedy hypotheses (empty when the logits are kept)
    logits: list[torch.Tensor] = field(default_factory=list)  # (T_i, V) float32 on the CPU, when kept
    loss: float | None = None  # mean over utterances of CTC loss / target length (the recipe's "mean")
    audio_s: float = 0.0
    model_s: float = 0.0  # wall seconds of the pass (loading, model, greedy decode)
    skipped: int = 0  # utterances that could not be read, named in the data report
    report: DataReport | None = None


@torch.no_grad()
def run_split(
    model,
    dataset,
    device: torch.device,
    decode_vocab,
    *,
    batch_size: int,
    data: DataConfig,
    loss_vocab=None,
    keep_logits: bool = False,
    autocast: Callable = contextlib.nullcontext,
    chunk_s: float = 30.0,
    report: DataReport | None = None,
    features=None,
) -> SplitOutput:
    """Every readable utterance of `dataset` through `exact_logits`, in length-sorted batches of
    `batch_size` (data's workers and normalisation), then greedy-decoded by `decode_vocab` or kept
    (`keep_logits`, for beam search). `loss_vocab` (the training vocabulary) adds the eval loss.
    Utterances longer than `chunk_s` run alone, in overlapping chunks.
    `features` (a FrozenFeatureStore of this split): the conv stack runs on a batch only until it is stored.

    Host syncs: one transfer per batch (its decoded ids and frame counts, or its logits), and one for
    the loss at the end."""
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    report = report or DataReport()
    out = SplitOutput(report=report)
    durations = np.asarray(dataset.durations, dtype=np.float64)
    long = [int(i) for i in np.flatnonzero(durations > chunk_s)] if chunk_s > 0 else []
    short = _Subset(dataset, [i for i in range(len(dataset)) if durations[i] <= chunk_s]) if long else dataset
    keep = (decode_vocab, keep_logits, model)
    loss_sum, scored = _batched_pass(out, model, short, device, batch_size, data, loss_vocab, autocast, keep, features)
    for i in long:  # alone, in chunks (memory bounded by the chunk)
        item = dataset[i]
        if item.audio is None:
            report.add("eval", item.reason or "unreadable", item.error)
            continue
        logits = chunked_logits(model, item.audio, device, data.do_normalize, chunk_s)[None]  # (1, T, V)
        frames, lengths = torch.tensor([logits.shape[1]]), torch.tensor([len(item.audio)])
        _collect(out, [item.id], [item.text], logits, frames, lengths, *keep)
    model.train(was_training)
    out.skipped = report.skipped("eval")
    if loss_vocab is not None:
        out.loss = float(loss_sum) / max(1, scored)  # host sync: once per pass
    out.model_s = time.perf_counter() - t0
    return out


def _batched_pass(out: SplitOutput, model, dataset, device, batch_size, data, loss_vocab, autocast, keep, features):
    """The utterances of `dataset` in length-sorted batches into `out`; (loss sum on the device, utterances
    in it). The loss stays on the device: run_split reads it once, at the end. features: the split's
    FrozenFeatureStore or None."""
    loss_sum = torch.zeros((), device=device)
    scored = 0
    if not len(dataset):
        return loss_sum, scored
    sampler = LengthBucketSampler(
        dataset.durations, 0, batch_size, pad_lengths=data.pad_lengths, frame=model.config.frame_stride
    )
    pin = device.type == "cuda"
    for batch in make_loader(dataset, sampler, loss_vocab, data, pin_memory=pin, report=out.report, split="eval"):
        with autocast():
            logits, frames = _batch_logits(model, batch, device, features)
        if loss_vocab is not None:
            loss = ctc_loss(
                logits.float(),
                batch.targets.to(device, non_blocking=True),
                frames,
                batch.target_lengths.to(device, non_blocking=True),
                blank=loss_vocab.blank,
                reduction="mean",
            )
            loss_sum += loss * len(batch.texts)
            scored += len(batch.texts)
        _collect(out, batch.ids, batch.texts, logits, frames, batch.lengths, *keep)
    return loss_sum, scored


def _batch_logits(model, batch, device: torch.device, features=None) -> tuple[torch.Tensor, torch.Tensor]:
    """exact_logits of a loader batch; with `features` (the split's FrozenFeatureStore) the conv stack runs
    only on a batch not yet stored."""
    lengths = batch.lengths.to(device, non_blocking=True)
    waves = batch.waveforms.to(device, non_blocking=True) if batch.audio else None  # None: unread, all stored
    feats = None
    if features is not None:
        compute = (lambda: model.conv_features(waves, lengths)) if batch.audio else None
        feats = features.features(batch.ids, batch.lengths, batch.waveforms.shape[1], compute)
    return exact_logits(model, waves, lengths, features=feats)


def _collect(out: SplitOutput, ids, texts, logits, frames, lengths, decode_vocab, keep_logits: bool, model) -> None:
    out.ids += ids
    out.refs += texts
    out.audio_s += float(lengths.sum()) / 16_000
    if keep_logits:
        host_frames = model.output_lengths(lengths.long()).clamp(0, logits.shape[1])  # no transfer
        for x, n in zip(logits.float().cpu(), host_frames.tolist()):
            out.logits.append(x[:n].clone())
    else:
        out.hyps += [decode_vocab.decode(ids) for ids in greedy_ids(logits, frames, decode_vocab.blank)]


class _Subset(torch.utils.data.Dataset):
    """The utterances of `dataset` at `indices` (those short enough to batch)."""

    def __init__(self, dataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices
        self.durations = [dataset.durations[i] for i in indices]
        self.in_memory = dataset.in_memory

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]

    def __getitems__(self, indices):  # the dataset's batched fetch, where it has one (SpeechDataset)
        fetch = getattr(self.dataset, "__getitems__", None)
        full = [self.indices[i] for i in indices]
        return fetch(full) if fetch else [self.dataset[i] for i in full]


def decode_logits(logits: list[torch.Tensor], vocab, decoder=None, batch_size: int = 32) -> tuple[list[str], float]:
    """Kept logits -> hypotheses (greedy, or `decoder`'s beam search) and the decoding wall seconds."""
    t0 = time.perf_counter()
    hyps = []
    for start in range(0, len(logits), batch_size):
        rows = logits[start : start + batch_size]
        lengths = torch.tensor([len(x) for x in rows])
        padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (B, T, V)
        ids = greedy_ids(padded, lengths, vocab.blank) if decoder is None else decoder.decode(padded, lengths)
        hyps += [vocab.decode(x) for x in ids]
    return hyps, time.perf_counter() - t0


def score(refs: list[str], hyps: list[str], fold: Fold | None = None) -> dict:
    """Corpus WER and CER as jiwer computes them; for phone targets also "per", after folding both sides
    to the scoring set (wer is then over the unfolded phones)."""
    scores = {"wer": wer(refs, hyps), "cer": cer(refs, hyps)}
    if fold is not None:
        scores["per"] = per(refs, hyps, fold)
    return scores


def score_text(scores: Mapping, phone_set: int | None = None) -> str:
    """The score part of every eval line: "WER 0.1234 | CER 0.0567", or "PER 0.1234 (39 phones)"."""
    if "per" in scores:
        return f"PER {scores['per']:.4f}" + (f" ({phone_set} phones)" if phone_set else "")
    return f"WER {scores['wer']:.4f} | CER {scores['cer']:.4f}"


def write_scored_report(directory, ids, refs, hyps, fold: Fold | None = None) -> None:
    """The per-utterance report (report.py); for phone targets on the phones folded to the scoring set,
    so its word error rate is the PER."""
    from .report import write_report

    if fold is not None:
        refs, hyps = [fold_text(r, fold) for r in refs], [fold_text(h, fold) for h in hyps]
    write_report(directory, ids, refs, hyps)


def phone_vocab(vocab, fold: Fold | None):
    """The decoding vocabulary: phones joined by spaces for phone targets, else `vocab` itself."""
    if fold is None:
        return vocab
    from ..data.phones import PhoneDecoder

    return PhoneDecoder.of(vocab)


def sweep_lm(logits: list[torch.Tensor], refs: list[str], vocab, decoder, lm_weights, word_scores) -> list[dict]:
    """WER/CER of the kept logits for every (lm_weight, word_score) pair; the LM and lexicon load once."""
    rows = []
    for a in lm_weights:
        for b in word_scores:
            hyps, dt = decode_logits(logits, vocab, decoder.with_options(lm_weight=a, word_score=b))
            rows.append({"lm_weight": a, "word_score": b, **score(refs, hyps), "decode_s": dt})
    return rows


def unemittable_chars(refs: list[str], tokens: list[str]) -> tuple[int, str]:
    """Reference characters the model has no output for (space as `|`), and one example: an error the
    model cannot avoid, counted in the data report rather than passed without a word."""
    have = set(tokens)
    missing = [c for r in refs for c in r if ("|" if c == " " else c) not in have]
    return len(missing), "".join(sorted(set(missing)))[:20]


def evaluate_loaded(
    loaded,
    eval_ds,
    device: torch.device,
    data: DataConfig,
    *,
    batch_size: int = 8,
    fold: Fold | None = None,
    decoder=None,
    sweep: tuple | None = None,
    report_dir=None,
    chunk_s: float = 30.0,
) -> dict:
    """`fastctc eval`: a loaded checkpoint (fastctc.inference.model) over `eval_ds` under the checkpoint's
    own normalisation, greedy or with `decoder` (beam search); `sweep` = (lm_weights, word_scores) picks
    the best pair first. Returns the result JSON (with "sweep" rows when swept)."""
    vocab = phone_vocab(loaded.vocab, fold)
    report = DataReport()
    if fold is None:
        n, example = unemittable_chars(list(eval_ds.texts), loaded.vocab.tokens)
        if n:
            report.add("eval", "unknown_chars", f"references hold {example!r}, which the model cannot output", n=n)
    split = run_split(
        loaded.model,
        eval_ds,
        device,
        vocab,
        batch_size=batch_size,
        data=dataclasses.replace(data, do_normalize=loaded.do_normalize),
        keep_logits=decoder is not None,
        chunk_s=chunk_s,
        report=report,
    )
    result: dict = {"utterances": len(split.refs), "skipped": split.skipped}
    if sweep is not None:
        result["sweep"] = sweep_lm(split.logits, split.refs, vocab, decoder, *sweep)
        best = min(result["sweep"], key=lambda r: (r["wer"], r["cer"]))
        decoder = decoder.with_options(lm_weight=best["lm_weight"], word_score=best["word_score"])
    if decoder is None:
        hyps, decode_s = split.hyps, 0.0  # greedy: decoded inside the pass
    else:
        hyps, decode_s = decode_logits(split.logits, vocab, decoder)
    result.update(score(split.refs, hyps, fold))
    result.update(_speed_and_decoder(split, decoder, decode_s))
    if report_dir is not None:
        write_scored_report(report_dir, split.ids, split.refs, hyps, fold)
        result["report"] = str(report_dir)
    result["data"] = report.summary("eval")
    return result


def _speed_and_decoder(split: SplitOutput, decoder, decode_s: float) -> dict:
    """The result's timing fields, and the beam search's settings when there was one."""
    seconds = split.model_s + decode_s
    fields = dict(
        decoder="greedy" if decoder is None else "beam",
        audio_s=split.audio_s,
        model_s=split.model_s,
        decode_s=decode_s,
        seconds=seconds,
        audio_s_per_s=split.audio_s / seconds if seconds > 0 else None,
    )
    if decoder is not None:
        fields.update(
            beam=decoder.options.beam,
            lm=str(decoder.lm_path) if decoder.lm_path else None,
            lm_weight=decoder.options.lm_weight,
            word_score=decoder.options.word_score,
            decode_audio_s_per_s=split.audio_s / decode_s if decode_s > 0 else None,
        )
    return fields


def eval_config(data: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """The config `fastctc eval --data` names: a TOML config (its [data] section is read), or a .jsonl/.tsv
    manifest, which is the eval split of a manifest corpus."""
    data = Path(data)
    if data.suffix in (".jsonl", ".tsv"):
        return load_config(None, [*overrides, "data.corpus=manifest", f"data.eval={data}"])
    return load_config(data, overrides)


def evaluate_model(
    model_path: str | Path,
    cfg: RunConfig,
    device: str = "auto",
    *,
    batch_size: int = 8,
    lm: str | Path | None = None,
    lexicon: str | Path | None = None,
    beam: int | None = None,
    beam_options=None,
    sweep: tuple | None = None,
    report_dir=None,
    chunk_s: float = 30.0,
) -> tuple[Path, dict]:
    """`fastctc eval`: the model at `model_path` (a run directory or a checkpoint) on cfg's eval split,
    greedy or with beam search (`lm`, `lexicon`, `beam`, `beam_options`: inference.lm.decoder_for), `sweep`
    as evaluate_loaded's. A bad LM fails before the data is read. Returns (the model's directory, result)."""
    from ..data.corpora import build_datasets
    from ..data.phones import score_fold
    from ..device import device_for
    from .lm import decoder_for
    from .model import load_model

    torch_device = device_for(device)
    loaded = load_model(model_path, torch_device)
    decoder = decoder_for(loaded, lm, lexicon, beam, beam_options, search=sweep is not None)
    _, eval_ds, _ = build_datasets(cfg.data, cfg.train.seed, splits=("eval",))
    result = evaluate_loaded(
        loaded,
        eval_ds,
        torch_device,
        cfg.data,
        batch_size=batch_size,
        fold=score_fold(cfg.data),
        decoder=decoder,
        sweep=sweep,
        report_dir=report_dir,
        chunk_s=chunk_s,
    )
    return loaded.path, result
