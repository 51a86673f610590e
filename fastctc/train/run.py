"""A training run as data: `prepare_run` builds everything the loop needs into one `Run`.

The loop (loop.py) only reads a Run and advances its `RunState`; nothing it needs hides in a closure.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig, dump_config, load_config, resolve_encoder
from ..data.augment import Augmenter
from ..data.batching import SAMPLER_CLASSES, LengthBucketSampler, make_loader
from ..data.corpora import build_datasets
from ..data.phones import PhoneVocab
from ..data.text import CharVocab
from ..device import device_for
from ..errors import CheckpointError, ConfigError, TrainingError
from ..models import CTCModel, EncoderConfig, default_attention_mask, read_pretrained
from ..models.config import FINE_TUNING_FIELDS
from ..models.feature_encoder import frame_count
from ..models.hf_adapter import adapter_head_width, adapter_parameters
from ..models.hf_tokenizer import Preprocessing, read_preprocessing, read_vocab
from ..models.hf_weights import head_width, read_encoder_config
from .average import WeightAverage
from .checkpoint import load_average, load_checkpoint
from .distributed import DistInfo, init_distributed
from .feature_cache import FeatureCaches, build_feature_caches, check_feature_cache
from .optim import build_optimizer, build_schedule
from .precision import Precision, resolve_precision
from .progress import MetricsLog
from .recipe_streams import TrainerOrder
from .run_dir import changed_keys, check_new_run_dir, check_resume, refuse_changes


@dataclass
class RunState:
    """Where a run stands; a checkpoint saves and restores exactly this (plus weights and RNG)."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batch_in_epoch: int = 0  # this rank's batches of `epoch` already consumed (whole steps only)
    skipped: int = 0  # steps whose gradient was not finite (not applied)
    best_wer: float | None = None  # the best eval WER so far (PER for phone targets): best/ holds it
    best_source: str = "model"  # what best/ holds: "model", or "average" (the weight average's weights)
    best_step: int = 0  # the step best/ was evaluated at

    @classmethod
    def from_checkpoint(cls, meta: dict) -> RunState:
        return cls(**{f.name: meta[f.name] for f in dataclasses.fields(cls) if f.name in meta})


@dataclass
class Clock:
    """Wall-clock accounting the summary and metrics.jsonl report (seconds since `start`)."""

    start: float
    startup_s: float = 0.0  # process start to the first step (data listing, model load, resume)
    train_start: float = 0.0
    compile_s: float = 0.0  # steps during which dynamo compiled a graph
    eval_s: float = 0.0
    shapes: set = field(default_factory=set)

    def elapsed(self) -> float:
        return time.time() - self.start


@dataclass
class Run:
    cfg: RunConfig
    out_dir: Path
    dist: DistInfo
    device: torch.device
    precision: Precision
    model: CTCModel  # the plain module: evaluation, export and checkpoints read it
    step_model: torch.nn.Module  # what the step calls: the model, DDP-wrapped and/or compiled
    ddp: torch.nn.parallel.DistributedDataParallel | None
    compiled: bool
    vocab: CharVocab
    use_mask: bool  # the model sees an attention mask (and true lengths)
    sampler: LengthBucketSampler
    loader: object  # BatchLoader of the training split
    augment: Augmenter | None  # the training split's on-device augmentation ([augment]); None when off
    eval_ds: object
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    average: WeightAverage | None  # train.weight_average's (rank 0 only: it alone evaluates and saves)
    total_steps: int
    log: MetricsLog
    state: RunState
    clock: Clock
    features: FeatureCaches | None = None  # frozen conv-stack outputs, where caching them is exact

    @property
    def main(self) -> bool:
        return self.dist.is_main

    def say(self, *args, **kwargs) -> None:
        """print on rank 0 only."""
        if self.dist.is_main:
            print(*args, **kwargs, flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_model(cfg: RunConfig, say) -> tuple[RunConfig, EncoderConfig, Preprocessing]:
    """Before any data is read: the encoder's one description (the defaults or the checkpoint's
    config.json, then [model]; see config.resolve_encoder) and the checkpoint's preprocessing, whose
    do_normalize the run follows as the recipe does."""
    checkpoint = cfg.model.checkpoint
    encoder = resolve_encoder(cfg.model, read_encoder_config(checkpoint) if checkpoint else None)
    pre = read_preprocessing(checkpoint) if checkpoint else Preprocessing()
    if pre.do_normalize is not None and pre.do_normalize != cfg.data.do_normalize:
        say(
            f"fastctc: the checkpoint's preprocessor_config.json says do_normalize={str(pre.do_normalize).lower()}; "
            f"using it instead of data.do_normalize={str(cfg.data.do_normalize).lower()}"
        )
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, do_normalize=pre.do_normalize))
    return cfg, encoder, pre


