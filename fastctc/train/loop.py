"""The training loop: one readable function, `train`, plus the small pieces it calls."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from fastctc.kernels import ctc_loss

from ..config import RunConfig, dump_config
from ..data.batching import LengthBucketSampler, make_loader
from ..data.corpora import build_datasets, encoder_frames
from ..data.text import CharVocab
from ..models import CTCModel, EncoderConfig, load_pretrained
from .evaluate import evaluate
from .optim import build_optimizer, linear_schedule


class MetricsLog:
    """metrics.jsonl: one JSON object per log or eval event."""

    def __init__(self, path: Path):
        self.file = open(path, "a", encoding="utf-8")

    def write(self, event: str, **values) -> None:
        self.file.write(json.dumps({"event": event, "time": round(time.time(), 3), **values}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("train.device=cuda but no CUDA device is visible; use --set train.device=cpu")
    return torch.device(name)


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


def train(cfg: RunConfig, out_dir: Path) -> dict:
    """Train per `cfg`, writing config.toml, metrics.jsonl and the final model into `out_dir`.

    The final model is a Transformers-format checkpoint in `out_dir/model` (config.json,
    model.safetensors, vocab.json, preprocessor and tokenizer configs): it loads with
    fastctc.models.load_pretrained and with transformers' AutoModelForCTC / Wav2Vec2Processor.

    Returns the final evaluation (wer, cer, loss).
    """
    t_start = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.toml").write_text(dump_config(cfg))
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    seed_everything(cfg.train.seed)

    print(f"fastctc: preparing data (corpus {cfg.data.corpus})", flush=True)
    # frames per utterance screen out audio too short for its transcript; the [model] conv stack
    # (its defaults are every card's) stands in for a checkpoint's
    train_ds, eval_ds, data_report = build_datasets(
        cfg.data, cfg.train.seed, lambda n: encoder_frames(n, cfg.model.conv_kernel, cfg.model.conv_stride))
    vocab = CharVocab.from_transcripts(train_ds.texts + eval_ds.texts)  # train + eval, as the recipe
    checkpoint_vocab = Path(cfg.model.checkpoint) / "vocab.json" if cfg.model.checkpoint else None
    if checkpoint_vocab is not None and checkpoint_vocab.is_file():
        try:  # a checkpoint fine-tuned by fastctc keeps the ids its head was trained on
            vocab = CharVocab.load(checkpoint_vocab)
        except ValueError as e:  # another tokenizer's vocabulary: build ours, the head must then be fresh
            print(f"fastctc: not reusing {checkpoint_vocab} ({e}); vocabulary built from the transcripts")
    model = build_model(cfg, vocab).to(device)
    if cfg.model.freeze_feature_encoder:
        model.freeze_feature_encoder()
    n_params = sum(p.numel() for p in model.parameters())
    audio_h = sum(train_ds.durations) / 3600
    print(f"fastctc: {len(train_ds)} train ({audio_h:.2f} h) / {len(eval_ds)} eval utterances, "
          f"vocab {len(vocab)}, model {n_params / 1e6:.2f} M parameters, device {device} "
          f"({time.time() - t_start:.1f} s)", flush=True)

    sampler = LengthBucketSampler(train_ds.durations, cfg.train.seed, cfg.train.batch_size, cfg.data.batch_seconds,
                                  cfg.data.pad_lengths)
    loader = make_loader(train_ds, sampler, vocab, cfg.data, pin_memory=device.type == "cuda", report=data_report)
    steps_per_epoch = len(sampler)
    total = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps)
    optimizer = build_optimizer(model.parameters(), cfg.optim, device)
    schedule = linear_schedule(optimizer, cfg.optim.warmup_steps, total)
    log = MetricsLog(out_dir / "metrics.jsonl")

    step, skipped, epoch = 0, 0, 0
    window_loss, window_utts, window_t0 = [], 0, time.time()
    train_t0 = time.time()
    model.train()
    while step < total:
        sampler.set_epoch(epoch)
        for batch in loader:
            if step >= total:
                break
            logits, logit_lengths = model(batch.waveforms.to(device), batch.lengths.to(device))
            loss = ctc_loss(logits, batch.targets.to(device), logit_lengths, batch.target_lengths.to(device),
                            blank=vocab.blank, reduction="mean", zero_infinity=True)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
            # a non-finite loss or gradient skips the step: weights never take a NaN
            if torch.isfinite(loss) and torch.isfinite(grad_norm):  # host sync, once per step (CPU loop)
                optimizer.step()
                window_loss.append(float(loss.detach()))
            else:
                skipped += 1
            schedule.step()
            step += 1
            window_utts += len(batch.texts)

            if step % cfg.train.log_every == 0 or step == total:
                now = time.time()
                rate = window_utts / max(now - window_t0, 1e-9)
                eta = (total - step) * (now - train_t0) / step
                mean_loss = sum(window_loss) / len(window_loss) if window_loss else float("nan")
                lr = schedule.get_last_lr()[0]
                print(f"step {step}/{total} | epoch {epoch + 1} | loss {mean_loss:.4f} | lr {lr:.2e} | "
                      f"{rate:.1f} utt/s | ETA {format_seconds(eta)}", flush=True)
                log.write("train", step=step, epoch=epoch + 1, loss=mean_loss, lr=lr, grad_norm=float(grad_norm),
                          utt_per_s=rate, skipped=skipped, elapsed_s=now - t_start)
                window_loss, window_utts, window_t0 = [], 0, now
            if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step < total:
                result = evaluate(model, eval_ds, vocab, cfg.train.eval_batch_size, device, data=cfg.data)
                print(f"eval step {step} | loss {result['loss']:.4f} | WER {result['wer']:.4f} | "
                      f"CER {result['cer']:.4f}", flush=True)
                log.write("eval", step=step, loss=result["loss"], wer=result["wer"], cer=result["cer"])
        epoch += 1

    result = evaluate(model, eval_ds, vocab, cfg.train.eval_batch_size, device, data=cfg.data)
    log.write("eval", step=step, loss=result["loss"], wer=result["wer"], cer=result["cer"], final=True,
              elapsed_s=time.time() - t_start)
    log.close()
    model.save_pretrained(out_dir / "model", vocab.tokens)
    for ref, hyp in result["examples"]:
        print(f"  ref: {ref}\n  hyp: {hyp}")
    print(f"final eval ({len(eval_ds)} utterances) | loss {result['loss']:.4f} | WER {result['wer']:.4f} | "
          f"CER {result['cer']:.4f} | skipped steps {skipped} | {format_seconds(time.time() - t_start)} total")
    print(f"run directory: {out_dir}")
    return result
