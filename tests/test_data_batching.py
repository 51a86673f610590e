"""LengthBucketSampler (coverage across ranks, equal steps, padding, determinism, resume), collation and the loader."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from data_corpus_builders import tone, write

from fastctc.config import DataConfig
from fastctc.data.batching import LengthBucketSampler, collate, make_loader, pad_ladder, padded_length
from fastctc.data.corpora import build_datasets
from fastctc.data.stats import group_by_length_batches, padded_fraction, random_batches
from fastctc.data.text import CharVocab
from fastctc.models import EncoderConfig

FRAME = EncoderConfig().frame_stride  # samples per frame of the default (wav2vec2) conv stack: 320


def timit_like(n=4620, seed=0):
    """Durations shaped like TIMIT's train split (median ~3 s, 0.9 to 7.8 s)."""
    return np.clip(np.random.default_rng(seed).lognormal(np.log(2.95), 0.3, n), 0.9, 7.8)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("batch_seconds", [0.0, 40.0])
def test_every_utterance_once_per_epoch_across_ranks_with_equal_steps(world_size, batch_seconds):
    durations = timit_like(1001, seed=world_size)  # odd count: the batches do not divide evenly
    ranks = [
        LengthBucketSampler(durations, 7, 16, batch_seconds, rank=r, world_size=world_size) for r in range(world_size)
    ]
    for epoch in (0, 3):
        per_rank = []
        for s in ranks:
            s.set_epoch(epoch)
            per_rank.append(list(s))
        assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == len(ranks[0])  # same steps everywhere
        seen = [i for batches in per_rank for b in batches for i in b]
        assert sorted(seen) == list(range(len(durations)))  # exactly once
        if batch_seconds:
            lengths = ranks[0].lengths
            assert all(
                len(b) * padded_length(lengths[b].max()) <= batch_seconds * 16000
                for batches in per_rank
                for b in batches
                if len(b) > 1
            )
        else:
            assert max(len(b) for batches in per_rank for b in batches) <= 16


def test_deterministic_given_seed_and_epoch_and_reshuffled_between_epochs():
    d = timit_like(2000)
    a, b = LengthBucketSampler(d, 42, 32), LengthBucketSampler(d, 42, 32)
    a.set_epoch(5)
    b.set_epoch(5)
    assert list(a) == list(b)
    b.set_epoch(6)
    assert list(a) != list(b)
    members = lambda s: {frozenset(x) for x in s}  # noqa: E731
    assert members(a) != members(b)  # not only the order: the batches themselves change
    assert len(list(b)) == len(list(a)) == len(a)


def test_resume_mid_epoch_yields_the_rest_of_the_same_epoch():
    d = timit_like(500)
    s = LengthBucketSampler(d, 1, 8, rank=1, world_size=2)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=11)
    assert list(s) == full[11:]


def test_longest_step_first_and_neighbouring_lengths_across_ranks():
    d = timit_like(800)
    ranks = [LengthBucketSampler(d, 3, 16, rank=r, world_size=2) for r in range(2)]
    b0, b1 = list(ranks[0]), list(ranks[1])
    L = ranks[0].lengths
    assert max(L[b0[0]].max(), L[b1[0]].max()) == L.max()
    # at each step the two ranks hold neighbours in length: no other batch's longest lies between theirs
    longest = sorted(L[b].max() for b in b0 + b1)
    for x, y in zip(b0, b1):
        lo, hi = sorted((L[x].max(), L[y].max()))
        assert np.searchsorted(longest, hi, "left") - np.searchsorted(longest, lo, "right") <= 0


def test_padding_below_random_and_at_most_half_of_group_by_length():
    d = timit_like()
    s = LengthBucketSampler(d, 42, 32)
    L = s.lengths
    ours = padded_fraction([b for step in s.epoch_batches(0) for b in step], L, padded_length)
    gbl = np.mean([padded_fraction(group_by_length_batches(L, 32, seed), L) for seed in range(3)])
    rnd = padded_fraction(random_batches(len(L), 32, 0), L)
    assert ours < 0.5 * gbl < gbl < rnd, (ours, gbl, rnd)
    assert len(s) == 145  # ceil(4620 / 32), the cards' steps per epoch


def test_pad_lengths_bounds_the_shapes_with_the_least_padding():
    d = timit_like(3000)
    s = LengthBucketSampler(d, 0, 32, pad_lengths=8)
    shapes = {padded_length(s.lengths[b].max(), s.ladder) for step in s.epoch_batches(0) for b in step}
    assert len(shapes) <= 8 and all(x % FRAME == 0 for x in shapes) and s.ladder[-1] >= s.lengths.max()
    # the ladder is the best one: brute force over every choice of 3 rungs on a small set
    lengths = np.array([1, 2, 2, 3, 7, 8, 8, 8, 15, 16]) * FRAME
    cost = lambda ladder: sum(padded_length(n, ladder) - n for n in lengths)  # noqa: E731
    values = sorted(set(lengths.tolist()))
    best = min(cost(np.array(sorted(c))) for c in itertools.combinations(values, 3) if max(c) == values[-1])
    assert cost(pad_ladder(lengths, 3)) == best