def head_misfit(checkpoint: str, vocab: CharVocab | PhoneVocab, adapter_language: str = "") -> str | None:
    """Why the checkpoint's CTC head (or its language adapter's) cannot serve `vocab` (another width, or its
    ids name other tokens); None when it fits or there is none (a pretraining checkpoint)."""
    width = adapter_head_width(checkpoint, adapter_language) if adapter_language else head_width(checkpoint)
    if width is None:
        return None
    if width != len(vocab):
        return f"its CTC head has {width} outputs, the run's vocabulary {len(vocab)} tokens"
    try:
        theirs = read_vocab(checkpoint)
    except ValueError:  # a tokenizer we cannot read: only the width can tell, and it matches
        theirs = None
    # an MMS checkpoint's vocab.json nests one vocabulary per language: its heads' ids cannot be matched
    if theirs is None and (adapter_language or read_encoder_config(checkpoint).adapter_attn_dim is not None):
        head = f"adapter.{adapter_language}'s head" if adapter_language else "its CTC head"
        return f"the ids of {head} cannot be matched to the run's vocabulary (its tokenizer is not one fastctc reads)"
    if theirs is not None and theirs.tokens != list(vocab.tokens):
        return f"its CTC head's {width} outputs are other tokens than the run's vocabulary"
    return None


def build_model(cfg: RunConfig, encoder: EncoderConfig, vocab: CharVocab | PhoneVocab, say=print) -> CTCModel:
    """The checkpoint's weights (a fresh CTC head unless its own fits `vocab`), or a from-scratch encoder."""
    checkpoint = cfg.model.checkpoint
    if not checkpoint:
        return CTCModel(dataclasses.replace(encoder, vocab_size=len(vocab), pad_token_id=vocab.blank))
    language = cfg.model.adapter_language
    misfit = head_misfit(checkpoint, vocab, language)
    if misfit is not None:
        say(f"fastctc: starting a fresh CTC head: {misfit} ({checkpoint})")
    tuned = {k: getattr(encoder, k) for k in FINE_TUNING_FIELDS}
    # resolve_encoder lets adapter_attn_dim differ from config.json's only to add fresh adapters
    tuned["adapter_attn_dim"] = encoder.adapter_attn_dim
    return read_pretrained(
        checkpoint,
        vocab_size=len(vocab),
        overrides={**tuned, "pad_token_id": vocab.blank},
        fresh_head=misfit is not None,
        adapter_language=language or None,
    ).model


def uses_attention_mask(cfg: RunConfig, encoder: EncoderConfig, pre: Preprocessing) -> bool:
    if cfg.model.attention_mask != "auto":
        return cfg.model.attention_mask == "on"
    if pre.return_attention_mask is not None:  # the checkpoint's feature extractor decides, as in the recipe
        return pre.return_attention_mask
    return default_attention_mask(encoder)


def run_vocabulary(cfg: RunConfig, texts: list[str], say) -> CharVocab:
    """The recipe's vocabulary of the train + eval transcripts, or the checkpoint's own when it has one.
    Phone targets: the phone set + blank, fixed, so every run on a set has the same ids."""
    if cfg.data.targets == "phones":
        return PhoneVocab.for_set(cfg.data.phone_set)
    vocab = CharVocab.from_transcripts(texts, delimiter=cfg.data.trailing_delimiter, bos_eos=cfg.model.bos_eos_tokens)
    if cfg.model.checkpoint:
        try:  # a checkpoint fine-tuned by fastctc (or the recipe) keeps the ids its head was trained on
            theirs = read_vocab(cfg.model.checkpoint)
            vocab = CharVocab(theirs.tokens) if theirs is not None else vocab
        except ValueError as e:  # another tokenizer's vocabulary: build ours, the head must then be fresh
            say(
                f"fastctc: not reusing {cfg.model.checkpoint}'s vocabulary ({e}); vocabulary built from the transcripts"
            )
    return vocab


