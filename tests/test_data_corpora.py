"""Corpus readers and the listing screen: layouts, transcripts, splits, header durations, skips and their counts."""

import json

import numpy as np
import pytest
from data_corpus_builders import librispeech, timit_ldc, tone, write

from fastctc.config import ConfigError, DataConfig, load_config
from fastctc.data.corpora import build_datasets
from fastctc.data.dataset import CorpusError
from fastctc.models import EncoderConfig
from fastctc.models.feature_encoder import frame_count

WAV2VEC2 = EncoderConfig()  # the cards' conv stack: kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2


def frames_of(n):
    return frame_count(n, WAV2VEC2)


def cfg_for(corpus, root, train, eval, tmp_path, **kw):
    return DataConfig(corpus=corpus, root=str(root), train=train, eval=eval, cache_dir=str(tmp_path / "cache"), **kw)


@pytest.mark.parametrize("upper", [True, False])
def test_timit_ldc_layout_splits_transcripts_durations_and_skips(tmp_path, capsys, upper):
    facts = timit_ldc(tmp_path / "timit", upper=upper)
    train, test, report = build_datasets(cfg_for("timit", tmp_path / "timit", "train", "test", tmp_path), 0, frames_of)
    assert len(train) == facts["train"] and len(test) == facts["test"]
    assert train.ids[0] == "train-dr1-fcjf0-sa1" and test.ids == ["test-dr3-mabc0-sa1", "test-dr3-mabc0-si2"]
    texts = dict(zip(train.ids, train.texts))
    assert texts["train-dr1-fcjf0-sa1"] == "she had your dark suit in greasy wash water all year"
    assert texts["train-dr1-fcjf0-si648"] == "don't ask me to carry an oily rag like that"  # RIFF file named .WAV
    assert texts["train-dr1-fcjf0-sx37"] == "cottage cheese with chives is delicious"
    assert sum(train.durations) == pytest.approx(facts["train_seconds"], abs=1e-3)
    assert train.speakers[0] == "fcjf0"
    assert dict(report.counts["train"]) == {
        "missing_audio": 1,
        "empty_transcript": 1,
        "missing_transcript": 1,
        "unreadable": 1,
    }
    assert report.skipped("train") == 4 and report.skipped("eval") == 0
    err = capsys.readouterr().err
    assert err.count("warning: train: unreadable audio") == 1 and "sx4" in err.lower()
    assert "4 utterances" in err and "4 skipped" in err  # the summary after listing
    # the whole of TRAIN + TEST
    both, _, _ = build_datasets(cfg_for("timit", tmp_path / "timit", "train+test", "test", tmp_path), 0, frames_of)
    assert len(both) == facts["train"] + facts["test"]


def test_timit_nltk_sample_layout(tmp_path):
    root = tmp_path / "sample"
    for spk, n in (("dr1-fvmh0", 2), ("dr1-mcpm0", 1), ("dr7-madd0", 2)):
        for i in range(n):
            write(root / spk / f"sx{i}.wav", tone(0.9), fmt="NIST" if i else "WAV")
            (root / spk / f"sx{i}.txt").write_text(f"0 14400 Word number {i}.\n")
            (root / spk / f"sx{i}.phn").write_text("0 100 h#\n")
    train, ev, _ = build_datasets(cfg_for("timit", root, "dr1", "dr7-madd0", tmp_path), 0, frames_of)
    assert len(train) == 3 and len(ev) == 2 and ev.ids == ["dr7-madd0-sx0", "dr7-madd0-sx1"]
    assert ev.texts == ["word number 0", "word number 1"] and ev.speakers == ["madd0", "madd0"]
    everything, _, _ = build_datasets(cfg_for("timit", root, "all", "all", tmp_path), 0, frames_of)
    assert len(everything) == 5
    with pytest.raises(CorpusError, match="no train/test split"):
        build_datasets(cfg_for("timit", root, "train", "test", tmp_path), 0)


def test_librispeech_subsets_joined_missing_and_unlisted_files(tmp_path):
    librispeech(tmp_path / "LibriSpeech")
    cfg = cfg_for("librispeech", tmp_path / "LibriSpeech", "train-clean-100+train-clean-360", "dev-clean", tmp_path)
    train, dev, report = build_datasets(cfg, 0, frames_of)
    assert train.ids == ["19-198-0000", "19-198-0001", "26-495-0000", "26-495-0001", "100-121669-0000"]
    assert dict(zip(train.ids, train.texts))["26-495-0001"] == "that's all"
    assert len(dev) == 2 and dev.durations == pytest.approx([1.1, 2.0])
    assert dict(report.counts["train"]) == {"missing_audio": 1, "missing_transcript": 1}
    with pytest.raises(CorpusError, match=r"no subset 'train-other-500'.*found: dev-clean, train-clean-100"):
        build_datasets(cfg_for("librispeech", tmp_path / "LibriSpeech", "train-other-500", "dev-clean", tmp_path), 0)


