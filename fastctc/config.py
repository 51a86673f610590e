"""Run configuration: TOML files parsed into typed dataclasses, with `--set section.key=value` overrides.

Everything is checked before any work starts: an unknown key, a wrong type or an impossible value
fails with one line naming the key and, for a misspelling, the nearest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import tomllib

from .errors import ConfigError
from .models.config import (
    ADAPTER_FILE,
    ADAPTER_LANGUAGE,
    FINE_TUNING_FIELDS,
    RECIPE_FIELDS,
    VOCAB_FIELDS,
    EncoderConfig,
    encoder_problem,
)

# The characters the cards' commands pass as --chars_to_ignore (data.chars_to_ignore's default).
RECIPE_CHARS_TO_IGNORE = ',?.!-;:"“%‘”�'


# A field whose type is a Literal takes one of its values, and load_config checks it against them: the
# choices are declared once, on the field.
Sampler = Literal["buckets", "group_by_length"]  # fastctc/data/batching.py: SAMPLER_CLASSES
SAMPLERS = typing.get_args(Sampler)

# [model] sets the run's model settings (ModelConfig's own fields) and any field of the encoder's one
# description, EncoderConfig (fastctc/models/config.py declares and documents each field once), but
# the two the run's vocabulary sets.
ENCODER_KEYS = tuple(f.name for f in dataclasses.fields(EncoderConfig) if f.name not in VOCAB_FIELDS)
_ENCODER_TYPES = typing.get_type_hints(EncoderConfig)
_ENCODER_DEFAULTS = dataclasses.asdict(EncoderConfig())


class _GivenKeys(Mapping):
    """EncoderKeys read as a mapping: the keys [model] sets (those not None), as given."""

    def __getitem__(self, key: str) -> object:
        value = getattr(self, key) if key in ENCODER_KEYS else None
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> typing.Iterator[str]:
        return (k for k in ENCODER_KEYS if getattr(self, k) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _toml_form(annotation: object) -> object:
    """A field type as TOML writes its values: a tuple is a list."""
    return list[typing.get_args(annotation)[0]] if typing.get_origin(annotation) is tuple else annotation


# [model]'s encoder keys: one field per ENCODER_KEYS, typed as EncoderConfig's field (as TOML writes it),
# or None: not set, so the encoder keeps EncoderConfig's default or, beside a checkpoint, its config.json's.
EncoderKeys = dataclasses.make_dataclass(
    "EncoderKeys",
    [(k, _toml_form(_ENCODER_TYPES[k]) | None, field(default=None)) for k in ENCODER_KEYS],
    bases=(_GivenKeys,),
)


@dataclass
class ModelConfig:
    # A Transformers-format checkpoint directory (config.json + safetensors): the encoder is its
    # config.json's, and [model] may set only its fine-tuning fields (dropouts, SpecAugment). Empty =
    # train from scratch: the encoder is EncoderConfig's defaults with whatever [model] sets.
    checkpoint: str = ""
    freeze_feature_encoder: bool = True
    # auto: the checkpoint's convention (layer-norm feature encoders get the attention mask, group-norm
    # ones see padding as audio, as their preprocessor's return_attention_mask=False)
    attention_mask: Literal["auto", "on", "off"] = "auto"
    gradient_checkpointing: bool = False  # recompute transformer layers in backward to save memory
    # true: the head gets <s> and </s> outputs after [PAD], as the recipe's tokenizer adds them (head =
    # vocabulary + 2; never a target). false (fastctc): no outputs that no target ever asks for
    bos_eos_tokens: bool = False
    # MMS adapters (README: MMS adapters). all: every parameter learns (the feature encoder too, unless
    # frozen above); adapters: only the attention adapters and the CTC head learn, as
    # run_speech_recognition_ctc_adapter.py trains them; the rest is frozen and not in the optimizer
    train_only: Literal["all", "adapters"] = "all"
    # a language's adapter and head to start from: CHECKPOINT/adapter.<adapter_language>.safetensors, read
    # over the checkpoint's own ("" = the checkpoint's own, as the adapter script starts)
    adapter_language: str = ""
    # the adapter script's --target_language: the export also writes adapter.<target_language>.safetensors
    # (the adapters and the head) into model/ and best/, for Wav2Vec2ForCTC.load_adapter
    target_language: str = ""
    # The EncoderConfig fields [model] sets: in TOML, keys of [model] itself; resolve_encoder applies them
    encoder: EncoderKeys = field(default_factory=EncoderKeys)


@dataclass
class DataConfig:
    corpus: Literal["synthetic", "timit", "librispeech", "manifest", "fsdd"] = "synthetic"
    # timit / librispeech: the corpus folder as distributed; manifest: "" (paths are used as given)
    # or a folder the manifest paths are relative to
    root: str = ""
    # timit: train | test (the cards), or the phone-recognition protocol: train-nosa (462 speakers,
    # SA sentences left out), dev (50 speakers), core-test (24 speakers); librispeech: subsets joined
    # with "+" (train-clean-100+train-clean-360); manifest: a .jsonl or .tsv file (relative to root);
    # synthetic: ignored
    train: str = "train"
    eval: str = "eval"
    # targets: chars (the transcript) or phones (timit: each utterance's .PHN; manifest: the text holds
    # space-separated phones). phone_set: the training set (Lee & Hon's foldings of TIMIT's 61);
    # score_phone_set: the set PER is computed on (the standard protocol trains on 48, scores on 39)
    targets: Literal["chars", "phones"] = "chars"
    phone_set: Literal[61, 48, 39] = 48
    score_phone_set: Literal[61, 48, 39] = 39
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
    long_utterances: Literal["skip", "crop"] = "skip"  # training split only; eval keeps every utterance
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
    sampler: Sampler = "buckets"
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
    schedule: Literal["linear", "tri_stage"] = "linear"
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
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0  # CPU threads for torch; 0 = torch's default
    # auto: bf16 autocast on GPUs that support it, else fp16 + GradScaler; fp32 on CPU
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: Literal["auto", "on", "off"] = "auto"  # torch.compile the model; auto: on for CUDA, off on CPU
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
    # own (fastctc): the batch order from numpy per epoch, SpecAugment spans drawn on the device with torch.
    # recipe: the Trainer's own draws for train.seed, draw for draw (train/recipe_streams.py): its numpy
    # SpecAugment spans, on the host, and with data.sampler = group_by_length its LengthGroupedSampler's
    # torch.randperm (buckets keep their own order). Needs one process, grad_accum 1, no speed perturbation
    random_streams: Literal["own", "recipe"] = "own"
    # fairseq's freeze_finetune_updates: for this many optimizer steps only the CTC head learns; the encoder
    # runs without gradient, and its weights and optimizer state stay untouched. 0 = off
    freeze_finetune_steps: int = 0
    # a running average of the weights, kept in fp32 on the device, saved in the checkpoint and evaluated
    # beside the model at every eval (best/ exports whichever scores better): off | ema (each step:
    # average += (1 - ema_decay) * (weights - average)) | mean (icefall's model_avg: the mean of the
    # weights every average_period steps since the start)
    weight_average: Literal["off", "ema", "mean"] = "off"
    ema_decay: float = 0.999
    average_period: int = 200  # icefall's default
    # Frozen features computed once: with model.freeze_feature_encoder, each utterance's conv-stack output
    # is computed the first time a batch holds it, then reused by every later step and evaluation, where
    # that is exact (train/feature_cache.py: not with waveform augmentation, nor for a group-norm stack
    # unless train.padding_invariant). auto: on where exact, on the device if it fits, else pinned host
    # memory, else disk | off | device | host | disk (models/frozen_features.py: the tiers)
    feature_cache: Literal["auto", "off", "device", "host", "disk"] = "auto"


@dataclass
class AugmentConfig:
    """On-device waveform augmentation of the training split (fastctc/data/augment.py); every probability
    0 = off, the cards' recipe. Applied in this order: speed, reverberation, noise; then each utterance is
    normalised again when data.do_normalize."""

    # speed perturbation: with probability speed_prob a batch is resampled by one factor drawn uniformly
    # from speed_factors (one speed per batch, as SpeechBrain's SpeedPerturb); > 1 is faster (shorter).
    # Each factor is a ratio of integers up to 100 (0.9 = 9/10), resampled by a windowed-sinc filter
    speed_prob: float = 0.0
    speed_factors: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])
    # reverberation: each utterance, with probability rir_prob, convolved with a room impulse response
    # drawn from the audio files under rir_dir (each cropped to rir_max_s from its direct path, unit energy)
    rir_prob: float = 0.0
    rir_dir: str = ""
    rir_max_s: float = 1.0
    # additive noise: each utterance, with probability noise_prob, mixed with a random stretch of a file
    # drawn from noise_dir (looped when shorter) at an SNR drawn uniformly from snr_db = [low, high] dB
    noise_prob: float = 0.0
    noise_dir: str = ""
    snr_db: list[float] = field(default_factory=lambda: [5.0, 20.0])

    @property
    def enabled(self) -> bool:
        return self.speed_prob > 0 or self.rir_prob > 0 or self.noise_prob > 0


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


_SECTION_CLASSES = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "augment": AugmentConfig,
}
_HINTS = {section: typing.get_type_hints(cls) for section, cls in _SECTION_CLASSES.items()}
_ENCODER_KEY_HINTS = typing.get_type_hints(EncoderKeys)

# The recipe's conventions where fastctc's defaults depart from them, as --set overrides: `fastctc bench
# recipe --recipe-exact` trains the fastctc side with these (README: what each departure buys)
RECIPE_EXACT = (
    "data.trailing_delimiter=true",
    "model.bos_eos_tokens=true",
    "data.sampler=group_by_length",
    "train.zero_infinity=false",
    "train.random_streams=recipe",
)


def _nearest(name: str, options: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else f"; valid: {', '.join(sorted(options))}"


def _spelled(choices: typing.Sequence[object]) -> str:
    """'a, b or c'."""
    words = [str(c) for c in choices]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _choice_problem(key: str, value: object, choices: typing.Sequence[object]) -> str | None:
    """What is wrong with `value` for a field whose type is Literal[*choices], or None. A name close to
    one of the choices reads as a misspelling of it."""
    if value in choices:
        return None
    near = (
        difflib.get_close_matches(value, [str(c) for c in choices], n=1, cutoff=0.5) if isinstance(value, str) else []
    )
    if near:
        name = key.rpartition(".")[2]
        return f"{key}: unknown {name} {value!r}; did you mean {near[0]!r}? (must be {_spelled(choices)})"
    return f"{key}: must be {_spelled(choices)}, got {value!r}"


def _coerce(key: str, value: object, annotation: object) -> object:
    """Check `value` against the field's type; ints are accepted where a float is expected, and floats
    must be finite (TOML spells inf and nan, and 1e999 reads as inf: a learning rate of inf trains NaNs).
    A Literal field's value is checked for its type here, for its choices by _validate."""
    if typing.get_origin(annotation) is types.UnionType:  # an encoder key's `T | None`; TOML has no null
        (annotation,) = (a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is Literal:
        annotation = type(typing.get_args(annotation)[0])
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
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


def speed_ratio(factor: float) -> tuple[int, int]:
    """(a, b) with factor == a / b in lowest terms, b <= 100 (the resampler's phases); ValueError otherwise."""
    ratio = Fraction(factor).limit_denominator(100)
    if not math.isclose(ratio, factor, rel_tol=0, abs_tol=1e-9):
        raise ValueError(f"{factor} is not a ratio of integers up to 100")
    return ratio.numerator, ratio.denominator


def _validate_augment(a: AugmentConfig, need, check_paths: bool) -> None:
    for key in ("speed_prob", "rir_prob", "noise_prob"):
        need(0.0 <= getattr(a, key) <= 1.0, f"augment.{key}", f"must be in [0, 1] (0 = off), got {getattr(a, key)}")
    need(bool(a.speed_factors), "augment.speed_factors", "must list at least one factor, e.g. [0.9, 1.0, 1.1]")
    for i, f in enumerate(a.speed_factors):
        need(0.5 <= f <= 2.0, f"augment.speed_factors[{i}]", f"must be in [0.5, 2] (1.1 = 10% faster), got {f}")
        try:
            speed_ratio(f)
        except ValueError as e:
            need(False, f"augment.speed_factors[{i}]", f"{e}; use one such as 0.9, 0.95, 1.05 or 1.1")
    for key, prob in (("rir_dir", a.rir_prob), ("noise_dir", a.noise_prob)):
        folder = getattr(a, key)
        need(
            prob == 0 or bool(folder),
            f"augment.{key}",
            f"augment.{key.split('_')[0]}_prob={prob} needs a folder of audio files, e.g. --set augment.{key}=/data/{key[:-4]}",
        )
        if check_paths:
            need(not folder or Path(folder).is_dir(), f"augment.{key}", f"{folder!r} is not a directory")
    need(a.rir_max_s > 0, "augment.rir_max_s", f"must be > 0 seconds, got {a.rir_max_s}")
    need(
        len(a.snr_db) == 2 and a.snr_db[0] <= a.snr_db[1],
        "augment.snr_db",
        f"must be [low, high] in dB with low <= high, got {a.snr_db}",
    )


def _need(ok: bool, key: str, what: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {what}")


def _check_choices(cfg: RunConfig) -> None:
    """Every Literal-typed field holds one of its declared values."""
    for section, hints in _HINTS.items():
        for key, annotation in hints.items():
            if typing.get_origin(annotation) is Literal:
                problem = _choice_problem(
                    f"{section}.{key}", getattr(getattr(cfg, section), key), typing.get_args(annotation)
                )
                if problem:
                    raise ConfigError(problem)


def _check_model(m: ModelConfig, check_paths: bool) -> None:
    if m.checkpoint and check_paths:
        _need(
            Path(m.checkpoint).is_dir(),
            "model.checkpoint",
            f"{m.checkpoint!r} is not a directory; point it at a Transformers-format checkpoint folder "
            "(config.json + model.safetensors), or leave it empty to train from scratch",
        )
    _check_adapter_keys(m, check_paths)
    # the given values over the defaults; beside a checkpoint only its fine-tuning ones: resolve_encoder
    # compares the shape keys with its config.json, which is read when the run starts
    given = {k: v for k, v in m.encoder.items() if not m.checkpoint or k in FINE_TUNING_FIELDS}
    problem = encoder_problem({**_ENCODER_DEFAULTS, **given}, prefix="model.", run=True)
    if problem:
        raise ConfigError(problem)


def _check_adapter_keys(m: ModelConfig, check_paths: bool) -> None:
    """model.adapter_language, target_language and train_only (whether the encoder has adapters is known
    once the checkpoint's config.json is read: resolve_encoder)."""
    for key in ("adapter_language", "target_language"):
        value = getattr(m, key)
        _need(
            not value or ADAPTER_LANGUAGE.fullmatch(value) is not None,
            f"model.{key}",
            f"{value!r} names a file ({ADAPTER_FILE.format(value)}): use letters, digits, '_' or '-', e.g. 'tur'",
        )
    if m.adapter_language:
        _need(
            bool(m.checkpoint),
            "model.adapter_language",
            f"reads {ADAPTER_FILE.format(m.adapter_language)} from model.checkpoint; set model.checkpoint",
        )
        file = Path(m.checkpoint) / ADAPTER_FILE.format(m.adapter_language)
        if check_paths:
            _need(
                file.is_file(),
                "model.adapter_language",
                f"{file} does not exist; name a language whose adapter file the checkpoint holds, or leave "
                "model.adapter_language empty to start from the checkpoint's own adapters",
            )
    _need(
        m.train_only != "adapters" or bool(m.target_language),
        "model.target_language",
        "model.train_only = 'adapters' exports the trained adapter as adapter.<target_language>.safetensors; "
        "name its language, e.g. --set model.target_language=tur",
    )


def _check_corpus(d: DataConfig, m: ModelConfig) -> None:
    """The corpus, its splits and its targets (and the head that suits them)."""
    _need(d.synthetic_train_size > 0, "data.synthetic_train_size", f"must be > 0, got {d.synthetic_train_size}")
    _need(d.synthetic_eval_size > 0, "data.synthetic_eval_size", f"must be > 0, got {d.synthetic_eval_size}")
    _need(d.sample_rate == 16_000, "data.sample_rate", f"the encoders expect 16000 Hz, got {d.sample_rate}")
    if d.corpus in ("timit", "librispeech", "fsdd"):
        _need(
            bool(d.root),
            "data.root",
            f"data.corpus={d.corpus!r} needs the corpus folder, e.g. --set data.root=/data/{d.corpus}",
        )
    for key in ("train", "eval"):
        _need(
            d.corpus == "synthetic" or bool(getattr(d, key)), f"data.{key}", "must name a split, subsets or a manifest"
        )
    _need(
        d.targets == "chars" or d.corpus in ("timit", "manifest"),
        "data.targets",
        f"phones come from TIMIT's .PHN files or a manifest of phone strings; data.corpus={d.corpus!r} has none",
    )
    _need(
        d.score_phone_set <= d.phone_set,
        "data.score_phone_set",
        f"must be data.phone_set={d.phone_set} or a smaller set folded from it (61 -> 48 -> 39), "
        f"got {d.score_phone_set}",
    )
    _need(
        not d.trailing_delimiter or d.targets == "chars",
        "data.trailing_delimiter",
        "phone targets have no word delimiter; set it false",
    )
    _need(
        not m.bos_eos_tokens or d.targets == "chars",
        "model.bos_eos_tokens",
        "phone targets use the fixed phone set + blank; set it false",
    )


def _check_loading(d: DataConfig) -> None:
    """Audio screening, batching and the loader."""
    _need(d.max_channels >= 1, "data.max_channels", f"must be >= 1, got {d.max_channels}")
    _need(d.max_duration_s >= 0, "data.max_duration_s", f"must be >= 0 (0 = no cap), got {d.max_duration_s}")
    _need(
        d.long_utterances == "skip" or d.max_duration_s > 0,
        "data.long_utterances",
        "crop needs a cap: set data.max_duration_s > 0",
    )
    _need(
        d.batch_seconds >= 0,
        "data.batch_seconds",
        f"must be >= 0 (0 = train.batch_size utterances), got {d.batch_seconds}",
    )
    _need(
        d.batch_seconds == 0 or d.max_duration_s == 0 or d.batch_seconds >= d.max_duration_s,
        "data.batch_seconds",
        f"must hold one utterance of data.max_duration_s={d.max_duration_s}, got {d.batch_seconds}",
    )
    _need(d.pad_lengths >= 0, "data.pad_lengths", f"must be >= 0 (0 = one per batch), got {d.pad_lengths}")
    _need(
        d.sampler != "group_by_length" or d.batch_seconds == 0,
        "data.sampler",
        "group_by_length cuts batches of train.batch_size utterances; set data.batch_seconds = 0",
    )
    _need(d.num_workers >= 0, "data.num_workers", f"must be >= 0, got {d.num_workers}")
    _need(d.prefetch_factor >= 1, "data.prefetch_factor", f"must be >= 1, got {d.prefetch_factor}")


def _check_optim_and_train(o: OptimConfig, t: TrainConfig) -> None:
    _need(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    _need(
        len(o.betas) == 2 and all(0.0 <= b < 1.0 for b in o.betas),
        "optim.betas",
        f"must be two values in [0, 1), got {o.betas}",
    )
    _need(o.eps > 0, "optim.eps", f"must be > 0, got {o.eps}")
    _need(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    _need(o.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {o.warmup_steps}")
    _need(o.max_grad_norm > 0, "optim.max_grad_norm", f"must be > 0, got {o.max_grad_norm}")
    _need(t.epochs > 0, "train.epochs", f"must be > 0, got {t.epochs}")
    _need(t.max_steps >= 0, "train.max_steps", f"must be >= 0 (0 = no cap), got {t.max_steps}")
    _need(t.batch_size > 0, "train.batch_size", f"must be > 0, got {t.batch_size}")
    _need(t.eval_batch_size > 0, "train.eval_batch_size", f"must be > 0, got {t.eval_batch_size}")
    _need(t.log_every > 0, "train.log_every", f"must be > 0, got {t.log_every}")
    _need(t.eval_every >= 0, "train.eval_every", f"must be >= 0 (0 = only at the end), got {t.eval_every}")
    _need(t.threads >= 0, "train.threads", f"must be >= 0, got {t.threads}")
    _need(t.grad_accum > 0, "train.grad_accum", f"must be > 0, got {t.grad_accum}")
    _need(t.checkpoint_every >= 0, "train.checkpoint_every", f"must be >= 0, got {t.checkpoint_every}")


def _validate(cfg: RunConfig, check_paths: bool) -> None:
    """The whole config, once every file and --set value is applied (a later value wins over an earlier one)."""
    _check_choices(cfg)
    _check_model(cfg.model, check_paths)
    _check_corpus(cfg.data, cfg.model)
    _check_loading(cfg.data)
    _check_optim_and_train(cfg.optim, cfg.train)
    _validate_augment(cfg.augment, _need, check_paths)
    _validate_fine_tuning(cfg.optim, cfg.train)
    _check_streams(cfg)


def _check_streams(cfg: RunConfig) -> None:
    """train.random_streams = recipe replays the Trainer's draws: its sampler, its unchanged lengths."""
    if cfg.train.random_streams != "recipe":
        return
    _need(
        cfg.augment.speed_prob == 0,
        "train.random_streams",
        "recipe draws SpecAugment spans on the host from each utterance's length, which speed perturbation "
        "changes on the device; set augment.speed_prob = 0 (or random_streams = own)",
    )
    _need(
        cfg.train.grad_accum == 1,
        "train.random_streams",
        "recipe replays the Trainer's draws for one batch per step; set train.grad_accum = 1 (or random_streams = own)",
    )


def _validate_fine_tuning(o: OptimConfig, t: TrainConfig) -> None:
    """fairseq's and icefall's fine-tuning options: the schedule, the frozen encoder, the weight average."""
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
    _need(0 < t.ema_decay < 1, "train.ema_decay", f"must be in (0, 1), got {t.ema_decay}")
    _need(t.average_period >= 1, "train.average_period", f"must be >= 1, got {t.average_period}")


def _apply(cfg: RunConfig, section: str, key: str, value: object, where: str) -> None:
    if section not in _SECTION_CLASSES:
        raise ConfigError(f"{where}unknown section [{section}]{_nearest(section, _SECTION_CLASSES)}")
    target, hints = getattr(cfg, section), _HINTS[section]
    if section == "model":  # its own keys, then the encoder's (see ModelConfig.encoder)
        hints = {k: t for k, t in hints.items() if k != "encoder"} | _ENCODER_KEY_HINTS
        target = cfg.model.encoder if key in _ENCODER_KEY_HINTS else target
    if key not in hints:
        raise ConfigError(f"{where}unknown key {section}.{key}{_nearest(key, hints)}")
    try:
        value = _coerce(f"{section}.{key}", value, hints[key])
    except ConfigError as e:  # name where the value came from, as for an unknown key
        raise ConfigError(f"{where}{e}") from None
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


def load_config(
    path: str | Path | None = None, overrides: typing.Sequence[str] = (), check_paths: bool = True
) -> RunConfig:
    """Read a TOML config (or start from defaults), apply `section.key=value` overrides, validate.

    `check_paths=False` checks everything but whether the folders the config names (model.checkpoint,
    augment.rir_dir, augment.noise_dir) exist: for a caller that learns a path before it writes the folder
    (bench recipe --make-checkpoint), which then loads the config again with the checks."""
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
    _validate(cfg, check_paths)
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
    config.json (`checkpoint`, as hf_weights.read_encoder_config reads it) with the recipe's fine-tuning
    values (RECIPE_FIELDS: its script passes them, overriding the checkpoint's); then what [model]
    sets. vocab_size and pad_token_id are the vocabulary's, set when the model is built."""
    if checkpoint is None:
        base = EncoderConfig()
    else:
        base = dataclasses.replace(checkpoint, **{k: _ENCODER_DEFAULTS[k] for k in RECIPE_FIELDS})
        for key, value in model.encoder.items():  # the shape is the checkpoint's: a different value is an error
            theirs = getattr(checkpoint, key)
            if key == "adapter_attn_dim" and theirs is None:
                continue  # fresh adapters over a checkpoint without (the adapter script's --adapter_attn_dim)
            if key not in FINE_TUNING_FIELDS and (tuple(value) if isinstance(value, list) else value) != theirs:
                raise ConfigError(
                    f"model.{key}: {_toml_value(value)} here, but the checkpoint's config.json says "
                    f"{_toml_value(list(theirs) if isinstance(theirs, tuple) else theirs)}, and its encoder's shape is "
                    f"its own; drop model.{key}, or leave model.checkpoint empty to train from scratch (beside a "
                    f"checkpoint [model] may change {', '.join(FINE_TUNING_FIELDS)})"
                )
    values = {**dataclasses.asdict(base), **model.encoder}
    problem = encoder_problem(values, prefix="model.", run=True) or _adapter_use_problem(model, values)
    if problem:
        raise ConfigError(problem)
    return EncoderConfig(**values)


def _adapter_use_problem(model: ModelConfig, encoder: dict) -> str | None:
    """The adapter keys that need an encoder with adapters, when it has none."""
    if encoder["adapter_attn_dim"] is not None:
        return None
    used = [
        f"model.{k} = {_toml_value(getattr(model, k))}"
        for k in ("train_only", "adapter_language", "target_language")
        if getattr(model, k) not in ("", "all")
    ]
    if not used:
        return None
    where = "the checkpoint's config.json has no adapter_attn_dim" if model.checkpoint else "the encoder has none"
    return (
        f"model.adapter_attn_dim: {', '.join(used)} needs MMS attention adapters, and {where}; set "
        "model.adapter_attn_dim = 16 (the adapter script's default) to add fresh ones"
    )