def prepare_model(
    cfg: RunConfig,
    encoder: EncoderConfig,
    vocab: CharVocab | PhoneVocab,
    device: torch.device,
    dist: DistInfo,
    say=print,
) -> CTCModel:
    model = build_model(cfg, encoder, vocab, say).to(device)
    if dist.enabled:  # same initial weights everywhere; then each rank draws its own dropout and masks
        torch.manual_seed(cfg.train.seed + dist.rank)
    if cfg.model.freeze_feature_encoder:
        model.freeze_feature_encoder()
    if not (model.config.apply_spec_augment and model.config.mask_time_prob > 0):
        model.masked_spec_embed.requires_grad_(False)  # never used, so DDP must not wait for its gradient
    if cfg.model.train_only == "adapters":  # run_speech_recognition_ctc_adapter.py's freeze_base_model
        trainable = {id(p) for p in adapter_parameters(model).values()}
        for p in model.parameters():
            p.requires_grad_(id(p) in trainable)
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        say(f"fastctc: model.train_only = adapters: {n / 1e6:.2f} M parameters learn (the adapters and the CTC head)")
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing(True)
    return model


def wrap_model(cfg: RunConfig, model: CTCModel, dist: DistInfo, device: torch.device):
    """(step_model, ddp, compiled): DDP under torchrun, then torch.compile when asked (or on CUDA by default)."""
    ddp = None
    step_model = model
    if dist.enabled:
        step_model = ddp = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=model.config.layerdrop > 0 or cfg.train.freeze_finetune_steps > 0,
        )  # a dropped layer, or the encoder while frozen, leaves its parameters without gradient
    compiled = cfg.train.compile == "on" or (cfg.train.compile == "auto" and device.type == "cuda")
    if compiled:  # compiling the DDP module lets dynamo split graphs at gradient-bucket boundaries
        step_model = torch.compile(step_model)
    return step_model, ddp, compiled


def build_augmenter(cfg: RunConfig, encoder: EncoderConfig, device: torch.device, dist: DistInfo, report, say):
    """The training split's Augmenter, its noise and impulse-response files read here, once; None when off."""
    if not cfg.augment.enabled:
        return None
    augment = Augmenter(
        cfg.augment, encoder, cfg.data.sample_rate, cfg.data.do_normalize, device, cfg.train.seed, dist.rank, report
    )
    say(f"fastctc: {augment.describe()}", flush=True)
    return augment


def build_average(cfg: RunConfig, model: CTCModel, dist: DistInfo, checkpoint: Path | None) -> WeightAverage | None:
    """train.weight_average's average on rank 0 (the one that evaluates and saves), from the model's
    weights as they stand (restored, on a resume), then the checkpoint's average when resuming."""
    t = cfg.train
    if t.weight_average == "off" or not dist.is_main:
        return None
    average = WeightAverage(model, t.weight_average, t.ema_decay, t.average_period)
    if checkpoint is not None:
        saved = load_average(checkpoint)
        try:
            average.load_state_dict(saved)
        except ValueError as e:  # names from another model (the run's config.toml edited by hand)
            raise CheckpointError(f"{checkpoint}: {e}; resume with the run's own config.toml") from None
    return average


def say_if_only_the_head_learns(cfg: RunConfig, total: int, say) -> None:
    """One line when train.freeze_finetune_steps covers the whole run."""
    if cfg.train.freeze_finetune_steps >= total:
        say(
            f"fastctc: train.freeze_finetune_steps={cfg.train.freeze_finetune_steps} covers all {total} steps: "
            "only the CTC head will learn"
        )


def _silent(*args, **kwargs) -> None:
    """`say` on every rank but 0."""


