"""Frozen features computed once (fastctc.models.frozen_features, fastctc.train.feature_cache): the store
against the conv stack run on each utterance alone, its tiers, when the run turns it on or off, and the
done-when check: training and evaluation with the cache equal them without it (fp32, CPU)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fastctc.config import load_config
from fastctc.errors import ConfigError
from fastctc.models import CTCModel, EncoderConfig, save_pretrained
from fastctc.models.frozen_features import FrozenFeatureStore, frames_of
from fastctc.train.feature_cache import cache_off_reason
from fastctc.train.loop import StopRequest, loop
from fastctc.train.run import prepare_run

TOKENS = ["|", *"abcdefghijklmnopqrstuvwxyz", "[UNK]", "[PAD]"]
LOSS_RTOL = 1e-5  # issue 22's bound (a conv over a differently shaped batch may round differently)


def encoder(norm: str) -> EncoderConfig:
    """tiny-scratch's conv stack (kernels, strides) at 16 channels, two small transformer layers."""
    return EncoderConfig(
        vocab_size=len(TOKENS),
        pad_token_id=len(TOKENS) - 1,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        conv_dim=(16,) * 7,
        feat_extract_norm=norm,
        do_stable_layer_norm=norm == "layer",
        conv_bias=norm == "layer",
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        mask_time_prob=0.1,
        mask_time_length=2,
        mask_time_min_masks=0,
    )


def utterances(n: int = 6, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(int(n_), generator=g) for n_ in torch.randint(2000, 9000, (n,), generator=g)]


def batch_of(audios, rows):
    lengths = torch.tensor([len(audios[i]) for i in rows])
    waves = torch.zeros(len(rows), int(lengths.max()) + 700)  # padded past the longest, as a ladder rung
    for b, i in enumerate(rows):
        waves[b, : len(audios[i])] = audios[i]
    return waves, lengths


@pytest.mark.parametrize("norm, tier", [("layer", "device"), ("group", "host"), ("layer", "disk")])
def test_the_store_gathers_what_the_conv_stack_gives_each_utterance_alone(tmp_path, norm, tier):
    torch.manual_seed(0)
    model = CTCModel(encoder(norm)).eval()
    audios = utterances()
    ids = [f"u{i}" for i in range(len(audios))]
    path = tmp_path / "cache" / "train.bin"
    store = FrozenFeatureStore(
        ids, [len(a) for a in audios], model.config, torch.float32, torch.device("cpu"), tier, path
    )
    if tier == "disk":
        assert not path.exists()  # unlinked once mapped: nothing to clean up however the run ends
    alone = [model.conv_features(a[None], torch.tensor([len(a)]))[0] for a in audios]  # (T_i, C) reference
    calls = []

    def features(rows):
        waves, lengths = batch_of(audios, rows)
        out = store.features(
            [ids[i] for i in rows],
            lengths,
            waves.shape[1],
            lambda: calls.append(rows) or model.conv_features(waves, lengths),
        )
        n = frames_of(lengths.numpy(), model.config)
        assert out.shape == (len(rows), frames_of(np.array([waves.shape[1]]), model.config)[0], 16)
        assert out.is_contiguous()  # stored or gathered, one layout: a compiled step does not recompile
        for b, i in enumerate(rows):
            torch.testing.assert_close(out[b, : n[b]], alone[i], rtol=1e-5, atol=1e-6)
        return out, n

    with torch.no_grad():
        features([0, 1, 2])
        features([3, 4])
        out, n = features([4, 2, 0])  # every row stored: gathered, in another batch and order
        assert len(calls) == 2
        assert all(out[b, n[b] :].eq(0).all() for b in range(3))  # padded frames: the zero row
        features([5, 1])  # one row new: the batch runs the conv stack, and stores its new row
        features([5, 3])
    assert len(calls) == 3 and store.filled.all()


def test_a_longer_load_than_listed_is_never_stored_and_a_stand_in_batch_passes():
    model = CTCModel(encoder("layer")).eval()
    audio = torch.randn(8000)
    store = FrozenFeatureStore(["a"], [4000], model.config, torch.float32, torch.device("cpu"))  # listed shorter
    calls = []

    def compute():
        calls.append(1)
        return model.conv_features(audio[None])

    with torch.no_grad():
        for _ in range(2):
            store.features(["a"], torch.tensor([8000]), 8000, compute)
        store.features([], torch.tensor([8000]), 8000, compute)  # no ids (DDP's stand-in batch): computed
    assert len(calls) == 3 and not store.filled.any()


def config(*overrides):
    """The defaults (the recipe's frozen feature encoder, fp32 on CPU, synthetic speech) with `overrides`."""
    return load_config(None, list(overrides))


