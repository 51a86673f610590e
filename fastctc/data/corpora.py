"""Corpus selection and screening: `data.corpus` -> (train, eval) datasets and a report of what was left out.

    train_ds, eval_ds, report = build_datasets(cfg.data, seed, frames_of)

Readers (timit, librispeech, manifest) list utterances; the screen here normalises transcripts,
reads durations from headers (through the DurationCache) and leaves out what cannot train, each with
a reason counted in the report: missing or unreadable audio, empty transcripts, unusable sample
rates or channel layouts, training audio over data.max_duration_s (or crops it), and audio with too
few encoder frames for its receptive field or for its transcript under CTC.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence

from ..config import DataConfig
from . import synthetic
from .audio import resampled_length
from .dataset import CorpusError, InMemoryDataset, SpeechDataset, UtteranceInfo
from .duration_cache import DurationCache
from .fsdd import read_fsdd
from .librispeech import read_librispeech
from .manifest import read_manifest
from .phones import fold_map, to_phone_set
from .report import DataReport
from .text import normalise
from .timit import read_timit

READERS = {"timit": read_timit, "librispeech": read_librispeech, "manifest": read_manifest, "fsdd": read_fsdd}


def ctc_min_frames(labels: Sequence) -> int:
    """CTC needs one frame per label plus a blank between each pair of repeated labels
    (`labels`: a transcript's characters, or a list of phones)."""
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:]))


def _transcript(u: UtteranceInfo, split: str, cfg: DataConfig, fold, report: DataReport) -> tuple | None:
    """(text, the CTC labels collate builds from it), or None (counted in `report`) when there are none."""
    if fold is not None:  # space-separated labels, folded to data.phone_set (q dropped)
        labels, unknown = to_phone_set(u.text.split(), cfg.phone_set, fold)
        if unknown is not None:
            report.add(
                split,
                "unknown_phone",
                f"{u.id}: {unknown!r} is not a TIMIT phone label nor one of the {cfg.phone_set}-phone set ({u.path})",
            )
            return None
        text = " ".join(labels)
    else:
        text = normalise(u.text, cfg.chars_to_ignore, cfg.lowercase)
        labels = text + " " if cfg.trailing_delimiter else text
    if not text:
        report.add(split, "empty_transcript", f"{u.id} ({u.path})")
        return None
    return text, labels


def _samples(u: UtteranceInfo, split: str, cfg: DataConfig, cache: DurationCache, report: DataReport) -> int | None:
    """The audio's length in samples at data.sample_rate, or None (counted in `report`) when the file is
    missing, unreadable, or has a channel count or sample rate the config refuses."""
    if u.duration > 0:  # the manifest says; only check the file is there
        if not os.path.isfile(u.path):
            report.add(split, "missing_audio", u.path)
            return None
        return round(u.duration * cfg.sample_rate)
    try:
        info = cache.info(u.path)
    except FileNotFoundError:
        report.add(split, "missing_audio", u.path)
        return None
    except Exception as e:  # soundfile raises several types for a bad header; all mean the same here
        report.add(split, "unreadable", f"{u.path} ({type(e).__name__}: {e})")
        return None
    if info.channels > cfg.max_channels:
        report.add(split, "channels", f"{u.path} ({info.channels} channels)")
        return None
    if info.sample_rate != cfg.sample_rate and not cfg.resample:
        report.add(split, "sample_rate", f"{u.path} ({info.sample_rate} Hz)")
        return None
    return resampled_length(info.frames, info.sample_rate, cfg.sample_rate)


def _enough_frames(u: UtteranceInfo, samples: int, labels, split: str, report: DataReport, frames_of) -> bool:
    """Whether the encoder gives the audio any frame at all, and enough for its labels under CTC."""
    frames = frames_of(samples)
    if frames <= 0:
        report.add(split, "too_short", f"{u.path} ({samples} samples)")
        return False
    if frames < ctc_min_frames(labels):
        report.add(split, "ctc_infeasible", f"{u.id}: {frames} frames for {ctc_min_frames(labels)} labels")
        return False
    return True


def screen(
    utterances: Sequence[UtteranceInfo],
    split: str,
    cfg: DataConfig,
    cache: DurationCache | None,
    report: DataReport,
    frames_of: Callable[[int], int] | None,
    crop: bool,
) -> SpeechDataset:
    """The usable utterances of `utterances` as a dataset; everything else counted in `report`."""
    cap = cfg.max_duration_s if split == "train" else 0.0  # the recipe caps training audio only
    kept, texts, durations = [], [], []
    fold = fold_map(cfg.phone_set) if cfg.targets == "phones" else None
    for u in utterances:
        target = _transcript(u, split, cfg, fold, report)
        samples = None if target is None else _samples(u, split, cfg, cache, report)
        if samples is None:
            continue
        text, labels = target
        if cap and samples > cap * cfg.sample_rate:
            if not crop:
                report.add(split, "too_long", f"{u.path} ({samples / cfg.sample_rate:.1f} s)")
                continue
            report.add(split, "cropped", f"{u.path} ({samples / cfg.sample_rate:.1f} s)")
            samples = int(cap * cfg.sample_rate)
        if frames_of is not None and not _enough_frames(u, samples, labels, split, report, frames_of):
            continue
        kept.append(u)
        texts.append(text)
        durations.append(samples / cfg.sample_rate)
    return SpeechDataset(kept, texts, durations, cfg.sample_rate, max_seconds=cap, crop=crop)


def build_datasets(
    cfg: DataConfig,
    seed: int,
    frames_of: Callable[[int], int] | None = None,
    verbose: bool = True,
    splits: tuple[str, ...] = ("train", "eval"),
) -> tuple:
    """(train_ds, eval_ds, report); a split not in `splits` is None and never read (`fastctc eval` reads
    its eval split alone). `frames_of(samples)` is the encoder's frame count, for the receptive-field
    and CTC-length checks (None skips them). Raises CorpusError for a bad root/split."""
    report = DataReport()
    if cfg.corpus == "synthetic":  # generated, well-formed audio: nothing to screen
        made = []
        for name, size in (("train", cfg.synthetic_train_size), ("eval", cfg.synthetic_eval_size)):
            utts = synthetic.make_split(seed, name, size)
            made.append(
                InMemoryDataset(
                    [u.id for u in utts], [u.audio for u in utts], [u.text for u in utts], synthetic.SAMPLE_RATE
                )
            )
        return made[0], made[1], report
    if cfg.corpus not in READERS:
        raise ValueError(f"data.corpus: unknown corpus {cfg.corpus!r}")
    read = READERS[cfg.corpus]
    if cfg.corpus == "timit":
        read = functools.partial(read_timit, targets=cfg.targets)
    cache = DurationCache(cfg.cache_dir, cfg.root or os.getcwd())
    datasets = []
    for split, spec in (("train", cfg.train), ("eval", cfg.eval)):
        if split not in splits:
            datasets.append(None)
            continue
        listed = read(cfg.root, spec, report, split)
        ds = screen(listed, split, cfg, cache, report, frames_of, crop=cfg.long_utterances == "crop")
        cache.save()
        if len(ds) == 0:
            raise CorpusError(
                f"data.{split}: none of the {len(listed)} utterances listed for {spec!r} under "
                f"{cfg.root or '.'} is usable: {report.summary(split)}"
            )
        if verbose:
            print(
                f"fastctc data: {split} ({spec}): {len(ds)} utterances, {sum(ds.durations) / 3600:.2f} h; "
                f"{report.summary(split)}",
                file=sys.stderr,
                flush=True,
            )
        datasets.append(ds)
    return datasets[0], datasets[1], report
