"""The run directory: whether a run may start or resume in it, and what to say when a run stops.

    config.toml  metrics.jsonl  checkpoint/  best/  model/  report/  tensorboard/

A new run needs a directory that is empty or absent and writable; a resume needs a complete checkpoint
(`find_checkpoint`) and the run's own settings. Both are decided here, before any data is read, and a
run writes its files only once its start has succeeded, so a failed start leaves nothing that would
refuse the same directory next time.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path

from ..config import RunConfig
from ..errors import CheckpointError, TrainingError
from ..models.config import EncoderConfig
from .checkpoint import find_checkpoint, read_state

# Keys a resume may change: they decide what is logged, evaluated or saved, and how files are read,
# never what a training step computes. Any other change (the model, the batch, the schedule, the seed,
# the precision, the device) would make the resumed run differ from the uninterrupted one.
RESUMABLE = (
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.eval_batch_size",
    "data.num_workers",
    "data.prefetch_factor",
    "data.cache_dir",
)


def resume_command(out_dir: Path) -> str:
    return " ".join(
        shlex.quote(a) for a in ["fastctc", "train", str(out_dir / "config.toml"), "--resume", str(out_dir)]
    )


def check_new_run_dir(out_dir: Path) -> None:
    """A new run's directory: absent or empty, and writable (created here)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise TrainingError(f"run directory {out_dir} is a file; choose another with --out")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise TrainingError(
            f"run directory {out_dir} already holds files; choose another with --out, "
            f"or continue it with --resume {out_dir}"
        )
    make_writable_dir(out_dir)


def make_writable_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainingError(
            f"run directory {out_dir} cannot be created ({e.strerror}); choose another with --out"
        ) from None
    if not os.access(out_dir, os.W_OK):  # a read-only file system or bind mount, or no permission
        raise TrainingError(
            f"run directory {out_dir} is not writable (read-only file system or no permission); "
            "choose another with --out"
        )


def check_resume(out_dir: Path) -> None:
    """`--resume out_dir` needs a complete checkpoint there, and a writable directory to continue in."""
    if find_checkpoint(out_dir / "checkpoint") is None:
        raise CheckpointError(f"--resume {out_dir}: no checkpoint there (expected {out_dir / 'checkpoint'})")
    make_writable_dir(out_dir)


def changed_keys(saved: RunConfig, saved_encoder: EncoderConfig, cfg: RunConfig, encoder: EncoderConfig) -> list[str]:
    """The keys whose value differs between the run's config.toml and this resume's config, outside
    RESUMABLE, as "key = new (the run's old)". [model]'s encoder keys compare as resolved, so a key set to
    its default reads the same as a key left out."""
    differ = []

    def compare(key, old, new):
        if old != new and key not in RESUMABLE:
            differ.append(f"{key} = {new!r} (the run's {old!r})")

    for f in dataclasses.fields(EncoderConfig):
        compare(f"model.{f.name}", getattr(saved_encoder, f.name), getattr(encoder, f.name))
    for section in dataclasses.fields(RunConfig):
        old_section, new_section = getattr(saved, section.name), getattr(cfg, section.name)
        for f in dataclasses.fields(old_section):
            if not (section.name == "model" and f.name == "encoder"):
                compare(f"{section.name}.{f.name}", getattr(old_section, f.name), getattr(new_section, f.name))
    return differ


def refuse_changes(out_dir: Path, differ: list[str]) -> None:
    if differ:
        raise TrainingError(
            f"--resume {out_dir}: {', '.join(differ)} differs from {out_dir / 'config.toml'}; a resume "
            "continues the run exactly as configured (only " + ", ".join(RESUMABLE) + " may change): "
            f"drop the change ({resume_command(out_dir)}) or start a new run with --out"
        )


def intact(out_dir: Path) -> str:
    """What a run that ends on an error leaves to resume from, and the command."""
    try:
        step = read_state(out_dir / "checkpoint")["step"]
    except (OSError, ValueError, KeyError):
        return "no checkpoint was saved, so start the run again"
    return f"checkpoint/ (step {step}) is intact; resume with: {resume_command(out_dir)}"