@pytest.mark.parametrize(
    "overrides, norm, use_mask, off",
    [
        ((), "layer", True, None),
        (("train.feature_cache=off",), "layer", True, "train.feature_cache = off"),
        (("model.freeze_feature_encoder=false",), "layer", True, "the conv stack trains"),
        (("augment.noise_prob=0.5", "augment.noise_dir=."), "layer", True, "waveform augmentation on"),
        ((), "group", False, "group-norm conv stack normalises over the whole padded batch"),
        (("train.padding_invariant=true",), "group", False, None),
        ((), "layer", False, "reads padded frames as audio"),
    ],
)
def test_the_cache_is_on_only_where_it_is_exact(overrides, norm, use_mask, off):
    reason = cache_off_reason(config(*overrides), encoder(norm), use_mask)
    assert (reason is None) if off is None else off in reason, reason


def test_the_cache_is_off_for_the_fbank_front_end():
    """w2v-BERT has no conv stack: its fbank front end has no parameters, so nothing is cached even where
    caching would be exact (the recipe's frozen front end, padding_invariant, an attention mask)."""
    w2v_bert = EncoderConfig(
        model_type="wav2vec2-bert",
        position_embeddings_type="relative_key",
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=48,
    )
    reason = cache_off_reason(config("train.padding_invariant=true"), w2v_bert, True)
    assert reason is not None and "fbank front end has no parameters" in reason, reason


def test_a_tier_asked_for_where_it_is_not_exact_is_refused_before_any_data(tmp_path):
    cfg = config("train.feature_cache=disk", "model.feat_extract_norm=group", "model.do_stable_layer_norm=false")
    with pytest.raises(ConfigError, match="train.feature_cache: disk asked for, but caching is not exact here"):
        prepare_run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
    with pytest.raises(ConfigError, match="train.feature_cache: must be auto, off, device, host or disk"):
        config("train.feature_cache=gpu")


# ---- done when: training and evaluation with the cache equal them without it --------------------------


@pytest.fixture(scope="module", params=["layer", "group"])
def checkpoint(request, tmp_path_factory):
    """A tiny random checkpoint (Transformers format), saved as the cards' starting points are: its
    random head keeps the hypotheses non-empty over a short fine-tune, so comparing them means something."""
    norm = request.param
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp(f"ckpt-{norm}")
    save_pretrained(CTCModel(encoder(norm)), path, TOKENS, do_normalize=True, return_attention_mask=norm == "layer")
    return norm, path


def fine_tune(checkpoint, out: Path, cache: str, steps: int, stop_at: int | None = None, resume: bool = False):
    norm, path = checkpoint
    cfg = config(
        f"model.checkpoint={path}",
        "model.hidden_dropout=0.1",  # dropout and SpecAugment on: the RNG streams must not move either
        "data.synthetic_train_size=8",  # epochs of 2 steps: the store fills in the first, gathers after
        "data.synthetic_eval_size=6",
        "data.sampler=group_by_length",  # the recipe's: batches mix anew each epoch, so a row is gathered into other paddings
        "train.batch_size=4",
        "train.eval_batch_size=4",
        "train.epochs=1000",  # max_steps ends the run
        f"train.max_steps={steps}",
        f"train.eval_every={2 * steps // 5}",  # two evaluations before the final one
        "train.log_every=1",
        "train.checkpoint_every=0",
        "train.threads=1",
        "optim.lr=5e-5",  # low: the random head stays off the all-blank output a CTC start falls into
        "optim.warmup_steps=5",
        f"train.feature_cache={cache}",
        *(["train.padding_invariant=true"] if norm == "group" else []),
    )
    run = prepare_run(cfg, out, resume)
    calls = [0]
    run.model.feature_extractor.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    result = loop(run, StopRequest(at_step=stop_at))
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = {e["step"]: e["loss"] for e in events if e["event"] == "train"}
    evals = [e["loss"] for e in events if e["event"] == "eval"]
    return run, result, losses, evals, calls[0]


def hypotheses(out: Path) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in (out / "report" / "utterances.jsonl").read_text().splitlines()]
    return sorted((r["id"], r["hyp"]) for r in rows)