@pytest.mark.parametrize(
    "corpus, expected", [("timit", "TRAIN/DR1..DR8"), ("librispeech", "SPEAKER-CHAPTER.trans.txt")]
)
def test_missing_or_foreign_root_names_the_expected_layout(tmp_path, corpus, expected):
    with pytest.raises(CorpusError, match="does not exist") as err:
        build_datasets(cfg_for(corpus, tmp_path / "nope", "a", "b", tmp_path), 0)
    assert expected in str(err.value)
    (tmp_path / "other" / "stuff").mkdir(parents=True)
    with pytest.raises(CorpusError) as err:
        build_datasets(cfg_for(corpus, tmp_path / "other", "train" if corpus == "timit" else "stuff", "b", tmp_path), 0)
    assert expected in str(err.value)


def _manifest_corpus(tmp_path):
    clips = tmp_path / "corpus" / "clips"
    write(clips / "a8k.wav", tone(1.0, sr=8000, freq=1000.0), sr=8000)
    write(clips / "b44k.wav", tone(1.5, sr=44100, freq=1000.0, channels=2), sr=44100)
    write(clips / "c4ch.wav", tone(1.0, channels=4))
    write(clips / "d_long.wav", tone(3.0))
    write(clips / "e_short.wav", tone(0.01))
    write(clips / "f_tight.wav", tone(0.25))
    rows = [
        {"audio": "clips/a8k.wav", "text": "Eight kilohertz"},
        {"audio": "clips/b44k.wav", "text": "stereo, forty-four"},
        {"audio": "clips/c4ch.wav", "text": "four channels"},
        {"audio": "clips/d_long.wav", "text": "long"},
        {"audio": "clips/e_short.wav", "text": "short"},
        {"audio": "clips/f_tight.wav", "text": "far too many characters for a quarter of a second"},
        {"audio": "clips/missing.wav", "text": "gone"},
    ]
    lines = [json.dumps(r) for r in rows] + ["{not json", json.dumps({"text": "no audio"})]
    (tmp_path / "corpus" / "train.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "corpus" / "eval.tsv").write_text(
        "audio\ttext\tduration\nclips/a8k.wav\thello\t1.0\nclips/d_long.wav\tlong\t3.0\n"
    )
    return tmp_path / "corpus"


def test_manifest_resampling_downmix_and_every_skip_reason(tmp_path):
    root = _manifest_corpus(tmp_path)
    cfg = cfg_for("manifest", root, "train.jsonl", "eval.tsv", tmp_path, max_duration_s=2.0)
    train, ev, report = build_datasets(cfg, 0, frames_of)
    assert train.texts == ["eight kilohertz", "stereo fortyfour"]  # the recipe drops "-" and ","
    assert train.durations == pytest.approx([1.0, 1.5])
    assert dict(report.counts["train"]) == {
        "channels": 1,
        "too_long": 1,
        "too_short": 1,
        "ctc_infeasible": 1,
        "missing_audio": 1,
        "bad_manifest_line": 2,
    }
    assert len(ev) == 2 and ev.durations == [1.0, 3.0]  # the cap applies to training audio only

    for i, seconds in enumerate([1.0, 1.5]):  # 16 kHz mono, and a 1 kHz sine stays at 1 kHz
        item = train[i]
        assert item.error == "" and item.audio.dtype == np.float32 and item.audio.ndim == 1
        assert len(item.audio) == round(seconds * 16000)
        spectrum = np.abs(np.fft.rfft(item.audio))
        assert np.fft.rfftfreq(len(item.audio), 1 / 16000)[np.argmax(spectrum)] == pytest.approx(1000.0, abs=2.0)
        assert 0.25 < np.abs(item.audio).max() < 0.35  # the down-mix keeps the level

    with pytest.raises(CorpusError, match="2 sample rate not data.sample_rate and data.resample=false"):
        build_datasets(
            cfg_for("manifest", root, "train.jsonl", "eval.tsv", tmp_path, resample=False, max_duration_s=2.0),
            0,
            frames_of,
        )


