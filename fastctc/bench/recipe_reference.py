"""The reference side of `fastctc bench recipe`: the Trainer setup that Transformers'
examples/pytorch/speech-recognition/run_speech_recognition_ctc.py builds, written out step by step
(the script itself wants a Hub dataset and `evaluate`'s Hub metric; nothing here downloads anything).

Run in its own process by fastctc/bench/recipe.py:

    python -m fastctc.bench.recipe_reference CONFIG --out DIR --threads N --t0 LAUNCH_TIME [--set ...]

and writes DIR/result.json. The steps follow the script's numbered sections:
  1. list the corpus: the utterances and normalised transcripts fastctc's reader lists for CONFIG
     (the script reads a `datasets` dataset; here the same utterances as the fastctc side), then the
     script's `remove_special_characters`, which appends a space to every transcript;
  2. `create_vocabulary_from_data` over train + eval, saved as vocab.json; Wav2Vec2CTCTokenizer with
     [UNK]/[PAD]/| (its bos/eos <s> and </s> become added tokens, so the head gets two more outputs);
  3. the checkpoint's feature extractor; config.update with the script's overrides; AutoModelForCTC;
     freeze_feature_encoder;
  4. `prepare_dataset` through datasets.map (the feature extractor over each utterance, labels from
     the tokenizer, input_length) and the length filter;
  5. DataCollatorCTCWithPadding, the script's compute_metrics and preprocess_logits_for_metrics;
  6. Trainer.train, save_model, Trainer.evaluate (the recipe's own WER).
Audio is decoded with soundfile and resampled with soxr (fastctc.data.audio.load_audio), where the
script lets `datasets` decode and resample: the two sides see the same samples.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import RunConfig, load_config, resolve_encoder
from ..data.audio import load_audio
from ..data.corpora import build_datasets
from ..models.config import RECIPE_FIELDS
from ..models.feature_encoder import frame_count
from ..models.hf_weights import read_encoder_config

UNK, PAD, DELIMITER = "[UNK]", "[PAD]", "|"  # the script's defaults for --unk_token --pad_token --word_delimiter_token


def model_overrides(encoder) -> dict:
    """The script's `config.update({...})` with CONFIG's values (see MAPPING in recipe.py): `encoder` is
    CONFIG's resolved encoder (config.resolve_encoder: the script's flag defaults, then [model]), as the
    fastctc side builds it; pad_token_id and vocab_size are added once the tokenizer exists."""
    return {
        **{k: getattr(encoder, k) for k in RECIPE_FIELDS},  # the fields the script's flags set
        "ctc_loss_reduction": "mean",
        "ctc_zero_infinity": False,
        "add_adapter": False,
    }  # script defaults


def training_arguments(cfg: RunConfig, out: Path, device: str) -> dict:
    """TrainingArguments as the recipe sets them, with CONFIG's values (see MAPPING in recipe.py)."""
    t, o = cfg.train, cfg.optim
    cuda = device == "cuda"
    args = dict(
        output_dir=str(out),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs,
        learning_rate=o.lr,
        warmup_steps=o.warmup_steps,
        weight_decay=o.weight_decay,
        adam_beta1=o.betas[0],
        adam_beta2=o.betas[1],
        adam_epsilon=o.eps,
        max_grad_norm=o.max_grad_norm,
        lr_scheduler_type="linear",
        optim="adamw_torch_fused",
        train_sampling_strategy="group_by_length",
        length_column_name="input_length",
        seed=t.seed,
        logging_steps=t.log_every,
        save_steps=t.checkpoint_every or 10**9,
        save_strategy="steps",
        eval_strategy="steps" if t.eval_every else "no",
        eval_steps=t.eval_every or None,
        dataloader_num_workers=cfg.data.num_workers,
        fp16=cuda and t.precision in ("auto", "fp16"),
        bf16=cuda and t.precision == "bf16",
        use_cpu=not cuda,
        report_to="none",
        disable_tqdm=True,
        do_train=True,
        do_eval=True,
    )
    if t.max_steps:
        args["max_steps"] = t.max_steps
    if cfg.model.gradient_checkpointing:  # passed only when on: transformers 5 warns on the flag's old name
        args["gradient_checkpointing"] = True
    return args


def create_vocabulary_from_data(texts_by_split: dict[str, list[str]]) -> dict[str, int]:
    """The script's vocabulary: sorted characters of every split, " " -> "|", then [UNK] and [PAD]."""
    chars = functools.reduce(set.union, (set(" ".join(texts)) for texts in texts_by_split.values()))
    vocab = {c: i for i, c in enumerate(sorted(chars))}
    vocab[DELIMITER] = vocab.pop(" ")
    vocab[UNK] = len(vocab)
    vocab[PAD] = len(vocab)
    return vocab