def test_training_and_evaluation_with_the_cache_equal_them_without_it(checkpoint, tmp_path, capsys):
    """Issue 22's done-when: 50 fp32 steps (epochs of 2 batches), three evaluations (2 batches each); the
    losses within 1e-5 relative, the final-eval hypotheses identical. Measured (printed): layer norm, every
    loss bit-identical (a conv row does not depend on its batch); group norm under padding_invariant, the
    masked statistics sum over a differently padded length, so a gathered row may differ from a
    recomputed one in the last bit."""
    steps = 50
    run, cached, a, eval_a, conv_calls = fine_tune(checkpoint, tmp_path / "cached", "auto", steps)
    assert run.features is not None and run.features.train.filled.all() and run.features.eval.filled.all()
    assert "frozen features computed once: 8 train + 6 eval utterances" in capsys.readouterr().out
    assert conv_calls == 2 + 2  # the first epoch's batches and the first evaluation's, then never again
    _, plain, b, eval_b, plain_calls = fine_tune(checkpoint, tmp_path / "plain", "off", steps)
    assert plain_calls == steps + 3 * 2
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    worst = max(abs(a[s] - b[s]) / abs(b[s]) for s in a)
    with capsys.disabled():
        print(f"\n{checkpoint[0]} norm: worst relative loss difference over {steps} steps {worst:.2e}")
    assert worst <= LOSS_RTOL
    assert len(eval_a) == len(eval_b) == 3
    for x, y in zip(eval_a, eval_b):
        assert abs(x - y) <= LOSS_RTOL * abs(y)
    hyps = hypotheses(tmp_path / "cached")
    assert hyps == hypotheses(tmp_path / "plain") and sum(bool(h) for _, h in hyps) >= len(hyps) // 2
    assert cached["wer"] == plain["wer"]


def test_a_resumed_run_with_the_cache_equals_the_uninterrupted_one(checkpoint, tmp_path):
    """Stopped at step 5 (mid-epoch 3) and resumed: the cache is rebuilt from there, so a group-norm row
    recomputed in its step-6 batch may differ in the last bit from the row the uninterrupted run gathered;
    the losses and the evaluation agree to float32 rounding (a few ulp: 1e-6 relative)."""
    _, full, a, _, _ = fine_tune(checkpoint, tmp_path / "full", "auto", 8)
    fine_tune(checkpoint, tmp_path / "split", "auto", 8, stop_at=5)
    _, resumed, b, _, _ = fine_tune(checkpoint, tmp_path / "split", "auto", 8, resume=True)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-6, abs=0), (step, a[step], b[step])
    assert resumed["wer"] == full["wer"] and resumed["loss"] == pytest.approx(full["loss"], rel=1e-6, abs=0)


@pytest.mark.parametrize(
    "extra",
    [["train.precision=bf16"], pytest.param(["train.compile=on"], marks=pytest.mark.slow)],
    ids=["bf16-autocast", "compiled"],
)
def test_cpu_checks_of_the_gpu_paths_with_the_cache(checkpoint, tmp_path, extra):
    """bf16 autocast (the store then holds bf16) and torch.compile (the step compiled on gathered features,
    the conv stack compiled apart), the CUDA defaults, on CPU: 6 steps, so epochs 2 and 3 gather.
    SpecAugment off: inductor draws its random numbers differently from eager. Compiled: slow (inductor
    builds C++ kernels); the fast suite checks the cached step's graphs in test_compile_shapes."""
    norm, path = checkpoint
    common = [
        f"model.checkpoint={path}",
        "data.synthetic_train_size=8",
        "data.synthetic_eval_size=4",
        "train.batch_size=4",
        "train.max_steps=6",
        "train.log_every=1",
        "train.threads=1",
        "optim.warmup_steps=1",
        "model.mask_time_prob=0.0",
        *(["train.padding_invariant=true"] if norm == "group" else []),
    ]
    run = prepare_run(config(*common, *extra), tmp_path / "run")
    assert run.features is not None
    assert run.features.train.dtype == (torch.bfloat16 if "train.precision=bf16" in extra else torch.float32)
    result = loop(run, StopRequest())
    assert run.features.train.filled.all() and math.isfinite(result["loss"])
    loop(prepare_run(config(*common, "train.feature_cache=off"), tmp_path / "eager"), StopRequest())
    ours, eager = (
        {
            e["step"]: e["loss"]
            for e in map(json.loads, (tmp_path / d / "metrics.jsonl").read_text().splitlines())
            if e["event"] == "train"
        }
        for d in ("run", "eager")
    )
    assert sorted(ours) == list(range(1, 7))
    tol = 1e-3 if "train.compile=on" in extra else 5e-2  # as test_train_loop's CPU checks of these paths
    for step in ours:
        assert abs(ours[step] - eager[step]) <= tol * max(1.0, abs(eager[step])), (step, ours[step], eager[step])


# ---- a stored batch is not read from disk ---------------------------------------------------------------