def check_run_dir(cfg: RunConfig, encoder: EncoderConfig, out_dir: Path, resume: bool, dist: DistInfo) -> None:
    """Before any data is read: a resume must find its checkpoint and keep what its config.toml ran with;
    a new run must not write into another run's directory."""
    if resume:
        check_resume(out_dir)
        if (out_dir / "config.toml").is_file():  # the model, batch or schedule it was run with
            saved, saved_encoder, _ = resolve_model(load_config(out_dir / "config.toml"), _silent)
            refuse_changes(out_dir, changed_keys(saved, saved_encoder, cfg, encoder))
    elif dist.is_main:
        check_new_run_dir(out_dir)


def prepare_process(cfg: RunConfig, dist: DistInfo) -> tuple[torch.device, Precision]:
    """This process's threads, device and precision; the seeds set."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = device_for(cfg.train.device, dist.local_rank if dist.enabled else None, setting="train.device")
    precision = resolve_precision(cfg.train.precision, device)
    seed_everything(cfg.train.seed)
    return device, precision


def prepare_data(cfg: RunConfig, encoder: EncoderConfig, dist: DistInfo, say):
    """(train split, eval split, data report)."""
    say(f"fastctc: preparing data (corpus {cfg.data.corpus})", flush=True)
    # the encoder's frames per utterance screen out audio too short for its transcript
    return build_datasets(cfg.data, cfg.train.seed, lambda n: frame_count(n, encoder), verbose=dist.is_main)


def describe_start(
    train_ds, eval_ds, vocab, model: CTCModel, device, dist: DistInfo, precision, use_mask, clock
) -> str:
    """The start-up line: the splits, vocabulary, model size, device, precision and attention mask."""
    return (
        f"fastctc: {len(train_ds)} train ({sum(train_ds.durations) / 3600:.2f} h) / {len(eval_ds)} eval utterances, "
        f"vocab {len(vocab)}, model {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
        f"device {device} x {dist.world_size}, precision {precision.name}, attention mask {'on' if use_mask else 'off'} "
        f"({time.time() - clock.start:.1f} s)"
    )


def build_loader(cfg: RunConfig, encoder: EncoderConfig, train_ds, vocab, dist: DistInfo, device, report):
    """(sampler, loader) of the training split: [data].sampler's batches in the encoder's frames, whole
    accumulated steps per rank; with train.random_streams = recipe, in the Trainer's order for the seed."""
    sampler = SAMPLER_CLASSES[cfg.data.sampler](
        train_ds.durations,
        cfg.train.seed,
        cfg.train.batch_size,
        cfg.data.batch_seconds,
        cfg.data.pad_lengths,
        rank=dist.rank,
        world_size=dist.world_size,
        accum=cfg.train.grad_accum,
        frame=encoder.frame_stride,
    )
    if cfg.train.random_streams == "recipe" and dist.enabled:
        raise ConfigError(
            "train.random_streams: recipe replays the single-process Trainer's draws (under torchrun its "
            "DistributedLengthGroupedSampler draws another way); run one process or set random_streams = own"
        )
    if cfg.train.random_streams == "recipe" and cfg.data.sampler == "group_by_length":
        t = cfg.train
        sampler.permutation = TrainerOrder(
            seed=t.seed,
            n=len(sampler.lengths),
            batches_per_epoch=len(sampler),
            steps_per_epoch=len(sampler),  # one batch per step (config: grad_accum 1)
            total_steps=count_steps(cfg, sampler),
            eval_every=t.eval_every,
            layer_draws=encoder.num_hidden_layers if encoder.layerdrop > 0 else 0,
        ).permutation
    loader = make_loader(train_ds, sampler, vocab, cfg.data, pin_memory=device.type == "cuda", report=report)
    loader.keep_empty = dist.enabled  # the step stands in for a rank's empty batch (steps.py)
    return sampler, loader


def count_steps(cfg: RunConfig, sampler: LengthBucketSampler) -> int:
    """The run's optimizer steps: train.epochs of whole accumulated steps, at most train.max_steps."""
    accum = cfg.train.grad_accum
    steps_per_epoch = len(sampler) // accum
    if steps_per_epoch == 0:
        raise ConfigError(f"train.grad_accum: {accum} exceeds the {len(sampler)} batches of an epoch; lower it")
    total = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps)
    return total


