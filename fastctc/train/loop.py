"""The training loop: one readable function, `train`, plus the small pieces it calls."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fastctc.kernels import ctc_loss

from ..config import RunConfig, dump_config
from ..data.batching import Batch, LengthBucketSampler, make_loader
from ..data.corpora import build_datasets, encoder_frames
from ..data.text import CharVocab
from ..models import CTCModel, EncoderConfig, load_pretrained
from .checkpoint import find_checkpoint, load_checkpoint, rng_state, save_checkpoint
from .distributed import DistInfo, all_reduce_sum, barrier, device_for, init_distributed, shutdown
from .evaluate import evaluate
from .optim import build_optimizer, linear_schedule
from .precision import resolve_precision


class MetricsLog:
    """metrics.jsonl (one JSON object per log or eval event), mirrored to TensorBoard when installed.
    Only rank 0 writes; on other ranks every call is a no-op."""

    def __init__(self, path: Path, enabled: bool = True):
        self.file = open(path, "a", encoding="utf-8") if enabled else None
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(path.parent / "tensorboard"))
            except Exception:  # tensorboard is optional
                self.tb = None

    def write(self, event: str, **values) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps({"event": event, "time": round(time.time(), 3), **values}) + "\n")
        self.file.flush()
        if self.tb is not None and "step" in values:
            for k, v in values.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{event}/{k}", v, values["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ModelConfig keys that shape a from-scratch encoder; the rest are fine-tuning knobs that also
# override a checkpoint's config.json (dropouts, layerdrop, SpecAugment), as the recipe does.
_SIZE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "conv_dim",
              "conv_kernel", "conv_stride", "conv_bias", "feat_extract_norm", "do_stable_layer_norm",
              "num_conv_pos_embeddings", "num_conv_pos_embedding_groups")
_TRAINING_KEYS = ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout",
                  "final_dropout", "layerdrop", "mask_time_prob", "mask_time_length", "mask_time_min_masks")


def build_model(cfg: RunConfig, vocab: CharVocab) -> CTCModel:
    """A pretrained checkpoint with a CTC head for `vocab`, or a from-scratch encoder of the [model] sizes."""
    m = cfg.model
    knobs = {k: getattr(m, k) for k in _TRAINING_KEYS}
    if m.checkpoint:
        return load_pretrained(m.checkpoint, vocab_size=len(vocab), overrides={**knobs, "pad_token_id": vocab.blank})
    sizes = {k: getattr(m, k) for k in _SIZE_KEYS}
    return CTCModel(EncoderConfig(vocab_size=len(vocab), pad_token_id=vocab.blank, **sizes, **knobs))


def format_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class StopRequest:
    """Ctrl-C (SIGINT) asks the loop to stop at the next step boundary and save; a second Ctrl-C
    interrupts at once. `stop_at_step` makes tests stop the same way at a given step."""

    def __init__(self, stop_at_step: int | None = None):
        self.requested, self.stop_at_step = False, stop_at_step

    @contextlib.contextmanager
    def installed(self):
        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            print("\nfastctc: Ctrl-C: saving a checkpoint at the end of this step (Ctrl-C again to abort)",
                  file=sys.stderr, flush=True)

        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    def should_stop(self, step: int, dist: DistInfo, device: torch.device) -> bool:
        stop = self.requested or (self.stop_at_step is not None and step >= self.stop_at_step)
        if dist.enabled:  # every rank stops at the same step
            flag = all_reduce_sum(torch.tensor([float(stop)], device=device), dist)
            stop = bool(flag.item() > 0)  # host sync, once per step and only under DDP
        return stop


def stand_in_batch(sample_rate: int) -> Batch:
    return Batch(torch.zeros(1, sample_rate), torch.tensor([sample_rate]), torch.zeros(1, 1, dtype=torch.long),
                 torch.zeros(1, dtype=torch.long), [])


def checkpoint_preprocessor(cfg: RunConfig) -> dict:
    """The checkpoint's preprocessor_config.json (its feature extractor's settings), or {}."""
    path = Path(cfg.model.checkpoint) / "preprocessor_config.json" if cfg.model.checkpoint else None
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path}: not valid JSON ({e}); fix or delete it (fastctc then uses the config's values)")


def follow_checkpoint_normalisation(cfg: RunConfig, pre: dict, say) -> RunConfig:
    """The recipe normalises audio as the checkpoint's feature extractor says (do_normalize)."""
    if "do_normalize" in pre and bool(pre["do_normalize"]) != cfg.data.do_normalize:
        say(f"fastctc: the checkpoint's preprocessor_config.json says do_normalize={str(pre['do_normalize']).lower()}; "
            f"using it instead of data.do_normalize={str(cfg.data.do_normalize).lower()}")
        return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, do_normalize=bool(pre["do_normalize"])))
    return cfg