def test_collate_pads_to_whole_frames_normalises_and_encodes():
    vocab = CharVocab.from_transcripts(["ab c", "b"])
    rng = np.random.default_rng(0)
    audios = [rng.standard_normal(1000).astype(np.float32) * 3 + 1, rng.standard_normal(700).astype(np.float32)]
    batch = collate(audios, ["ab c", "bz"], vocab)
    assert batch.waveforms.shape == (2, 1280) and batch.lengths.tolist() == [1000, 700]
    x = batch.waveforms[0, :1000].double()
    assert abs(float(x.mean())) < 1e-5 and float(x.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    assert float(batch.waveforms[1, 700:].abs().max()) == 0.0
    assert batch.targets.tolist() == [vocab.encode("ab c"), vocab.encode("bz") + [0, 0]]
    assert batch.target_lengths.tolist() == [4, 2] and batch.unknown_chars == 1  # "z" -> [UNK]


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_skips_files_broken_after_listing_and_counts_them(tmp_path, capsys, workers):
    rows = []
    for i in range(9):
        write(tmp_path / f"u{i}.flac", tone(0.5 + 0.1 * i, seed=i), fmt="FLAC")
        rows.append({"audio": f"u{i}.flac", "text": f"utterance {i}"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(
        corpus="manifest",
        root=str(tmp_path),
        train="m.jsonl",
        eval="m.jsonl",
        cache_dir=str(tmp_path / "cache"),
        num_workers=workers,
        prefetch_factor=2,
    )
    train, _, report = build_datasets(cfg, 0)
    (tmp_path / "u3.flac").write_bytes(b"fLaC garbage")  # broken after listing
    vocab = CharVocab.from_transcripts(train.texts)
    sampler = LengthBucketSampler(train.durations, 0, 4)
    loader = make_loader(train, sampler, vocab, cfg, report=report)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(loader)
        assert sorted(i for b in batches for i in b.ids) == sorted(set(train.ids) - {"m-0000004"})
        assert all(b.waveforms.shape[1] % FRAME == 0 for b in batches)
    assert report.counts["train"]["unreadable"] == 2  # once per epoch
    err = capsys.readouterr()
    assert (err.err + err.out).count("warning: train: unreadable audio") == 1
    assert "train epoch 1: 8 utterances, 1 failed to load" in err.err


def test_a_file_that_first_fails_in_a_later_epoch_is_named(tmp_path, capsys):
    rows = []
    for i in range(6):
        write(tmp_path / f"u{i}.flac", tone(0.5 + 0.1 * i, seed=i), fmt="FLAC")
        rows.append({"audio": f"u{i}.flac", "text": f"utterance {i}"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(
        corpus="manifest",
        root=str(tmp_path),
        train="m.jsonl",
        eval="m.jsonl",
        cache_dir=str(tmp_path / "cache"),
        num_workers=0,
    )
    train, _, report = build_datasets(cfg, 0)
    vocab = CharVocab.from_transcripts(train.texts)
    sampler = LengthBucketSampler(train.durations, 0, 2)
    loader = make_loader(train, sampler, vocab, cfg, report=report)
    (tmp_path / "u1.flac").write_bytes(b"fLaC garbage")  # fails from epoch 0
    for epoch in range(3):
        if epoch == 2:
            (tmp_path / "u4.flac").write_bytes(b"fLaC garbage")  # fails first in epoch 2
        sampler.set_epoch(epoch)
        list(loader)
    err = capsys.readouterr()
    text = err.err + err.out
    assert report.counts["train"]["unreadable"] == 4  # u1 three times, u4 once
    assert text.count("u1.flac") >= 1 and "u4.flac" in text  # both named, whenever they first failed
    assert text.count("warning: train: unreadable audio") == 2  # each file once, not once per epoch


def test_a_conv_stack_with_another_stride_batches_in_whole_frames_of_its_own(tmp_path):
    from fastctc.config import load_config
    from fastctc.train.run import prepare_run

    assert FRAME == 320
    # strides 5 x 3 = 15 samples per frame: every padded length, ladder rung and batch is a multiple of 15
    overrides = [
        "model.conv_dim=[8, 8]",
        "model.conv_kernel=[10, 3]",
        "model.conv_stride=[5, 3]",
        "model.hidden_size=16",
        "model.num_attention_heads=2",
        "model.intermediate_size=16",
        "model.num_hidden_layers=1",
        "model.num_conv_pos_embedding_groups=2",
        "train.threads=1",
        "data.synthetic_train_size=24",
        "data.synthetic_eval_size=2",
        "train.batch_size=4",
        "data.pad_lengths=3",
    ]
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.toml", overrides)
    run = prepare_run(cfg, tmp_path / "run")
    assert run.model.config.frame_stride == run.sampler.frame == 15
    assert all(n % 15 == 0 for n in run.sampler.ladder) and np.all(run.sampler.padded % 15 == 0)
    assert np.array_equal(run.sampler.frames, -(-run.sampler.lengths // 15))  # sorted by this stack's frames
    shapes = set()
    for batch in itertools.islice(iter(run.loader), 6):
        assert batch.waveforms.shape[1] % 15 == 0 and batch.waveforms.shape[1] >= int(batch.lengths.max())
        shapes.add(batch.waveforms.shape[1])
        # the model makes floor((L - k) / s) + 1 frames per conv of each padded row, as the data layer counted
        with torch.no_grad():
            logits, _ = run.model(batch.waveforms[:1])
        n = batch.waveforms.shape[1]
        assert logits.shape[1] == ((n - 10) // 5 + 1 - 3) // 3 + 1
    assert shapes <= set(run.sampler.ladder.tolist())
    run.log.close()


# ---- GroupByLengthSampler: the recipe's group_by_length (transformers' get_length_grouped_indices) ----------


def test_group_by_length_order_is_transformers_get_length_grouped_indices():
    pytest.importorskip("transformers")
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from fastctc.data.batching import GroupByLengthSampler, group_by_length_order

    rng = np.random.default_rng(0)
    for n, batch_size in ((1001, 8), (300, 32), (37, 8), (2700, 8)):
        # lengths in whole frames of a few values: many ties, which the stable sort keeps in permutation order
        durations = rng.integers(10, 60, n) * FRAME / 16000
        sampler = GroupByLengthSampler(durations, 0, batch_size)
        for seed in (1, 2):
            theirs = get_length_grouped_indices(
                sampler.lengths.tolist(), batch_size, generator=torch.Generator().manual_seed(seed)
            )
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
            ours = group_by_length_order(sampler.lengths, sampler.megabatch(), perm)
            assert ours.tolist() == theirs, (n, batch_size, seed)


def test_group_by_length_sampler_batches_its_order_and_resumes_exactly():
    from fastctc.data.batching import GroupByLengthSampler, group_by_length_order

    d = timit_like(1001)
    s = GroupByLengthSampler(d, 5, 16)
    assert s.megabatch() == 15 * 16  # min(1001 // (4 * 16), 50) batches of 16
    s.set_epoch(3)
    batches = list(s)
    order = group_by_length_order(s.lengths, s.megabatch(), np.random.default_rng([5, 3]).permutation(1001))
    assert [i for b in batches for i in b] == order.tolist() and len(batches) == len(s) == 63  # ceil(1001 / 16)
    assert all(len(b) == 16 for b in batches[:-1]) and len(batches[-1]) == 1001 % 16
    assert s.lengths[batches[0][0]] == s.lengths.max()  # the longest utterance leads the first batch
    s.set_epoch(3, start=20)
    assert list(s) == batches[20:]
    s.set_epoch(4)
    assert list(s) != batches
    with pytest.raises(ValueError, match="batch_seconds"):
        GroupByLengthSampler(d, 5, 16, batch_seconds=40.0)


@pytest.mark.parametrize("world_size,accum", [(2, 1), (1, 3), (2, 2)])
def test_group_by_length_every_utterance_once_with_equal_steps_across_ranks(world_size, accum):
    from fastctc.data.batching import GroupByLengthSampler

    d = timit_like(1001, seed=world_size + accum)
    ranks = [GroupByLengthSampler(d, 7, 16, rank=r, world_size=world_size, accum=accum) for r in range(world_size)]
    assert ranks[0].megabatch() == min(1001 // (4 * 16 * world_size * accum), 50) * 16 * world_size * accum
    per_rank = [list(s) for s in ranks]
    assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) % accum == 0
    assert sorted(i for batches in per_rank for b in batches for i in b) == list(range(1001))


def test_trailing_delimiter_ends_every_target_with_the_delimiter_and_leaves_the_texts():
    from fastctc.data.batching import Collator
    from fastctc.data.dataset import Item

    vocab = CharVocab.from_transcripts(["seven", "two"], delimiter=True)
    assert "|" in vocab.tokens
    audio = [np.ones(900, np.float32), np.ones(700, np.float32)]
    plain = collate(audio, ["seven", "two"], vocab)
    ended = collate(audio, ["seven", "two"], vocab, trailing_delimiter=True)
    assert ended.target_lengths.tolist() == [6, 4] == (plain.target_lengths + 1).tolist()
    bar = vocab.index["|"]
    assert ended.targets[0].tolist() == vocab.encode("seven") + [bar]
    assert ended.targets[1, :4].tolist() == vocab.encode("two") + [bar]
    assert ended.texts == ["seven", "two"]  # the references stay as written
    with pytest.raises(ValueError, match="trailing_delimiter"):
        Collator(CharVocab.from_transcripts(["seven"]), trailing_delimiter=True)
    assert Collator(vocab, trailing_delimiter=True)([Item("a", audio[0], "two")]).target_lengths.tolist() == [4]