def test_a_batch_whose_features_are_all_stored_is_not_read_and_a_noted_item_always_is(tmp_path):
    """SpeechDataset.__getitems__ against its own file-reading path: the same ids, lengths and targets
    (Collator), no audio; one unstored item makes the whole batch load; an item whose load gives a note
    (here cropped past the cap) marks itself -1 and is read every epoch, so the data report counts it each time."""
    import soundfile as sf

    from fastctc.data.batching import Collator
    from fastctc.data.dataset import SpeechDataset, UtteranceInfo
    from fastctc.vocab import CharVocab

    sr, g = 16_000, np.random.default_rng(0)
    seconds = [0.4, 0.7, 1.6]  # the last is longer in the file than listed, and over the 1 s cap
    infos = []
    for i, s in enumerate(seconds):
        sf.write(tmp_path / f"u{i}.wav", g.standard_normal(int(s * sr)).astype(np.float32) * 0.1, sr)
        infos.append(UtteranceInfo(f"u{i}", str(tmp_path / f"u{i}.wav"), f"ab {i}"))
    ds = SpeechDataset(infos, ["ab c", "ba", "cab"], [0.4, 0.7, 0.9], sr, max_seconds=1.0, crop=True)
    collate = Collator(CharVocab.from_transcripts(["ab c", "ba", "cab"], delimiter=True), ladder=None, frame=320)
    read = collate(ds.__getitems__([0, 1]))
    assert read.audio and read.notes == []
    ds.stored = torch.zeros(3, dtype=torch.int64)
    ds.stored[0] = read.lengths[0]
    assert collate(ds.__getitems__([0, 1])).audio  # u1 is not stored: the batch loads, both rows
    ds.stored[1] = read.lengths[1]
    unread = collate(ds.__getitems__([0, 1]))
    assert not unread.audio and unread.ids == read.ids == ["u0", "u1"]
    assert unread.waveforms.shape == read.waveforms.shape and unread.waveforms.untyped_storage().nbytes() == 4
    for name in ("lengths", "targets", "target_lengths"):
        assert torch.equal(getattr(unread, name), getattr(read, name)), name
    assert unread.texts == read.texts and unread.unknown_chars == read.unknown_chars
    noted = collate(ds.__getitems__([2]))
    assert noted.audio and [r for r, _ in noted.notes] == ["cropped_when_loaded"] and int(ds.stored[2]) == -1
    assert collate(ds.__getitems__([0, 2])).audio  # the noted item is read again, and its note comes again


def test_training_from_files_reads_each_utterance_once_and_equals_training_without_the_cache(tmp_path):
    """From WAV files with a loader worker: after the first epoch every batch is made in this process
    without its audio (BatchLoader._source), as the DataLoader would make it from the files; the losses
    and the final evaluation equal a run without the cache, which reads every file every epoch."""
    from tiny_inference_model import write_corpus

    from fastctc.data.batching import make_loader

    torch.manual_seed(1)
    ckpt = tmp_path / "ckpt"
    save_pretrained(CTCModel(encoder("layer")), ckpt, TOKENS, do_normalize=True, return_attention_mask=True)
    manifest, _ = write_corpus(tmp_path / "corpus", n=8)
    common = [
        f"model.checkpoint={ckpt}",
        "data.corpus=manifest",
        f"data.train={manifest}",
        f"data.eval={manifest}",
        "data.num_workers=1",
        "train.batch_size=4",
        "train.eval_batch_size=4",
        "train.max_steps=6",
        "train.eval_every=4",
        "train.log_every=1",
        "train.threads=1",
        "optim.warmup_steps=1",
    ]
    runs = {}
    for cache in ("auto", "off"):
        run = prepare_run(config(*common, f"train.feature_cache={cache}"), tmp_path / cache)
        runs[cache] = (run, loop(run, StopRequest()))
    run = runs["auto"][0]
    assert run.features is not None and run.features.train.filled.all()
    unread = list(run.loader)  # epoch 3's batches: every one stored
    files = copy.copy(run.loader.loader.dataset)
    files.stored = None  # the same epoch from the files, through a worker
    read = list(make_loader(files, run.sampler, run.vocab, run.cfg.data))
    assert [b.audio for b in unread] == [False] * 2 and [b.audio for b in read] == [True] * 2
    for u, r in zip(unread, read):
        assert u.ids == r.ids and u.waveforms.shape == r.waveforms.shape
        assert torch.equal(u.lengths, r.lengths) and torch.equal(u.targets, r.targets)
    losses = [
        {
            e["step"]: e["loss"]
            for e in map(json.loads, (tmp_path / d / "metrics.jsonl").read_text().splitlines())
            if e["event"] == "train"
        }
        for d in ("auto", "off")
    ]
    assert losses[0] == losses[1] and sorted(losses[0]) == list(range(1, 7))  # layer norm: bit-identical
    assert runs["auto"][1]["wer"] == runs["off"][1]["wer"] and runs["auto"][1]["loss"] == runs["off"][1]["loss"]
