"""`fastctc bench recipe` end to end at a smoke size (both sides, a handful of steps on a few generated
utterances written with soundfile), the random-init checkpoint it starts from, the reference's vocabulary,
and the FSDD reader. Structure only: no time is asserted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fastctc.cli import main

# a from-scratch config's [model]: the sizes --make-checkpoint writes
TINY_SIZES = """\
[model]
hidden_size = 32
num_hidden_layers = 2
num_attention_heads = 4
intermediate_size = 48
conv_dim = [16, 16, 16]
conv_kernel = [10, 3, 3]
conv_stride = [5, 2, 2]
conv_bias = true
feat_extract_norm = "layer"
do_stable_layer_norm = true
num_conv_pos_embeddings = 16
num_conv_pos_embedding_groups = 4
mask_time_min_masks = 0
"""
# the run's [model] beside a checkpoint: fine-tuning settings only
FINE_TUNING = """\
[model]
checkpoint = "{checkpoint}"
freeze_feature_encoder = false
mask_time_prob = 0.05
mask_time_length = 2
mask_time_min_masks = 0
"""


def _write_corpus(root: Path) -> None:
    from fastctc.data import synthetic

    for split, count in (("train", 8), ("eval", 4)):
        rows = []
        for u in synthetic.make_split(7, split, count):
            path = root / f"{u.id}.wav"
            sf.write(path, u.audio, synthetic.SAMPLE_RATE, subtype="PCM_16")
            rows.append(json.dumps({"audio": path.name, "text": u.text}))
        (root / f"{split}.jsonl").write_text("\n".join(rows) + "\n")


@pytest.fixture
def smoke_config(tmp_path) -> Path:
    for module in ("transformers", "datasets", "accelerate", "jiwer"):
        pytest.importorskip(module)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _write_corpus(corpus)
    (tmp_path / "sizes.toml").write_text(TINY_SIZES)
    cfg = tmp_path / "smoke.toml"
    cfg.write_text(
        FINE_TUNING.format(checkpoint=tmp_path / "ckpt")
        + f"""
[data]
corpus = "manifest"
root = "{corpus}"
train = "train.jsonl"
eval = "eval.jsonl"
num_workers = 0

[optim]
lr = 1e-3
warmup_steps = 2