def uses_attention_mask(cfg: RunConfig, model: CTCModel, pre: dict) -> bool:
    if cfg.model.attention_mask != "auto":
        return cfg.model.attention_mask == "on"
    if "return_attention_mask" in pre:  # the checkpoint's feature extractor decides, as in the recipe
        return bool(pre["return_attention_mask"])
    return model.config.feat_extract_norm == "layer"  # what the released checkpoints' preprocessors say


def save_export(model: CTCModel, vocab: CharVocab, directory: Path, do_normalize: bool, attention_mask: bool) -> None:
    """A Transformers-format model, written under a temporary name and swapped in."""
    tmp = directory.parent / f"{directory.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, vocab.tokens, do_normalize=do_normalize, return_attention_mask=attention_mask)
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def train(cfg: RunConfig, out_dir: Path, resume: bool = False, stop_at_step: int | None = None) -> dict:
    """Train per `cfg` in run directory `out_dir`; `resume` continues the checkpoint found there.

    Writes config.toml, metrics.jsonl, checkpoint/ (resumable state), best/ (best eval WER) and
    model/ (the final model), the last two as Transformers-format checkpoints that load with
    fastctc.models.load_pretrained and with transformers' AutoModelForCTC / Wav2Vec2Processor.
    Returns the final evaluation (wer, cer, loss; {} on ranks other than 0), or {"stopped": step} when
    stopped early.
    """
    t_start = time.time()
    dist = init_distributed(cfg.train.device)
    main = dist.is_main
    say = print if main else (lambda *a, **k: None)
    preprocessor = checkpoint_preprocessor(cfg)
    cfg = follow_checkpoint_normalisation(cfg, preprocessor, say)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.toml").write_text(dump_config(cfg))
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = device_for(dist, cfg.train.device)
    precision = resolve_precision(cfg.train.precision, device)
    seed_everything(cfg.train.seed)

    say(f"fastctc: preparing data (corpus {cfg.data.corpus})", flush=True)
    # frames per utterance screen out audio too short for its transcript; the [model] conv stack
    # (its defaults are every card's) stands in for a checkpoint's
    train_ds, eval_ds, data_report = build_datasets(
        cfg.data, cfg.train.seed, lambda n: encoder_frames(n, cfg.model.conv_kernel, cfg.model.conv_stride),
        verbose=main)
    vocab = CharVocab.from_transcripts(train_ds.texts + eval_ds.texts)  # train + eval, as the recipe
    checkpoint_vocab = Path(cfg.model.checkpoint) / "vocab.json" if cfg.model.checkpoint else None
    if checkpoint_vocab is not None and checkpoint_vocab.is_file():
        try:  # a checkpoint fine-tuned by fastctc keeps the ids its head was trained on
            vocab = CharVocab.load(checkpoint_vocab)
        except ValueError as e:  # another tokenizer's vocabulary: build ours, the head must then be fresh
            say(f"fastctc: not reusing {checkpoint_vocab} ({e}); vocabulary built from the transcripts")
    model = build_model(cfg, vocab).to(device)
    if dist.enabled:  # same initial weights everywhere; then each rank draws its own dropout and masks
        torch.manual_seed(cfg.train.seed + dist.rank)
    if cfg.model.freeze_feature_encoder:
        model.freeze_feature_encoder()
    if not (model.config.apply_spec_augment and model.config.mask_time_prob > 0):
        model.masked_spec_embed.requires_grad_(False)  # never used, so DDP must not wait for its gradient
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing(True)
    use_mask = uses_attention_mask(cfg, model, preprocessor)
    n_params = sum(p.numel() for p in model.parameters())
    audio_h = sum(train_ds.durations) / 3600
    say(f"fastctc: {len(train_ds)} train ({audio_h:.2f} h) / {len(eval_ds)} eval utterances, "
        f"vocab {len(vocab)}, model {n_params / 1e6:.2f} M parameters, device {device} x {dist.world_size}, "
        f"precision {precision.name}, attention mask {'on' if use_mask else 'off'} "
        f"({time.time() - t_start:.1f} s)", flush=True)

    sampler = LengthBucketSampler(train_ds.durations, cfg.train.seed, cfg.train.batch_size, cfg.data.batch_seconds,
                                  cfg.data.pad_lengths, rank=dist.rank, world_size=dist.world_size,
                                  accum=cfg.train.grad_accum)
    loader = make_loader(train_ds, sampler, vocab, cfg.data, pin_memory=device.type == "cuda", report=data_report)
    loader.keep_empty = dist.enabled  # see the stand-in batch below
    accum = cfg.train.grad_accum
    steps_per_epoch = len(sampler) // accum
    if steps_per_epoch == 0:
        raise SystemExit(f"train.grad_accum={accum} exceeds the {len(sampler)} batches of an epoch")
    total = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps)
    optimizer = build_optimizer(model.parameters(), cfg.optim, device)
    schedule = linear_schedule(optimizer, cfg.optim.warmup_steps, total)
    scaler = precision.grad_scaler()

    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "skipped": 0, "best_wer": None}
    if resume:
        if find_checkpoint(out_dir / "checkpoint") is None:
            raise SystemExit(f"--resume {out_dir}: no checkpoint/ there to resume from")
        state = load_checkpoint(out_dir / "checkpoint", model, optimizer, schedule, scaler, rank=dist.rank)
        say(f"fastctc: resumed from {out_dir / 'checkpoint'} at step {state['step']}", flush=True)

    compile_on = cfg.train.compile == "on" or (cfg.train.compile == "auto" and device.type == "cuda")
    step_model = ddp = None
    if dist.enabled:
        step_model = ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.model.layerdrop > 0)  # a dropped layer leaves its parameters unused
    step_model = step_model or model
    if compile_on:  # compiling the DDP module lets dynamo split graphs at gradient-bucket boundaries
        step_model = torch.compile(step_model)
    log = MetricsLog(out_dir / "metrics.jsonl", enabled=main)
    stop = StopRequest(stop_at_step)

    def run_eval(step: int, final: bool = False) -> dict:
        """Rank 0 alone evaluates; the other ranks go on and wait for it at the next collective."""
        if not main:
            return {}
        result = evaluate(model, eval_ds, vocab, cfg.train.eval_batch_size, device, use_lengths=use_mask,
                          data=cfg.data)
        tag = "final eval" if final else f"eval step {step}"
        say(f"{tag} ({len(eval_ds)} utterances) | loss {result['loss']:.4f} | WER {result['wer']:.4f} | "
            f"CER {result['cer']:.4f}", flush=True)
        log.write("eval", step=step, loss=result["loss"], wer=result["wer"], cer=result["cer"],
                  **({"final": True, "elapsed_s": time.time() - t_start} if final else {}))
        if state["best_wer"] is None or result["wer"] < state["best_wer"]:
            state["best_wer"] = result["wer"]
            save_export(model, vocab, out_dir / "best", cfg.data.do_normalize, use_mask)
        return result

    def checkpoint() -> None:
        rng_states = None
        if dist.enabled:  # each rank's own dropout / SpecAugment streams, so a resume is exact on every rank
            rng_states = [None] * dist.world_size
            torch.distributed.all_gather_object(rng_states, rng_state())
        if main:
            save_checkpoint(out_dir / "checkpoint", model, optimizer, schedule, scaler, state, rng_states)
        barrier(dist)

    # progress window
    win = {"loss": 0.0, "n": 0, "utts": 0, "audio_s": 0.0, "t0": time.time(), "steps0": state["step"]}
    shapes, compile_s, train_t0 = set(), 0.0, time.time()
    model.train()
    with stop.installed():
        while state["step"] < total:
            sampler.set_epoch(state["epoch"], start=state["batch_in_epoch"] // accum)  # saved at step boundaries
            micro = 0
            for batch in loader:
                if micro == 0:
                    t_step = time.time()
                    new_shape = tuple(batch.waveforms.shape) not in shapes
                    shapes.add(tuple(batch.waveforms.shape))
                weight = 1.0
                if not batch.texts:
                    # Under DDP a rank whose every file failed to load still takes part in the step's
                    # all-reduce: one second of silence with an empty target, its loss weighted 0.
                    batch, weight = stand_in_batch(cfg.data.sample_rate), 0.0
                waves = batch.waveforms.to(device, non_blocking=True)
                lengths = batch.lengths.to(device, non_blocking=True)
                # under DDP, gradients are all-reduced only on the last micro-batch of a step
                sync = ddp.no_sync() if ddp is not None and micro < accum - 1 else contextlib.nullcontext()
                with sync:
                    with precision.autocast():
                        logits, logit_lengths = step_model(waves, lengths if use_mask else None)
                    if not use_mask and cfg.train.ctc_true_lengths:
                        logit_lengths = model.feature_extractor.output_lengths(lengths).clamp(max=logits.shape[1])
                    loss = ctc_loss(logits, batch.targets.to(device), logit_lengths, batch.target_lengths.to(device),
                                    blank=vocab.blank, reduction="mean", zero_infinity=True)
                    scaler.scale(loss * (weight / accum)).backward()
                win["loss"] += weight * float(loss.detach())  # host sync; the loss is logged every step's window
                win["utts"] += len(batch.texts)
                win["audio_s"] += weight * float(batch.lengths.sum()) / cfg.data.sample_rate
                state["batch_in_epoch"] += 1
                micro += 1
                if micro < accum:
                    continue
                micro = 0

                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                if precision.name == "fp16":
                    scale_before = scaler.get_scale()
                    scaler.step(optimizer)  # skips the update when a gradient is inf/NaN
                    scaler.update()
                    finite = scaler.get_scale() >= scale_before
                else:
                    # gradients are all-reduced, so every rank sees the same norm and skips together;
                    # a non-finite loss gives non-finite gradients, so this also catches it
                    finite = bool(torch.isfinite(grad_norm))  # host sync, once per step
                    if finite:
                        optimizer.step()
                if not finite:
                    state["skipped"] += 1
                    log.write("skip", step=state["step"] + 1, grad_norm=float(grad_norm))
                optimizer.zero_grad(set_to_none=True)
                schedule.step()
                state["step"] += 1
                win["n"] += 1
                step = state["step"]
                if new_shape and compile_on:
                    compile_s += time.time() - t_step

                if step % cfg.train.log_every == 0 or step == total:
                    now = time.time()
                    dt = max(now - win["t0"], 1e-9)
                    eta = (total - step) * (now - train_t0 - compile_s) / max(1, step - win["steps0"]) \
                        if step > win["steps0"] else 0.0
                    lr = schedule.get_last_lr()[0]
                    loss_sum = win["loss"]
                    if dist.enabled:  # the global batch's loss: every rank's mean over equal-sized shares
                        loss_sum = float(all_reduce_sum(torch.tensor([loss_sum], device=device), dist)) / dist.world_size
                    mean_loss = loss_sum / max(1, win["n"] * accum)
                    mem = f" | mem {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else ""
                    say(f"step {step}/{total} | epoch {state['epoch'] + 1} | loss {mean_loss:.4f} | lr {lr:.2e} | "
                        f"grad {float(grad_norm):.2f} | {win['utts'] * dist.world_size / dt:.1f} utt/s | "
                        f"{win['audio_s'] * dist.world_size / dt:.0f} audio s/s{mem} | ETA {format_seconds(eta)}",
                        flush=True)
                    log.write("train", step=step, epoch=state["epoch"] + 1, loss=mean_loss, lr=lr,
                              grad_norm=float(grad_norm), utt_per_s=win["utts"] * dist.world_size / dt,
                              audio_s_per_s=win["audio_s"] * dist.world_size / dt, skipped=state["skipped"],
                              elapsed_s=now - t_start, compile_s=compile_s)
                    win.update(loss=0.0, n=0, utts=0, audio_s=0.0, t0=now)
                if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step < total:
                    run_eval(step)
                    checkpoint()
                elif cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0 and step < total:
                    checkpoint()
                if step < total and stop.should_stop(step, dist, device):
                    checkpoint()
                    log.close()
                    if main:
                        cmd = " ".join(shlex.quote(a) for a in ["fastctc", "train", str(out_dir / "config.toml"),
                                                                "--resume", str(out_dir)])
                        print(f"fastctc: stopped at step {step}/{total}; checkpoint saved. Resume with:\n  {cmd}",
                              flush=True)
                    shutdown(dist)
                    return {"stopped": step}
                if step >= total:
                    break
            else:  # the epoch ran out
                if micro:  # an incomplete accumulation at the epoch's end is dropped, not carried over
                    optimizer.zero_grad(set_to_none=True)
                state["epoch"] += 1
                state["batch_in_epoch"] = 0
                continue
            break

    result = run_eval(state["step"], final=True)
    checkpoint()
    if main:
        save_export(model, vocab, out_dir / "model", cfg.data.do_normalize, use_mask)
        for ref, hyp in result["examples"]:
            print(f"  ref: {ref}\n  hyp: {hyp}")
        steady = time.time() - train_t0 - compile_s
        print(f"fastctc: {state['step']} steps in {format_seconds(time.time() - train_t0)}"
              + (f" ({format_seconds(compile_s)} compiling over {len(shapes)} shapes, "
                 f"{format_seconds(steady)} steady)" if compile_on else "")
              + f" | skipped steps {state['skipped']} | {format_seconds(time.time() - t_start)} total")
        print(f"run directory: {out_dir}")
    log.close()
    shutdown(dist)
    return result