def test_crop_keeps_long_training_audio_at_the_cap(tmp_path):
    root = _manifest_corpus(tmp_path)
    cfg = cfg_for("manifest", root, "train.jsonl", "eval.tsv", tmp_path, max_duration_s=2.0, long_utterances="crop")
    train, _, report = build_datasets(cfg, 0, frames_of)
    i = train.texts.index("long")
    assert train.durations[i] == 2.0 and len(train[i].audio) == 32000
    assert report.counts["train"]["cropped"] == 1 and report.skipped("train") == 6


def test_header_cache_reused_until_a_file_changes(tmp_path):
    librispeech(tmp_path / "ls")
    cfg = cfg_for("librispeech", tmp_path / "ls", "train-clean-100", "dev-clean", tmp_path)
    first, _, _ = build_datasets(cfg, 0)
    from fastctc.data.duration_cache import DurationCache

    cache = DurationCache(cfg.cache_dir, cfg.root)
    path = first.utterances[0].path
    assert cache.info(path).frames == 16000 and cache.misses == 0 and cache.hits == 1
    write(tmp_path / "ls" / "train-clean-100" / "19" / "198" / "19-198-0000.flac", tone(2.0), fmt="FLAC")
    assert cache.info(path).frames == 32000 and cache.misses == 1  # size changed: read the header again
    again, _, _ = build_datasets(cfg, 0)
    assert again.durations[again.ids.index("19-198-0000")] == 2.0


def test_nothing_usable_is_an_error_with_the_counts(tmp_path):
    root = tmp_path / "m"
    (root).mkdir()
    (root / "t.jsonl").write_text(json.dumps({"audio": "x.wav", "text": "gone"}) + "\n")
    with pytest.raises(CorpusError, match="none of the 1 utterances.*1 audio file missing"):
        build_datasets(cfg_for("manifest", root, "t.jsonl", "t.jsonl", tmp_path), 0)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("data.corpus=timit", "data.root: data.corpus='timit' needs the corpus folder"),
        ("data.corpus=librispech", "did you mean 'librispeech'?"),
        ("data.long_utterances=trim", "data.long_utterances: must be skip or crop"),
        ("data.batch_seconds=5.0", "data.batch_seconds: must hold one utterance of data.max_duration_s=20.0"),
        ("data.num_workers=-1", "data.num_workers: must be >= 0"),
        ("data.pad_lengths=-2", "data.pad_lengths: must be >= 0"),
    ],
)
def test_data_config_errors_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert fragment in str(err.value)


def test_a_latin1_manifest_stops_with_its_line_and_the_fix(tmp_path):
    root = tmp_path / "m"
    write(root / "a.wav", tone(1.0))
    manifest = root / "t.jsonl"
    manifest.write_bytes(
        (
            json.dumps({"audio": "a.wav", "text": "la"}) + "\n" + '{"audio": "a.wav", "text": "café à la carte"}\n'
        ).encode("latin-1")
    )
    with pytest.raises(CorpusError) as err:
        build_datasets(cfg_for("manifest", root, "t.jsonl", "t.jsonl", tmp_path), 0)
    assert str(err.value) == (
        f"data.train: {manifest}:2: not UTF-8 (byte 0xe9); manifests are UTF-8: convert it, "
        f"e.g. iconv -f latin1 -t utf-8 {manifest} > {root / 't.utf8.jsonl'}"
    )
    manifest.write_bytes(b"\xef\xbb\xbf" + '{"audio": "a.wav", "text": "café à la carte"}\n'.encode())  # UTF-8 + BOM
    train, _, report = build_datasets(cfg_for("manifest", root, "t.jsonl", "t.jsonl", tmp_path), 0)
    assert train.texts == ["café à la carte"] and report.skipped("train") == 0
    tsv = root / "t.tsv"  # a TSV's header row after a BOM still names its columns
    tsv.write_bytes(b"\xef\xbb\xbf" + "audio\ttext\na.wav\tdéjà vu\n".encode())
    train, _, _ = build_datasets(cfg_for("manifest", root, "t.tsv", "t.tsv", tmp_path), 0)
    assert train.texts == ["déjà vu"]