@dataclass
class DataCollatorCTCWithPadding:
    """The script's collator: the feature extractor pads the audio (and the attention mask, when the
    checkpoint returns one), the tokenizer pads the labels, and label padding becomes -100."""

    feature_extractor: object
    tokenizer: object

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.feature_extractor.pad(
            [{"input_values": f["input_values"]} for f in features], padding="longest", return_tensors="pt"
        )
        labels = self.tokenizer.pad(
            [{"input_ids": f["labels"]} for f in features], padding="longest", return_tensors="pt"
        )
        batch["labels"] = labels["input_ids"].masked_fill(labels.attention_mask.ne(1), -100)
        if "attention_mask" in batch:
            batch["attention_mask"] = batch["attention_mask"].to(torch.long)
        return batch


def peak_rss_bytes() -> int:
    """Peak resident memory of this process and its finished children (loader workers), in bytes."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return 1024 * max(own, kids)  # ru_maxrss is in KiB on Linux


def run(cfg: RunConfig, out: Path, threads: int, t0: float, device: str) -> dict:
    """The script's steps (the module docstring's numbers) on CONFIG; its result.json document. Times are
    seconds; "imports" counts from `t0`, the launch."""
    import datasets
    import transformers

    torch.set_num_threads(threads)
    transformers.utils.logging.set_verbosity_warning()
    datasets.disable_progress_bars()
    transformers.set_seed(cfg.train.seed)  # the script seeds before building anything
    out.mkdir(parents=True, exist_ok=True)
    times = {"imports": time.time() - t0}
    t = time.time()
    encoder = resolve_encoder(cfg.model, read_encoder_config(cfg.model.checkpoint))  # as the fastctc side's
    raw = list_corpus(cfg, encoder)
    times["listing"] = time.time() - t
    t = time.time()
    tokenizer, feature_extractor, model = build_model(cfg, encoder, raw, out)
    times["model_load"] = time.time() - t
    t = time.time()
    vectorized = prepare_datasets(cfg, raw, feature_extractor, tokenizer)
    times["preprocessing"] = time.time() - t
    log = {"losses": [], "evals": []}
    trainer = make_trainer(cfg, out, device, model, tokenizer, feature_extractor, vectorized, log, t0)
    feature_extractor.save_pretrained(out)  # the script saves the processor pieces before training
    tokenizer.save_pretrained(out)
    times["startup"] = time.time() - t0
    final = train_and_evaluate(trainer, log, times, t0)
    return {
        "side": "reference",
        "seed": cfg.train.seed,
        "times": times,
        "losses": log["losses"],
        "evals": log["evals"],
        "recipe_wer": final.get("eval_wer"),
        "recipe_cer": final.get("eval_cer"),
        "final_loss": final.get("eval_loss"),
        "model_dir": str(out),
        "vocab_size": len(tokenizer),
        "steps": trainer.state.global_step,
        "train_utterances": len(vectorized["train"]),
        "eval_utterances": len(vectorized["eval"]),
        "peak_rss_bytes": peak_rss_bytes(),
        "cuda_peak_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
        "versions": {
            "transformers": transformers.__version__,
            "datasets": datasets.__version__,
            "torch": torch.__version__,
        },
    }


def list_corpus(cfg: RunConfig, encoder) -> dict:
    """1. The same utterances and normalised transcripts as the fastctc side (screened by the same encoder's
    frame counts), as `datasets` splits of (path, target_text)."""
    import datasets

    train_ds, eval_ds, _ = build_datasets(cfg.data, cfg.train.seed, lambda n: frame_count(n, encoder))
    raw = {
        split: datasets.Dataset.from_dict({"path": [u.path for u in ds.utterances], "text": list(ds.texts)})
        for split, ds in (("train", train_ds), ("eval", eval_ds))
    }
    # remove_special_characters: the characters are already gone (fastctc's normalise); the script adds " "
    return {
        split: d.map(lambda b: {"target_text": b["text"] + " "}, remove_columns=["text"]) for split, d in raw.items()
    }


def build_model(cfg: RunConfig, encoder, raw: dict, out: Path):
    """2-3. The vocabulary (saved as out/vocab.json), the tokenizer, the checkpoint's feature extractor and
    the model with the script's config.update; (tokenizer, feature extractor, model)."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

    vocab = create_vocabulary_from_data({s: d["target_text"] for s, d in raw.items()})
    (out / "vocab.json").write_text(json.dumps(vocab))
    config = AutoConfig.from_pretrained(cfg.model.checkpoint)
    tokenizer_class = getattr(config, "tokenizer_class", None)  # transformers 5 configs may lack the attribute
    tokenizer = AutoTokenizer.from_pretrained(
        str(out),
        config=config if tokenizer_class is not None else None,
        tokenizer_type=config.model_type if tokenizer_class is None else None,
        unk_token=UNK,
        pad_token=PAD,
        word_delimiter_token=DELIMITER,
    )
    feature_extractor = AutoFeatureExtractor.from_pretrained(cfg.model.checkpoint)
    config.update({**model_overrides(encoder), "pad_token_id": tokenizer.pad_token_id, "vocab_size": len(tokenizer)})
    model = AutoModelForCTC.from_pretrained(cfg.model.checkpoint, config=config)
    if cfg.model.freeze_feature_encoder:
        model.freeze_feature_encoder()
    return tokenizer, feature_extractor, model


