"""Run configuration: TOML files parsed into typed dataclasses, with `--set section.key=value` overrides.

Everything is checked before any work starts: an unknown key, a wrong type or an impossible value
fails with one line naming the key and, for a misspelling, the nearest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from .errors import ConfigError
from .models.config import FINE_TUNING_FIELDS, RECIPE_FIELDS, VOCAB_FIELDS, EncoderConfig, encoder_problem

# The characters the cards' commands pass as --chars_to_ignore (data.chars_to_ignore's default).
RECIPE_CHARS_TO_IGNORE = ',?.!-;:"“%‘”�'


# [model] sets the run's model settings (ModelConfig's fields) and any field of the encoder's one
# description, EncoderConfig (fastctc/models/config.py declares and documents each field once), but
# the two the run's vocabulary sets.
ENCODER_KEYS = tuple(f.name for f in dataclasses.fields(EncoderConfig) if f.name not in VOCAB_FIELDS)
_ENCODER_TYPES = typing.get_type_hints(EncoderConfig)
_ENCODER_DEFAULTS = dataclasses.asdict(EncoderConfig())


@dataclass
class ModelConfig:
    # A Transformers-format checkpoint directory (config.json + safetensors): the encoder is its
    # config.json's, and [model] may set only its fine-tuning fields (dropouts, SpecAugment). Empty =
    # train from scratch: the encoder is EncoderConfig's defaults with whatever [model] sets.
    checkpoint: str = ""
    freeze_feature_encoder: bool = True
    # auto: the checkpoint's convention (layer-norm feature encoders get the attention mask, group-norm
    # ones see padding as audio, as their preprocessor's return_attention_mask=False); on | off
    attention_mask: str = "auto"
    gradient_checkpointing: bool = False  # recompute transformer layers in backward to save memory
    # true: the head gets <s> and </s> outputs after [PAD], as the recipe's tokenizer adds them (head =
    # vocabulary + 2; never a target). false (fastctc): no outputs that no target ever asks for
    bos_eos_tokens: bool = False
    # The EncoderConfig fields [model] sets, as given (type-checked); resolve_encoder applies them
    encoder: dict = field(default_factory=dict)


@dataclass
class DataConfig:
    corpus: str = "synthetic"  # synthetic | timit | librispeech | manifest | fsdd
    # timit / librispeech: the corpus folder as distributed; manifest: "" (paths are used as given)
    # or a folder the manifest paths are relative to
    root: str = ""
    # timit: train | test (the cards), or the phone-recognition protocol: train-nosa (462 speakers,
    # SA sentences left out), dev (50 speakers), core-test (24 speakers); librispeech: subsets joined
    # with "+" (train-clean-100+train-clean-360); manifest: a .jsonl or .tsv file (relative to root);
    # synthetic: ignored
    train: str = "train"
    eval: str = "eval"
    # targets: chars (the transcript) | phones (timit: each utterance's .PHN; manifest: the text holds
    # space-separated phones). phone_set: the training set (61 | 48 | 39, Lee & Hon's foldings);
    # score_phone_set: the set PER is computed on (the standard protocol trains on 48, scores on 39)
    targets: str = "chars"
    phone_set: int = 48
    score_phone_set: int = 39
    # synthetic corpus only: how many utterances each split holds
    synthetic_train_size: int = 2000
    synthetic_eval_size: int = 200
    sample_rate: int = 16_000
    # text: the recipe's normalisation (characters dropped, then lower-cased)
    chars_to_ignore: str = RECIPE_CHARS_TO_IGNORE
    lowercase: bool = True
    # audio: per-utterance zero mean, unit variance (the checkpoint preprocessor's do_normalize)
    do_normalize: bool = True
    resample: bool = True  # false: files not at sample_rate are skipped instead of resampled
    max_channels: int = 2  # files with more channels are skipped; fewer are down-mixed to mono
    # utterances longer than this (seconds; 0 = no cap) are skipped (the recipe) or cropped
    max_duration_s: float = 20.0
    long_utterances: str = "skip"  # skip | crop (training split only; eval keeps every utterance)
    # batching: batch_seconds > 0 fills each batch up to this much padded audio instead of
    # train.batch_size utterances. Batches are padded to their longest utterance in whole frames
    # (a fixed set of shapes, at most one per batch); pad_lengths > 0 bounds the shapes to that
    # many lengths, at some cost in padding (fastctc data stats prints it)
    batch_seconds: float = 0.0
    pad_lengths: int = 0
    # buckets (fastctc; mini card WER 0.15 vs 0.25 for group_by_length, 3 seeds, README): utterances sorted
    # by length, cut into batches, batches shuffled (batching.py);
    # group_by_length: the recipe's megabatches (random chunks of min(N / 4B, 50) x B utterances, each
    # sorted longest first, cut into batches, in their random order); needs batch_seconds = 0
    sampler: str = "buckets"
    # true: every target ends with one `|` (the recipe's remove_special_characters appends " " to each
    # transcript, so `|` is in the vocabulary even for one-word corpora). false (fastctc): targets as written
    trailing_delimiter: bool = False
    num_workers: int = 2  # loader processes for on-disk corpora (0 = load in the training process)
    prefetch_factor: int = 4  # batches each worker prepares ahead
    # header cache (durations) for on-disk corpora; "" = $XDG_CACHE_HOME/fastctc or ~/.cache/fastctc
    cache_dir: str = ""


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 1000  # the linear schedule's
    max_grad_norm: float = 1.0
    # linear: the Trainer's (warmup_steps, then linear decay to 0). tri_stage: fairseq's wav2vec2 fine-tuning
    # schedule (its TriStageLRSchedule; optim.warmup_steps unused): phase_ratio of the run's steps in a linear
    # warmup from lr * init_lr_scale, a hold at lr, and an exponential decay to lr * final_lr_scale
    schedule: str = "linear"
    phase_ratio: list[float] = field(default_factory=lambda: [0.1, 0.4, 0.5])  # fairseq's base_* configs
    init_lr_scale: float = 0.01  # fairseq's default
    final_lr_scale: float = 0.05  # fairseq's base_* configs (its default is 0.01)


@dataclass
class TrainConfig:
    epochs: int = 20
    max_steps: int = 0  # > 0 caps the run at this many optimizer steps, whatever epochs says
    batch_size: int = 32
    eval_batch_size: int = 32
    seed: int = 42
    log_every: int = 10
    eval_every: int = 0  # 0 = evaluate only at the end
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # CPU threads for torch; 0 = torch's default
    # auto: bf16 autocast on GPUs that support it, else fp16 + GradScaler; fp32 on CPU
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    compile: str = "auto"  # torch.compile the model: auto (on for CUDA, off on CPU) | on | off
    grad_accum: int = 1  # micro-batches per optimizer step
    checkpoint_every: int = 500  # steps between resumable checkpoints (also at each eval, the end and Ctrl-C)
    # The recipe feeds group-norm checkpoints no attention mask, and then uses the padded length as
    # every CTC input length. true (fastctc's choice) takes CTC input lengths from the true lengths.
    ctc_true_lengths: bool = False
    # true: a deliberate departure from the recipe. Every training row computes what it computes alone
    # (group-norm statistics over its own frames, padding masked in attention, true CTC lengths), so a
    # group-norm model's step no longer depends on what it is batched with. Layer-norm checkpoints already
    # are. Evaluation is always padding-invariant (the cards' eval_batch_size 1), whatever this says.
    padding_invariant: bool = False
    # true (fastctc): a CTC-infeasible utterance (fewer frames than its target needs) adds loss 0 and no
    # gradient; false (the recipe's ctc_zero_infinity): its inf loss makes the step's gradient non-finite,
    # and the step is skipped
    zero_infinity: bool = True
    # fairseq's freeze_finetune_updates: for this many optimizer steps only the CTC head learns; the encoder
    # runs without gradient, and its weights and optimizer state stay untouched. 0 = off
    freeze_finetune_steps: int = 0
    # a running average of the weights, kept in fp32 on the device, saved in the checkpoint and evaluated
    # beside the model at every eval (best/ exports whichever scores better): off | ema (each step:
    # average += (1 - ema_decay) * (weights - average)) | mean (icefall's model_avg: the mean of the
    # weights every average_period steps since the start)
    weight_average: str = "off"
    ema_decay: float = 0.999
    average_period: int = 200  # icefall's default


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS = {f.name: f.type for f in dataclasses.fields(RunConfig)}
_SECTION_CLASSES = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "train": TrainConfig}

CORPORA = ("synthetic", "timit", "librispeech", "manifest", "fsdd")
SAMPLERS = ("buckets", "group_by_length")  # data.sampler; fastctc/data/batching.py: SAMPLER_CLASSES
SCHEDULES = ("linear", "tri_stage")  # optim.schedule; fastctc/train/optim.py: build_schedule
WEIGHT_AVERAGES = ("off", "ema", "mean")  # train.weight_average; fastctc/train/average.py

# The recipe's conventions where fastctc's defaults depart from them, as --set overrides: `fastctc bench
# recipe --recipe-exact` trains the fastctc side with these (README: what each departure buys)
RECIPE_EXACT = (
    "data.trailing_delimiter=true",
    "model.bos_eos_tokens=true",
    "data.sampler=group_by_length",
    "train.zero_infinity=false",
)


def _nearest(name: str, options: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else f"; valid: {', '.join(sorted(options))}"


def _coerce(key: str, value: object, annotation: object) -> object:
    """Check `value` against the field's type; ints are accepted where a float is expected, and floats
    must be finite (TOML spells inf and nan, and 1e999 reads as inf: a learning rate of inf trains NaNs)."""
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):  # EncoderConfig's tuple[int, ...] is a TOML list too
        item_type = typing.get_args(annotation)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {item_type.__name__}, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {annotation.__name__}, got {value!r}")
    if not isinstance(value, annotation):
        raise ConfigError(f"{key}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")
    if annotation is float and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    return value


def _parse_override_value(raw: str) -> object:
    """`--set` values are TOML literals (3e-4, true, [1, 2], "x"); anything else is a bare string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _validate(cfg: RunConfig) -> None:
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {what}")

    m, d, o, t = cfg.model, cfg.data, cfg.optim, cfg.train
    if m.checkpoint:
        path = Path(m.checkpoint)
        need(
            path.is_dir(),
            "model.checkpoint",
            f"{m.checkpoint!r} is not a directory; point it at a Transformers-format checkpoint folder "
            "(config.json + model.safetensors), or leave it empty to train from scratch",
        )
    # the given values over the defaults; beside a checkpoint only its fine-tuning ones: resolve_encoder
    # compares the shape keys with its config.json, which is read when the run starts
    given = {k: v for k, v in m.encoder.items() if not m.checkpoint or k in FINE_TUNING_FIELDS}
    problem = encoder_problem({**_ENCODER_DEFAULTS, **given}, prefix="model.", run=True)
    if problem:
        raise ConfigError(problem)
    need(d.corpus in CORPORA, "data.corpus", f"unknown corpus {d.corpus!r}{_nearest(d.corpus, CORPORA)}")
    need(d.synthetic_train_size > 0, "data.synthetic_train_size", f"must be > 0, got {d.synthetic_train_size}")
    need(d.synthetic_eval_size > 0, "data.synthetic_eval_size", f"must be > 0, got {d.synthetic_eval_size}")
    need(d.sample_rate == 16_000, "data.sample_rate", f"the encoders expect 16000 Hz, got {d.sample_rate}")
    if d.corpus in ("timit", "librispeech", "fsdd"):
        need(
            bool(d.root),
            "data.root",
            f"data.corpus={d.corpus!r} needs the corpus folder, e.g. --set data.root=/data/{d.corpus}",
        )
    for key in ("train", "eval"):
        need(
            d.corpus == "synthetic" or bool(getattr(d, key)), f"data.{key}", "must name a split, subsets or a manifest"
        )
    need(d.targets in ("chars", "phones"), "data.targets", f"must be chars or phones, got {d.targets!r}")
    need(
        d.targets == "chars" or d.corpus in ("timit", "manifest"),
        "data.targets",
        f"phones come from TIMIT's .PHN files or a manifest of phone strings; data.corpus={d.corpus!r} has none",
    )
    for key in ("phone_set", "score_phone_set"):
        need(getattr(d, key) in (61, 48, 39), f"data.{key}", f"must be 61, 48 or 39, got {getattr(d, key)}")
    need(
        d.score_phone_set <= d.phone_set,
        "data.score_phone_set",
        f"must be data.phone_set={d.phone_set} or a smaller set folded from it (61 -> 48 -> 39), "
        f"got {d.score_phone_set}",
    )
    need(d.max_channels >= 1, "data.max_channels", f"must be >= 1, got {d.max_channels}")
    need(d.max_duration_s >= 0, "data.max_duration_s", f"must be >= 0 (0 = no cap), got {d.max_duration_s}")
    need(
        d.long_utterances in ("skip", "crop"),
        "data.long_utterances",
        f"must be skip or crop, got {d.long_utterances!r}",
    )
    need(
        d.long_utterances == "skip" or d.max_duration_s > 0,
        "data.long_utterances",
        "crop needs a cap: set data.max_duration_s > 0",
    )
    need(
        d.batch_seconds >= 0,
        "data.batch_seconds",
        f"must be >= 0 (0 = train.batch_size utterances), got {d.batch_seconds}",
    )
    need(
        d.batch_seconds == 0 or d.max_duration_s == 0 or d.batch_seconds >= d.max_duration_s,
        "data.batch_seconds",
        f"must hold one utterance of data.max_duration_s={d.max_duration_s}, got {d.batch_seconds}",
    )
    need(d.pad_lengths >= 0, "data.pad_lengths", f"must be >= 0 (0 = one per batch), got {d.pad_lengths}")
    need(d.sampler in SAMPLERS, "data.sampler", f"unknown sampler {d.sampler!r}{_nearest(d.sampler, SAMPLERS)}")
    need(
        d.sampler != "group_by_length" or d.batch_seconds == 0,
        "data.sampler",
        "group_by_length cuts batches of train.batch_size utterances; set data.batch_seconds = 0",
    )
    need(
        not d.trailing_delimiter or d.targets == "chars",
        "data.trailing_delimiter",
        "phone targets have no word delimiter; set it false",
    )
    need(
        not m.bos_eos_tokens or d.targets == "chars",
        "model.bos_eos_tokens",
        "phone targets use the fixed phone set + blank; set it false",
    )
    need(d.num_workers >= 0, "data.num_workers", f"must be >= 0, got {d.num_workers}")
    need(d.prefetch_factor >= 1, "data.prefetch_factor", f"must be >= 1, got {d.prefetch_factor}")
    need(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    need(
        len(o.betas) == 2 and all(0.0 <= b < 1.0 for b in o.betas),
        "optim.betas",
        f"must be two values in [0, 1), got {o.betas}",
    )
    need(o.eps > 0, "optim.eps", f"must be > 0, got {o.eps}")
    need(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    need(o.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {o.warmup_steps}")
    need(o.max_grad_norm > 0, "optim.max_grad_norm", f"must be > 0, got {o.max_grad_norm}")
    need(t.epochs > 0, "train.epochs", f"must be > 0, got {t.epochs}")
    need(t.max_steps >= 0, "train.max_steps", f"must be >= 0 (0 = no cap), got {t.max_steps}")
    need(t.batch_size > 0, "train.batch_size", f"must be > 0, got {t.batch_size}")
    need(t.eval_batch_size > 0, "train.eval_batch_size", f"must be > 0, got {t.eval_batch_size}")
    need(t.log_every > 0, "train.log_every", f"must be > 0, got {t.log_every}")
    need(t.eval_every >= 0, "train.eval_every", f"must be >= 0 (0 = only at the end), got {t.eval_every}")
    need(t.device in ("auto", "cpu", "cuda"), "train.device", f"must be auto, cpu or cuda, got {t.device!r}")
    need(t.threads >= 0, "train.threads", f"must be >= 0, got {t.threads}")
    need(
        t.precision in ("auto", "fp32", "bf16", "fp16"),
        "train.precision",
        f"must be auto, fp32, bf16 or fp16, got {t.precision!r}",
    )
    need(t.compile in ("auto", "on", "off"), "train.compile", f"must be auto, on or off, got {t.compile!r}")
    need(t.grad_accum > 0, "train.grad_accum", f"must be > 0, got {t.grad_accum}")
    need(t.checkpoint_every >= 0, "train.checkpoint_every", f"must be >= 0, got {t.checkpoint_every}")
    need(
        m.attention_mask in ("auto", "on", "off"),
        "model.attention_mask",
        f"must be auto, on or off, got {m.attention_mask!r}",
    )
    _validate_fine_tuning(o, t)


def _need(ok: bool, key: str, what: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {what}")


def _validate_fine_tuning(o: OptimConfig, t: TrainConfig) -> None:
    """fairseq's and icefall's fine-tuning options: the schedule, the frozen encoder, the weight average."""
    _need(
        o.schedule in SCHEDULES, "optim.schedule", f"unknown schedule {o.schedule!r}{_nearest(o.schedule, SCHEDULES)}"
    )
    _need(
        len(o.phase_ratio) == 3 and min(o.phase_ratio) >= 0 and math.isclose(sum(o.phase_ratio), 1.0, abs_tol=1e-9),
        "optim.phase_ratio",
        f"must be three fractions (warmup, hold, decay) >= 0 that add up to 1, got {o.phase_ratio}",
    )
    _need(0 <= o.init_lr_scale <= 1, "optim.init_lr_scale", f"must be in [0, 1], got {o.init_lr_scale}")
    _need(
        0 < o.final_lr_scale <= 1,
        "optim.final_lr_scale",
        f"must be in (0, 1] (the decay is exponential), got {o.final_lr_scale}",
    )
    _need(
        t.freeze_finetune_steps >= 0,
        "train.freeze_finetune_steps",
        f"must be >= 0 (0 = the encoder learns from the first step), got {t.freeze_finetune_steps}",
    )
    _need(
        t.weight_average in WEIGHT_AVERAGES,
        "train.weight_average",
        f"unknown average {t.weight_average!r}{_nearest(t.weight_average, WEIGHT_AVERAGES)}",
    )
    _need(0 < t.ema_decay < 1, "train.ema_decay", f"must be in (0, 1), got {t.ema_decay}")
    _need(t.average_period >= 1, "train.average_period", f"must be >= 1, got {t.average_period}")


def _apply(cfg: RunConfig, section: str, key: str, value: object, where: str) -> None:
    if section not in _SECTION_CLASSES:
        raise ConfigError(f"{where}unknown section [{section}]{_nearest(section, _SECTION_CLASSES)}")
    target = getattr(cfg, section)
    hints = typing.get_type_hints(type(target))
    if section == "model":  # its own keys, then the encoder's (see ModelConfig)
        hints = {k: t for k, t in hints.items() if k != "encoder"} | {k: _ENCODER_TYPES[k] for k in ENCODER_KEYS}
    if key not in hints:
        raise ConfigError(f"{where}unknown key {section}.{key}{_nearest(key, hints)}")
    try:
        value = _coerce(f"{section}.{key}", value, hints[key])
    except ConfigError as e:  # name where the value came from, as for an unknown key
        raise ConfigError(f"{where}{e}") from None
    if section == "model" and key in ENCODER_KEYS:
        target.encoder[key] = value
    else:
        setattr(target, key, value)


def _parse_toml(path: Path) -> dict:
    """The TOML document of `path`: UTF-8 (a byte-order mark, as Windows editors write, is accepted and
    dropped), holding at least one [section]; anything else is a one-line ConfigError with the fix."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x}); TOML files are UTF-8: "
            f"convert it, e.g. iconv -f latin1 -t utf-8 {path} > fixed.toml"
        ) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    if not doc:  # an empty file would otherwise train EncoderConfig's 94 M-parameter default on synthetic audio
        raise ConfigError(
            f"{path}: no [section] in the file; a config sets [model], [data], [optim] and "
            "[train] keys: start from configs/demo.toml"
        )
    return doc


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> RunConfig:
    """Read a TOML config (or start from defaults), apply `section.key=value` overrides, validate."""
    cfg = RunConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} not found; try configs/demo.toml")
        doc = _parse_toml(path)
        for section, table in doc.items():
            if not isinstance(table, dict):
                raise ConfigError(
                    f"{path}: top-level key {section!r} must be a [section]; sections are {', '.join(_SECTION_CLASSES)}"
                )
            for key, value in table.items():
                _apply(cfg, section, key, value, f"{path}: ")
    for item in overrides:
        name, sep, raw = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not sep or not dot or not key:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set optim.lr=3e-4")
        _apply(cfg, section, key, _parse_override_value(raw.strip()), "--set: ")
    _validate(cfg)
    return cfg


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as TOML that `load_config` reads back to an equal RunConfig."""
    lines = []
    for section in _SECTION_CLASSES:
        lines.append(f"[{section}]")
        values = {f.name: getattr(getattr(cfg, section), f.name) for f in dataclasses.fields(getattr(cfg, section))}
        if section == "model":  # the encoder keys as given: a checkpoint's sizes stay its config.json's
            values.update(values.pop("encoder"))
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)


def resolve_encoder(model: ModelConfig, checkpoint: EncoderConfig | None = None) -> EncoderConfig:
    """The run's one description of the encoder: EncoderConfig's defaults, or the checkpoint's
    config.json (`checkpoint`, as hf_io.read_encoder_config reads it) with the recipe's fine-tuning
    values (RECIPE_FIELDS: its script passes them, overriding the checkpoint's); then what [model]
    sets. vocab_size and pad_token_id are the vocabulary's, set when the model is built."""
    if checkpoint is None:
        base = EncoderConfig()
    else:
        base = dataclasses.replace(checkpoint, **{k: _ENCODER_DEFAULTS[k] for k in RECIPE_FIELDS})
        for key, value in model.encoder.items():  # the shape is the checkpoint's: a different value is an error
            theirs = getattr(checkpoint, key)
            if key not in FINE_TUNING_FIELDS and (tuple(value) if isinstance(value, list) else value) != theirs:
                raise ConfigError(
                    f"model.{key}: {_toml_value(value)} here, but the checkpoint's config.json says "
                    f"{_toml_value(list(theirs) if isinstance(theirs, tuple) else theirs)}, and its encoder's shape is "
                    f"its own; drop model.{key}, or leave model.checkpoint empty to train from scratch (beside a "
                    f"checkpoint [model] may change {', '.join(FINE_TUNING_FIELDS)})"
                )
    values = {**dataclasses.asdict(base), **model.encoder}
    problem = encoder_problem(values, prefix="model.", run=True)
    if problem:
        raise ConfigError(problem)
    return EncoderConfig(**values)