def test_duplicate_manifest_entries_are_counted_and_named(tmp_path, capsys):
    root = tmp_path / "m"
    for name in ("a", "b", "c"):
        write(root / f"{name}.wav", tone(1.0))
    rows = [
        {"audio": "a.wav", "text": "one", "id": "x1"},
        {"audio": "b.wav", "text": "two", "id": "x2"},
        {"audio": "a.wav", "text": "one again", "id": "x3"},  # the same file
        {"audio": "c.wav", "text": "three", "id": "x2"},  # the same id
        {"audio": str(root / "b.wav"), "text": "two, absolute"},
    ]  # the same file, spelt another way
    (root / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, _, report = build_datasets(cfg_for("manifest", root, "t.jsonl", "t.jsonl", tmp_path), 0)
    assert train.ids == ["x1", "x2"]
    assert dict(report.counts["train"]) == {"duplicate": 3}
    err = capsys.readouterr().err
    assert (
        f"warning: train: audio file or id listed again in the manifest (the later line): {root / 't.jsonl'}:3: "
        f"audio 'a.wav' already listed on line 1; skipped"
    ) in err
    assert "3 skipped (3 audio file or id listed again in the manifest (the later line))" in err


@pytest.mark.parametrize("long_utterances", ["skip", "crop"])
def test_a_manifest_duration_that_lies_cannot_bypass_the_cap(tmp_path, capsys, long_utterances):
    from fastctc.data.batching import LengthBucketSampler, make_loader
    from fastctc.data.text import CharVocab

    root = tmp_path / "m"
    write(root / "ok.wav", tone(1.0))
    write(root / "liar.wav", tone(6.0, sr=8000), sr=8000)  # 6 s (resampled when loaded), listed as 1 s
    (root / "t.jsonl").write_text(
        json.dumps({"audio": "ok.wav", "text": "fine", "duration": 1.0})
        + "\n"
        + json.dumps({"audio": "liar.wav", "text": "liar", "duration": 1.0})
        + "\n"
    )
    cfg = cfg_for(
        "manifest",
        root,
        "t.jsonl",
        "t.jsonl",
        tmp_path,
        max_duration_s=2.0,
        long_utterances=long_utterances,
        num_workers=0,
    )
    train, ev, report = build_datasets(cfg, 0, frames_of)
    assert train.durations == [1.0, 1.0] and report.skipped("train") == 0  # the listing believes it
    item = train[1]
    why = f"{root / 'liar.wav'}: 6.0 s in the file, 1.0 s listed, over data.max_duration_s=2"
    if long_utterances == "skip":
        assert item == (train.ids[1], None, "liar", why, "too_long_when_loaded", 0)  # samples 0: not a stored item
    else:
        assert item.error == why and item.reason == "cropped_when_loaded" and len(item.audio) == 32000
    assert len(ev[1].audio) == 6 * 16000  # evaluation keeps every utterance whole

    sampler = LengthBucketSampler(train.durations, 0, 2)
    batches = list(make_loader(train, sampler, CharVocab.from_transcripts(train.texts), cfg, report=report))
    assert sorted(i for b in batches for i in b.ids) == (train.ids[:1] if long_utterances == "skip" else train.ids)
    assert max(b.waveforms.shape[1] for b in batches) <= 32000 + 320  # never past the cap (plus the frame padding)
    reason = "too_long_when_loaded" if long_utterances == "skip" else "cropped_when_loaded"
    assert dict(report.counts["train"]) == {reason: 1}
    assert report.skipped("train") == (long_utterances == "skip")
    err = capsys.readouterr().err
    from fastctc.data.report import REASONS

    assert f"warning: train: {REASONS[reason]}: {why}" in err


def test_broken_files_found_when_loading_are_counted_by_kind(tmp_path):
    import soundfile as sf

    root = tmp_path / "m"
    root.mkdir()
    sf.write(root / "nan.wav", np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    sf.write(root / "zero.wav", np.zeros(0, dtype=np.float32), 16000)
    (root / "empty.wav").write_bytes(b"")
    (root / "text.wav").write_text("not audio at all\n")
    rows = [{"audio": f"{n}.wav", "text": n, "duration": 1.0} for n in ("nan", "zero", "empty", "text", "gone")]
    (root / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "gone.wav").write_bytes(b"")  # listed while present, then deleted before loading
    train, _, _ = build_datasets(cfg_for("manifest", root, "t.jsonl", "t.jsonl", tmp_path), 0)
    (root / "gone.wav").unlink()
    items = [train[i] for i in range(len(train))]
    assert [(it.audio, it.reason) for it in items] == [
        (None, "non_finite"),
        (None, "too_short"),
        (None, "unreadable"),
        (None, "unreadable"),
        (None, "missing_audio"),
    ]
    assert items[0].error == f"{root / 'nan.wav'}: 16000 non-finite samples (NaN or inf)"
    assert items[2].error.startswith(f"{root / 'empty.wav'}: an empty file (0 bytes); soundfile reads WAV")
    assert items[3].error.startswith(f"{root / 'text.wav'}: not audio soundfile can read (Format not recognised)")
    assert items[4].error == f"{root / 'gone.wav'}: no such file (check the path)"