[train]
epochs = 2
max_steps = 4
batch_size = 4
eval_batch_size = 4
log_every = 1
eval_every = 2
checkpoint_every = 0
precision = "fp32"
"""
    )
    return cfg


def test_bench_recipe_end_to_end(smoke_config, tmp_path, capsys):
    main(
        [
            "bench",
            "recipe",
            str(smoke_config),
            "--make-checkpoint",
            "--sizes",
            str(tmp_path / "sizes.toml"),
            "--threads",
            "1",
            "--out",
            str(tmp_path / "out"),
            "--plot",
            str(tmp_path / "curves.png"),
        ]
    )
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["bench"] == "recipe" and report["device"] == "cpu" and report["seeds"] == [42]
    assert set(report["sides"]) == {"reference", "fastctc"}
    for side in report["sides"].values():
        assert len(side["wer"]) == 1 and 0.0 <= side["wer"][0] < math.inf  # scored by fastctc eval
        assert side["steps"] == [4]
        assert {"total_s", "train_s", "startup_s", "eval_s", "own_wer", "peak_rss_mib"} <= set(side)
    assert set(report["ratios"]) == {"total_s", "train_s", "startup_s", "eval_s"}
    assert {"fastctc_s", "reference_total_s", "ratio"} <= set(report["time_to_recipe_wer"])
    run = report["runs"]["42"]
    # the recipe's output is a Transformers checkpoint with the tokenizer's added <s>/</s> (head = vocab + 2)
    ref_dir = Path(run["reference"]["model_dir"])
    vocab = json.loads((ref_dir / "vocab.json").read_text())
    assert json.loads((ref_dir / "config.json").read_text())["vocab_size"] == len(vocab) + 2
    assert "train loss at matching steps: 1:" in out and "time to the recipe's WER" in out
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_show_mapping_lists_every_key(capsys):
    from fastctc.bench.recipe import MAPPING

    main(["bench", "recipe", "--show-mapping"])
    out = capsys.readouterr().out
    for key, target in MAPPING.items():
        assert f"{key}" in out and target in out
    # every model / optim / train key of the config reaches the table (by name, or as one of the sizes)
    import dataclasses

    from fastctc.bench.recipe_checkpoint import CONFIG_KEYS
    from fastctc.config import ModelConfig, OptimConfig, TrainConfig

    named = {
        (row.split(".", 1)[0], name.split(".")[-1])
        for row in MAPPING
        for part in row.split(", ")
        for name in part.split(".", 1)[1].split("/")
    }
    keys = [
        ("model", f.name) for f in dataclasses.fields(ModelConfig) if f.name != "encoder"
    ]  # encoder: the fields below
    try:
        from fastctc.models.config import FINE_TUNING_FIELDS
    except ImportError:  # the fine-tuning knobs were ModelConfig fields before
        FINE_TUNING_FIELDS = ()
    keys += [("model", k) for k in FINE_TUNING_FIELDS]
    keys += [
        (s, f.name) for s, cls in (("optim", OptimConfig), ("train", TrainConfig)) for f in dataclasses.fields(cls)
    ]
    missing = [f"{s}.{k}" for s, k in keys if (s, k) not in named and not (s == "model" and k in CONFIG_KEYS)]
    assert missing == [], f"MAPPING does not say how these reach the reference: {missing}"


def test_make_checkpoint_learns_the_configs_checkpoint_before_it_exists(tmp_path):
    """prepare_checkpoint reads model.checkpoint through load_config (a --set over the TOML's) while the folder
    does not exist yet, then --make-checkpoint writes it there; without it, the missing folder is one line."""
    from fastctc.bench.recipe import build_parser, prepare_checkpoint

    (tmp_path / "sizes.toml").write_text(TINY_SIZES)
    config = tmp_path / "run.toml"
    config.write_text(FINE_TUNING.format(checkpoint=tmp_path / "from-toml"))
    target = tmp_path / "from-set"
    args = build_parser().parse_args(
        [
            str(config),
            "--set",
            f"model.checkpoint={target}",
            "--make-checkpoint",
            "--sizes",
            str(tmp_path / "sizes.toml"),
        ]
    )
    assert prepare_checkpoint(args, lambda *a: None) == str(target.resolve())
    assert (target / "config.json").is_file() and not (tmp_path / "from-toml").exists()
    with pytest.raises(SystemExit, match="'[^']*from-toml' holds no config.json"):
        prepare_checkpoint(build_parser().parse_args([str(config)]), lambda *a: None)
    with pytest.raises(SystemExit, match="config error: --set: optim.lr: expected float"):
        prepare_checkpoint(build_parser().parse_args([str(config), "--set", "optim.lr=fast"]), lambda *a: None)


def test_adapters_only_training_is_refused_before_any_work(tmp_path):
    """configs/mms-adapter.toml (model.train_only = "adapters") against the recipe, which trains every
    parameter: one line saying why and how to compare, before any checkpoint is read or written."""
    from fastctc.bench.recipe import build_parser, prepare_checkpoint

    mms = Path(__file__).resolve().parents[1] / "configs" / "mms-adapter.toml"
    target = tmp_path / "ckpt"
    args = [str(mms), "--set", f"model.checkpoint={target}", "--make-checkpoint", "--sizes", "unused.toml"]
    with pytest.raises(SystemExit) as refused:
        prepare_checkpoint(build_parser().parse_args(args), lambda *a: None)
    message = str(refused.value)
    assert message.startswith("fastctc bench recipe: model.train_only = 'adapters' trains only the MMS adapters")
    assert "trains every parameter" in message and "--set model.train_only=all" in message
    assert "\n" not in message and not target.exists()
    # train_only = all gets past the check (to the next one: the checkpoint it names does not exist)
    with pytest.raises(SystemExit, match="holds no config.json"):
        prepare_checkpoint(build_parser().parse_args([str(mms), "--set", "model.train_only=all"]), lambda *a: None)


def test_checkpoint_loads_in_transformers_and_fastctc(tmp_path):
    transformers = pytest.importorskip("transformers")
    import torch

    from fastctc.bench.recipe_checkpoint import write_checkpoint
    from fastctc.config import load_config
    from fastctc.models import load_pretrained

    cfg_file = tmp_path / "sizes.toml"
    cfg_file.write_text(TINY_SIZES)
    model_cfg = load_config(cfg_file, []).model
    ckpt = write_checkpoint(model_cfg, tmp_path / "ckpt", seed=0)
    with pytest.raises(FileExistsError):
        write_checkpoint(model_cfg, ckpt, seed=0)
    hf = transformers.AutoModelForCTC.from_pretrained(ckpt, vocab_size=7, pad_token_id=6).eval()
    assert (
        hf.config.hidden_size == 32 and list(hf.config.conv_dim) == [16, 16, 16] and hf.config.mask_time_min_masks == 0
    )
    native = load_pretrained(ckpt, vocab_size=7).eval()
    with torch.no_grad():  # the same head on both, so the logits compare the loaded encoders
        native.lm_head.weight.copy_(hf.lm_head.weight)
        native.lm_head.bias.copy_(hf.lm_head.bias)
        x = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
        ours, _ = native(x, torch.tensor([4000, 4000]))
        theirs = hf(x, attention_mask=torch.ones(2, 4000, dtype=torch.long)).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    pre = json.loads((ckpt / "preprocessor_config.json").read_text())
    assert pre["do_normalize"] is True and pre["return_attention_mask"] is True and pre["sampling_rate"] == 16000


def test_reference_vocabulary_is_the_scripts():
    from fastctc.bench.recipe_reference import create_vocabulary_from_data
    from fastctc.data.text import CharVocab

    texts = {"train": ["seven two ", "zero "], "eval": ["nine "]}  # the script appends a space to every transcript
    vocab = create_vocabulary_from_data(texts)
    # the same order as fastctc's recipe vocabulary: sorted characters, " " as "|" in its sorted place, [UNK], [PAD]
    expected = CharVocab.from_transcripts([t for ts in texts.values() for t in ts]).tokens
    assert sorted(vocab, key=vocab.get) == expected
    assert vocab["[PAD]"] == len(vocab) - 1 and vocab["|"] == 0


def test_fsdd_reader(tmp_path):
    from fastctc.config import load_config
    from fastctc.data.corpora import build_datasets
    from fastctc.data.dataset import CorpusError
    from fastctc.data.fsdd import read_fsdd
    from fastctc.data.report import DataReport

    rec = tmp_path / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for digit, speaker, index in [
        (7, "jackson", 0),
        (7, "jackson", 5),
        (0, "theo", 4),
        (3, "theo", 49),
        (9, "lucas", 12),
    ]:
        sf.write(rec / f"{digit}_{speaker}_{index}.wav", 0.1 * rng.standard_normal(4000), 8000, subtype="PCM_16")
    (rec / "notes.wav").write_bytes(b"")  # not a recording name: counted, skipped
    report = DataReport()
    test = read_fsdd(tmp_path / "fsdd", "test", report, "eval")
    train = read_fsdd(tmp_path / "fsdd", "train", report, "train")
    assert [(u.text, u.speaker) for u in test] == [("zero", "theo"), ("seven", "jackson")]
    assert sorted(u.id for u in train) == ["3_theo_49", "7_jackson_5", "9_lucas_12"]
    assert [u.id for u in read_fsdd(tmp_path / "fsdd", "train:theo+lucas", report, "train")] == [
        "3_theo_49",
        "9_lucas_12",
    ]
    with pytest.raises(CorpusError, match="no FSDD speaker nobody"):
        read_fsdd(tmp_path / "fsdd", "train:nobody", report, "train")
    with pytest.raises(CorpusError, match="must be train or test"):
        read_fsdd(tmp_path / "fsdd", "dev", report, "train")
    cfg = load_config(
        None,
        [
            "data.corpus=fsdd",
            f"data.root={tmp_path / 'fsdd'}",
            "data.train=train",
            "data.eval=test",
            f"data.cache_dir={tmp_path / 'cache'}",
        ],
    )
    train_ds, eval_ds, _ = build_datasets(cfg.data, 0, verbose=False)
    assert len(train_ds) == 3 and len(eval_ds) == 2
    assert train_ds.durations[0] == pytest.approx(0.5)  # 4000 samples at 8 kHz, resampled to 16 kHz
    assert train_ds[0].audio.shape == (8000,)


def test_curve_overlap_tells_seed_noise_from_a_gap(capsys):
    """The overlap criterion on made-up curves: two sides drawn from one distribution overlap; the same with
    fastctc's loss 30% lower from step 600 on (a gap of the plain mini card's kind) do not."""
    pytest.importorskip("numpy")
    from fastctc.bench.recipe import curve_overlap, report_overlap, same_distribution_agreement

    rng = np.random.default_rng(1)
    steps = list(range(20, 2021, 20))
    base = lambda k: 3.0 * math.exp(-k / 400) + 0.1  # noqa: E731

    def runs(gap):
        return {
            seed: {
                side: {
                    "losses": [
                        [
                            k,
                            base(k)
                            * math.exp(0.15 * rng.standard_normal())
                            * (gap if side == "fastctc" and k > 600 else 1.0),
                        ]
                        for k in steps
                    ]
                }
                for side in ("reference", "fastctc")
            }
            for seed in (42, 43, 44)
        }

    null = same_distribution_agreement(3)
    assert 0.6 < null < 0.95  # |mean gap| <= max sd holds often, not always, for 3 + 3 draws of one distribution
    same, parted = curve_overlap([42, 43, 44], runs(1.0)), curve_overlap([42, 43, 44], runs(0.7))
    assert same["overlap"] and same["points"] == len(steps) and abs(same["agree"] - null) < 0.15
    assert not parted["overlap"] and parted["segments"][-1]["gap"] == pytest.approx(math.log(0.7), abs=0.1)
    assert [s["steps"] for s in same["segments"]] == [[20, 520], [540, 1020], [1040, 1520], [1540, 2020]]
    report_overlap(parted)
    assert "no overlap" in capsys.readouterr().out
    assert curve_overlap([42], runs(1.0)) is None  # one seed: no spread to compare with


def test_a_trained_model_is_written_as_a_pretraining_checkpoint_transformers_loads(tmp_path):
    """--pretrain-on's writer: a fastctc model folder (as `fastctc train` exports it) becomes what the Hub
    serves as a card's starting point: Wav2Vec2ForPreTraining with every key present, the encoder's
    weights exactly the trained ones, no CTC head, no tokenizer."""
    transformers = pytest.importorskip("transformers")
    import torch
    from safetensors.torch import load_file

    from fastctc.bench.recipe_checkpoint import write_pretrained_checkpoint
    from fastctc.config import load_config, resolve_encoder
    from fastctc.models import CTCModel, save_pretrained
    from fastctc.models.hf_weights import head_width

    (tmp_path / "sizes.toml").write_text(TINY_SIZES)
    encoder = resolve_encoder(load_config(tmp_path / "sizes.toml", []).model)
    torch.manual_seed(3)
    trained = tmp_path / "run" / "model"
    save_pretrained(CTCModel(encoder), trained, [f"t{i}" for i in range(encoder.vocab_size)])
    ckpt = write_pretrained_checkpoint(trained, tmp_path / "ckpt", seed=0)
    with pytest.raises(FileExistsError):
        write_pretrained_checkpoint(trained, ckpt)

    hf, info = transformers.Wav2Vec2ForPreTraining.from_pretrained(ckpt, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert hf.config.architectures == ["Wav2Vec2ForPreTraining"] and list(hf.config.conv_dim) == [16, 16, 16]
    ours, saved = load_file(str(trained / "model.safetensors")), load_file(str(ckpt / "model.safetensors"))
    encoder_keys = sorted(k for k in ours if not k.startswith("lm_head."))
    assert encoder_keys and all(torch.equal(saved[k], ours[k]) for k in encoder_keys)
    assert not any(k.startswith("lm_head.") for k in saved) and any(k.startswith("quantizer.") for k in saved)
    assert head_width(ckpt) is None  # fine-tuning starts a fresh head on both sides
    assert {p.name for p in ckpt.iterdir()} == {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "MADE_BY.json",
    }
    pre = json.loads((ckpt / "preprocessor_config.json").read_text())
    assert pre["do_normalize"] is True and pre["return_attention_mask"] is True


def test_pretrain_on_refuses_sizes_and_a_config_with_a_checkpoint(tmp_path):
    from fastctc.bench.recipe import build_parser, make_checkpoint

    (tmp_path / "sizes.toml").write_text(TINY_SIZES)
    (tmp_path / "tuned.toml").write_text(FINE_TUNING.format(checkpoint=tmp_path))
    both = ["--make-checkpoint", "--sizes", str(tmp_path / "sizes.toml"), "--pretrain-on", str(tmp_path / "sizes.toml")]
    with pytest.raises(SystemExit, match="--pretrain-on trains at its own config's .model. sizes; drop --sizes"):
        make_checkpoint(build_parser().parse_args(both), tmp_path / "out", lambda *a: None)
    args = build_parser().parse_args(["--make-checkpoint", "--pretrain-on", str(tmp_path / "tuned.toml")])
    with pytest.raises(SystemExit, match="names model.checkpoint .*; it must train from scratch"):
        make_checkpoint(args, tmp_path / "out", lambda *a: None)
    assert not (tmp_path / "out").exists()


def test_the_card_regime_mini_card_caches_its_frozen_features():
    """configs/mini-fsdd-finetune.toml: the cards' frozen feature encoder, dropouts 0, a fresh head on the
    encoder configs/mini-timit-pretrain.toml trains (layer norm, attention mask): the cache is exact, so on."""
    from fastctc.config import load_config, resolve_encoder
    from fastctc.models import default_attention_mask
    from fastctc.train.feature_cache import cache_off_reason

    configs = Path(__file__).resolve().parents[1] / "configs"
    tuned = load_config(configs / "mini-fsdd-finetune.toml", [], check_paths=False)
    pretrain = load_config(configs / "mini-timit-pretrain.toml", [], check_paths=False)
    assert not pretrain.model.checkpoint and tuned.model.checkpoint and tuned.model.freeze_feature_encoder
    assert tuned.data.corpus != pretrain.data.corpus
    encoder = resolve_encoder(pretrain.model)  # what the written checkpoint's config.json holds
    assert cache_off_reason(tuned, encoder, default_attention_mask(encoder)) is None
