"""The run's frozen-feature caches (fastctc.models.frozen_features): whether they are on, where they live,
and the one line that says so.

On only where they are exact: the conv stack is frozen, nothing changes the audio from one epoch to the
next ([augment] off), and padding cannot reach a row's valid conv frames or be read downstream. A layer-norm stack is
per-frame; a group-norm stack normalises conv layer 0 over the whole padded batch under the recipe's
convention, so there it must run with train.padding_invariant. w2v-BERT (FBANK_FAMILIES) has no conv stack, and
its parameter-free fbank front end is cheap next to the conformer: not cached. The training split's store serves the
steps, the evaluation split's training's evaluations (and so the choice of best/).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import RunConfig
from ..errors import ConfigError
from ..models.config import FBANK_FAMILIES, EncoderConfig
from ..models.frozen_features import TIERS, FrozenFeatureStore, frames_of

DEVICE_SHARE = 0.25  # of the device memory free once the model is on it: the step's activations need the rest
HOST_SHARE = 0.5  # of the host memory available, shared by the ranks on this machine
DISK_SHARE = 0.5  # of the run directory's free disk


def cache_off_reason(cfg: RunConfig, encoder: EncoderConfig, use_mask: bool) -> str | None:
    """Why this run's conv-stack outputs are not cached, or None when caching them is exact."""
    if cfg.train.feature_cache == "off":
        return "train.feature_cache = off"
    if encoder.model_type in FBANK_FAMILIES:
        return (
            f"{encoder.model_type} has no conv stack: its fbank front end has no parameters and costs little "
            "next to the encoder, so there is nothing worth caching"
        )
    if not cfg.model.freeze_feature_encoder:
        return "the conv stack trains (model.freeze_feature_encoder = false)"
    if cfg.augment.enabled:
        return "waveform augmentation on ([augment]): the audio, and so the conv stack's output, changes every epoch"
    if encoder.feat_extract_norm == "group" and not cfg.train.padding_invariant:
        return (
            "a group-norm conv stack normalises over the whole padded batch (the recipe's convention), so its "
            "output depends on the batch; train.padding_invariant = true makes caching it exact"
        )
    if not use_mask and not cfg.train.padding_invariant:
        return "the model reads padded frames as audio (no attention mask); train.padding_invariant = true masks them"
    return None


def check_feature_cache(cfg: RunConfig, encoder: EncoderConfig, use_mask: bool) -> None:
    """A tier asked for by name where caching would not be exact is a ConfigError (before any data is read)."""
    reason = cache_off_reason(cfg, encoder, use_mask)
    if cfg.train.feature_cache in TIERS and reason:
        raise ConfigError(
            f"train.feature_cache: {cfg.train.feature_cache} asked for, but caching is not exact here: {reason}; "
            "set train.feature_cache = auto (cache where exact) or off"
        )


def host_memory_available() -> int:
    """Bytes of host memory available (Linux MemAvailable, else the free pages)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def choose_tier(setting: str, nbytes: int, device: torch.device, out_dir: Path) -> str | None:
    """The tier `setting` names, or for auto the first that fits: the device, then (pinned) host memory,
    then the run directory's disk; None when none does."""
    if setting in TIERS:
        return setting
    if device.type == "cuda" and nbytes <= DEVICE_SHARE * torch.cuda.mem_get_info(device)[0]:
        return "device"
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # each rank keeps its own copy
    if nbytes * ranks_here <= HOST_SHARE * host_memory_available():
        return "device" if device.type == "cpu" else "host"
    if nbytes <= DISK_SHARE * shutil.disk_usage(out_dir).free:
        return "disk"
    return None


@dataclass
class FeatureCaches:
    train: FrozenFeatureStore
    eval: FrozenFeatureStore
    conv: Callable  # the conv stack the step runs on a batch not yet stored (compiled with the step)

    def describe(self) -> str:
        """The log line: what is cached, its size, its dtype and where it lives."""
        t, e = self.train, self.eval
        C, dtype = t.buffer.shape[1], str(t.dtype).removeprefix("torch.")
        where = {
            "device": f"on the device ({t.device})",
            "host": "in pinned host memory" if t.cuda else "in host memory",
            "disk": f"memory-mapped on disk under {t.path.parent} (unlinked once mapped: freed when the run ends)",
        }[t.tier]
        return (
            f"fastctc: frozen features computed once: {len(t.slot)} train + {len(e.slot)} eval utterances, "
            f"{t.frames + e.frames} frames x {C} channels {dtype} = {(t.nbytes + e.nbytes) / 1e9:.3g} GB, {where}"
        )


def build_feature_caches(run, train_ds, encoder: EncoderConfig) -> FeatureCaches | None:
    """The run's caches, or None (with the line that says why) where they would not be exact or fit."""
    cfg, device = run.cfg, run.device
    reason = cache_off_reason(cfg, encoder, run.use_mask)
    for ds in (train_ds, run.eval_ds):
        if reason is None and len(set(ds.ids)) < len(ds.ids):
            reason = "utterance ids repeat within a split, and the cache is keyed by id"
    dtype = run.precision.dtype or torch.float32
    sr = cfg.data.sample_rate
    samples = [[round(d * sr) for d in ds.durations] for ds in (train_ds, run.eval_ds)]
    rows = sum(int(frames_of(s, encoder).sum()) + len(s) + 1 for s in samples)
    nbytes = rows * encoder.conv_dim[-1] * dtype.itemsize
    tier = None if reason else choose_tier(cfg.train.feature_cache, nbytes, device, run.out_dir)
    if reason is None and tier is None:
        reason = f"{nbytes / 1e9:.3g} GB fits neither the device, host memory nor the run directory's disk"
    if reason:
        run.say(f"fastctc: frozen features not cached: {reason}")
        return None
    stores = []
    for split, ds, s in zip(("train", "eval"), (train_ds, run.eval_ds), samples):
        path = run.out_dir / "feature_cache" / f"{split}-rank{run.dist.rank}.bin"
        stores.append(FrozenFeatureStore(ds.ids, s, encoder, dtype, device, tier, path))
    if tier == "disk":  # its files are unlinked already: leave no empty folder behind (ranks race: try)
        try:
            (run.out_dir / "feature_cache").rmdir()
        except OSError:
            pass
    for ds, store in zip((train_ds, run.eval_ds), stores):
        if hasattr(ds, "stored"):  # files on disk: their loader reads a batch no more once it is stored
            ds.stored = store.known
    conv = torch.compile(run.model.conv_features) if run.compiled else run.model.conv_features
    caches = FeatureCaches(*stores, conv=conv)
    run.say(caches.describe())
    return caches