def prepare_datasets(cfg: RunConfig, raw: dict, feature_extractor, tokenizer) -> dict:
    """4. prepare_dataset through datasets.map, then the length filter (max_duration_in_seconds;
    min_duration_in_seconds 0)."""
    rate = feature_extractor.sampling_rate

    def prepare_dataset(batch):
        audio = load_audio(batch["path"], rate)
        batch["input_values"] = feature_extractor(audio, sampling_rate=rate).input_values[0]
        batch["input_length"] = len(audio)
        batch["labels"] = tokenizer(batch["target_text"]).input_ids
        return batch

    max_input_length = (cfg.data.max_duration_s or float("inf")) * rate
    return {
        s: d.map(prepare_dataset, remove_columns=d.column_names).filter(
            lambda n: 0 < n < max_input_length, input_columns=["input_length"]
        )
        for s, d in raw.items()
    }


def script_metrics(tokenizer):
    """5. The script's preprocess_logits_for_metrics and compute_metrics."""
    import jiwer

    def preprocess_logits_for_metrics(logits, labels):
        return torch.argmax(logits, dim=-1), labels

    def compute_metrics(pred):
        pred_ids = pred.predictions[0]
        pred.label_ids[pred.label_ids == -100] = tokenizer.pad_token_id
        pred_str = tokenizer.batch_decode(pred_ids)
        label_str = tokenizer.batch_decode(pred.label_ids, group_tokens=False)  # references are not grouped
        # evaluate's "wer"/"cer" metrics are jiwer's (the script loads them from the Hub; jiwer is local)
        return {"wer": jiwer.wer(label_str, pred_str), "cer": jiwer.cer(label_str, pred_str)}

    return preprocess_logits_for_metrics, compute_metrics


def make_trainer(cfg, out, device, model, tokenizer, feature_extractor, vectorized, log: dict, t0: float):
    """5. The Trainer with the script's collator and metrics; a callback records the logged losses and the
    evaluations into `log`."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                log["losses"].append([state.global_step, float(logs["loss"])])

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            metrics = metrics or {}
            log["evals"].append(
                {
                    "step": state.global_step,
                    "wer": metrics.get("eval_wer"),
                    "cer": metrics.get("eval_cer"),
                    "loss": metrics.get("eval_loss"),
                    "runtime_s": metrics.get("eval_runtime", 0.0),
                    "elapsed_s": time.time() - t0,
                }
            )

    preprocess_logits_for_metrics, compute_metrics = script_metrics(tokenizer)
    return Trainer(
        model=model,
        data_collator=DataCollatorCTCWithPadding(feature_extractor, tokenizer),
        args=TrainingArguments(**training_arguments(cfg, out, device)),
        compute_metrics=compute_metrics,
        preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        train_dataset=vectorized["train"],
        eval_dataset=vectorized["eval"],
        processing_class=feature_extractor,
        callbacks=[Record()],
    )


def train_and_evaluate(trainer, log: dict, times: dict, t0: float) -> dict:
    """6. Trainer.train, save_model, Trainer.evaluate (the recipe's own WER); fills the train and eval times.

    The script would pass a checkpoint *folder* as resume_from_checkpoint, which fails on a plain pretrained
    folder; the cards named Hub ids and trained from the loaded weights, as here."""
    t = time.time()
    trainer.train()
    trainer.save_model()
    train_wall = time.time() - t
    in_train_eval = sum(e["runtime_s"] for e in log["evals"])
    t = time.time()
    final = trainer.evaluate()
    times["final_eval"] = time.time() - t
    times["train"] = train_wall - in_train_eval
    times["eval"] = in_train_eval + times["final_eval"]
    times["total"] = time.time() - t0
    return final


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastctc.bench.recipe_reference", description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--t0", type=float, default=None, help="the launch time (time.time()) elapsed times count from")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = p.parse_args(argv)
    t0 = args.t0 if args.t0 is not None else time.time()
    cfg = load_config(args.config, args.set)
    out = Path(args.out)
    result = run(cfg, out, args.threads, t0, args.device)
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"reference: {result['steps']} steps | recipe's own WER {result['recipe_wer']:.4f} | {result['times']['total']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