def resume_state(out_dir: Path, model, optimizer, schedule, scaler, dist: DistInfo, augment, say) -> RunState:
    """The checkpoint in `out_dir` restored into the model, optimizer, schedule, scaler and augmentation RNG."""
    meta = load_checkpoint(
        out_dir / "checkpoint",
        model,
        optimizer,
        schedule,
        scaler,
        rank=dist.rank,
        world_size=dist.world_size,
        generators=augment.generators() if augment is not None else None,
    )
    state = RunState.from_checkpoint(meta)
    say(f"fastctc: resumed from {out_dir / 'checkpoint'} at step {state.step}", flush=True)
    return state


def open_run_dir(cfg: RunConfig, out_dir: Path, dist: DistInfo) -> MetricsLog:
    """Written last, once the start has succeeded: config.toml and metrics.jsonl."""
    try:
        if dist.is_main:
            (out_dir / "config.toml").write_text(dump_config(cfg))
        return MetricsLog(out_dir / "metrics.jsonl", enabled=dist.is_main)
    except OSError as e:
        raise TrainingError(
            f"run directory {out_dir}: cannot write {e.filename or 'config.toml'} ({e.strerror})"
        ) from None


def prepare_run(cfg: RunConfig, out_dir: Path, resume: bool = False) -> Run:
    """Everything a run needs, from the config: process group, data, vocabulary, model, optimizer, schedule,
    loaders, the frozen-feature caches, and (with `resume`) the state of the checkpoint in `out_dir`. The run
    directory is checked first (run_dir.py) and written last: config.toml and metrics.jsonl appear only once
    the start has succeeded."""
    clock = Clock(start=time.time())
    dist = init_distributed(cfg.train.device)
    say = print if dist.is_main else _silent
    cfg, encoder, preprocessing = resolve_model(cfg, say)
    use_mask = uses_attention_mask(cfg, encoder, preprocessing)
    check_feature_cache(cfg, encoder, use_mask)
    check_run_dir(cfg, encoder, out_dir, resume, dist)
    device, precision = prepare_process(cfg, dist)

    train_ds, eval_ds, data_report = prepare_data(cfg, encoder, dist, say)
    vocab = run_vocabulary(cfg, train_ds.texts + eval_ds.texts, say)  # train + eval, as the recipe
    model = prepare_model(cfg, encoder, vocab, device, dist, say)
    say(describe_start(train_ds, eval_ds, vocab, model, device, dist, precision, use_mask, clock), flush=True)

    sampler, loader = build_loader(cfg, encoder, train_ds, vocab, dist, device, data_report)
    total = count_steps(cfg, sampler)
    optimizer = build_optimizer(model, cfg.optim, device)
    schedule = build_schedule(optimizer, cfg.optim, total)
    scaler = precision.grad_scaler()
    augment = build_augmenter(cfg, encoder, device, dist, data_report, say)
    say_if_only_the_head_learns(cfg, total, say)

    state = RunState()
    if resume:
        state = resume_state(out_dir, model, optimizer, schedule, scaler, dist, augment, say)
    average = build_average(cfg, model, dist, out_dir / "checkpoint" if resume else None)
    step_model, ddp, compiled = wrap_model(cfg, model, dist, device)
    log = open_run_dir(cfg, out_dir, dist)
    run = Run(
        cfg=cfg,
        out_dir=out_dir,
        dist=dist,
        device=device,
        precision=precision,
        model=model,
        step_model=step_model,
        ddp=ddp,
        compiled=compiled,
        vocab=vocab,
        use_mask=use_mask,
        sampler=sampler,
        loader=loader,
        augment=augment,
        eval_ds=eval_ds,
        optimizer=optimizer,
        schedule=schedule,
        scaler=scaler,
        average=average,
        total_steps=total,
        log=log,
        state=state,
        clock=clock,
    )
    run.features = build_feature_caches(run, train_ds, encoder)
    return run
