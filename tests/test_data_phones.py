"""TIMIT phone recognition: the 61/48/39 foldings, .PHN reading, the protocol splits, PER, the phone vocabulary."""

import json
import random

import numpy as np
import pytest
import torch
from data_corpus_builders import tone, write
from tiny_inference_model import tiny_phone_config

from fastctc.config import ConfigError, DataConfig, load_config
from fastctc.data.corpora import build_datasets
from fastctc.data.phones import PHONES_39, PHONES_48, PHONES_61, PhoneVocab, fold_map, score_fold, vocab_for
from fastctc.data.report import DataReport
from fastctc.data.timit import CORE_TEST_SPEAKERS, DEV_SPEAKERS, read_timit
from fastctc.metrics import per
from fastctc.models import EncoderConfig
from fastctc.models.feature_encoder import frame_count

# Lee & Hon (1989) Table I as Kaldi tabulates it (egs/timit/s5/conf/phones.60-48-39.map), copied
# here independently of fastctc.data.phones: "61-label 48-phone 39-phone"; q has no columns (removed).
KALDI_MAP = """
aa aa aa|ae ae ae|ah ah ah|ao ao aa|aw aw aw|ax ax ah|ax-h ax ah|axr er er|ay ay ay|b b b|bcl vcl sil
ch ch ch|d d d|dcl vcl sil|dh dh dh|dx dx dx|eh eh eh|el el l|em m m|en en n|eng ng ng|epi epi sil
er er er|ey ey ey|f f f|g g g|gcl vcl sil|h# sil sil|hh hh hh|hv hh hh|ih ih ih|ix ix ih|iy iy iy
jh jh jh|k k k|kcl cl sil|l l l|m m m|n n n|ng ng ng|nx n n|ow ow ow|oy oy oy|p p p|pau sil sil
pcl cl sil|q|r r r|s s s|sh sh sh|t t t|tcl cl sil|th th th|uh uh uh|uw uw uw|ux uw uw|v v v|w w w
y y y|z z z|zh zh sh
"""
ROWS = [row.split() for row in KALDI_MAP.replace("\n", "|").split("|") if row.strip()]
WAV2VEC2 = EncoderConfig()  # the cards' conv stack: kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2


def frames_of(n):
    return frame_count(n, WAV2VEC2)


def test_every_timit_label_folds_as_lee_and_hon_table():
    assert len(ROWS) == 61 and sorted(r[0] for r in ROWS) == list(PHONES_61)
    to48, to39 = fold_map(48), fold_map(39)
    for row in ROWS:
        if len(row) == 1:  # q: removed on folding
            assert row == ["q"] and to48["q"] is None and to39["q"] is None
        else:
            assert (to48[row[0]], to39[row[0]]) == (row[1], row[2]), row[0]
    assert sorted({r[1] for r in ROWS if len(r) == 3}) == list(PHONES_48) and len(PHONES_48) == 48
    assert sorted({r[2] for r in ROWS if len(r) == 3}) == list(PHONES_39) and len(PHONES_39) == 39
    # folding text already in a smaller set leaves it alone, and 61 -> 48 -> 39 is 61 -> 39
    for n, phones in ((61, PHONES_61), (48, PHONES_48), (39, PHONES_39)):
        assert all(fold_map(n)[p] == p for p in phones)
    assert all(to39[p] == (to39[to48[p]] if to48[p] else None) for p in PHONES_61)
    assert "vcl" not in fold_map(61)  # a 48-set label is unknown to the 61 set


def ldc_phone_corpus(root, upper=True):
    """TRAIN: one speaker (SA + SI + SX, and an SX without .PHN); TEST: a core-test, a dev and another
    speaker, plus an utterance with an unknown label. .PHN lines are `start end label` in samples."""
    c = str.upper if upper else str.lower

    def utt(split, dr, spk, name, labels, phn=True, seconds=1.0):
        folder = root / c(split) / c(dr) / c(spk)
        n = int(seconds * 16000)
        write(folder / (c(name) + c(".wav")), tone(seconds, seed=len(name)), fmt="NIST")
        (folder / (c(name) + c(".txt"))).write_text(f"0 {n} Some words.\n")
        if phn:
            edges = np.linspace(0, n, len(labels) + 1).astype(int)
            (folder / (c(name) + c(".phn"))).write_text(
                "".join(f"{a} {b} {p}\n" for a, b, p in zip(edges, edges[1:], labels))
            )

    sa = "h# sh iy hv ae dcl y axr q h#".split()
    utt("train", "dr1", "fcjf0", "sa1", sa)
    utt("train", "dr1", "fcjf0", "si648", "h# dh ax-h kcl k ao l ix ng pau en eng epi h#".split())
    utt("train", "dr1", "fcjf0", "sx37", "h# zh em nx ux el bcl b h#".split())
    utt("train", "dr1", "fcjf0", "sx127", [], phn=False)  # missing .PHN
    utt("test", "dr1", "mdab0", "si1039", "h# ix ih ax ah h#".split())  # core test
    utt("test", "dr1", "mdab0", "sa2", sa)
    utt("test", "dr4", "faks0", "sx133", "h# aa ao h#".split())  # dev
    utt("test", "dr4", "faks0", "sx223", "h# xx h#".split())  # unknown label
    utt("test", "dr2", "mxyz0", "si1", "h# s h#".split())  # neither


def cfg_for(root, train, eval, tmp_path, **kw):
    return DataConfig(
        corpus="timit",
        root=str(root),
        train=train,
        eval=eval,
        targets="phones",
        cache_dir=str(tmp_path / "cache"),
        **kw,
    )


@pytest.mark.parametrize("upper", [True, False])
def test_ldc_phn_read_in_order_folded_and_bad_input_counted(tmp_path, capsys, upper):
    ldc_phone_corpus(tmp_path / "timit", upper)
    train, dev, report = build_datasets(cfg_for(tmp_path / "timit", "train-nosa", "dev", tmp_path), 0, frames_of)
    texts = dict(zip(train.ids, train.texts))
    assert train.ids == ["train-dr1-fcjf0-si648", "train-dr1-fcjf0-sx37"]  # SA left out, sx127 skipped
    assert texts["train-dr1-fcjf0-si648"] == "sil dh ax cl k ao l ix ng sil en ng epi sil"
    assert texts["train-dr1-fcjf0-sx37"] == "sil zh m n uw el vcl b sil"
    assert dict(report.counts["train"]) == {"missing_phones": 1}
    assert dev.ids == ["test-dr4-faks0-sx133"] and dev.texts == ["sil aa ao sil"]
    assert dict(report.counts["eval"]) == {"unknown_phone": 1}
    err = capsys.readouterr().err
    assert "audio without a .PHN" in err and "sx127" in err.lower() and "skipped" in err
    assert "'xx' is not a TIMIT phone label" in err and "sx223" in err.lower()
    assert "49 of its 50 speakers are not under" in err  # the dev split of this corpus is incomplete

    # the 61 set keeps every label (q too); 39 folds further; core-test picks its speakers only
    train61, core, _ = build_datasets(
        cfg_for(tmp_path / "timit", "train", "core-test", tmp_path, phone_set=61), 0, frames_of
    )
    assert dict(zip(train61.ids, train61.texts))["train-dr1-fcjf0-sa1"] == "h# sh iy hv ae dcl y axr q h#"
    assert core.ids == ["test-dr1-mdab0-si1039"] and core.texts == ["h# ix ih ax ah h#"]
    _, core39, _ = build_datasets(
        cfg_for(tmp_path / "timit", "train", "core-test", tmp_path, phone_set=39), 0, frames_of
    )
    assert core39.texts == ["sil ih ih ah ah sil"]
    _, everything, _ = build_datasets(cfg_for(tmp_path / "timit", "train", "test-nosa", tmp_path), 0, frames_of)
    assert len(everything) == 3  # mdab0 si1039, faks0 sx133, mxyz0 si1 (sa2 out, sx223 unknown)


def test_malformed_phn_line_and_ctc_length_counted_in_phones(tmp_path, capsys):
    root = tmp_path / "sample"  # NLTK layout, lower case
    write(root / "dr1-fvmh0" / "sa1.wav", tone(1.0))
    (root / "dr1-fvmh0" / "sa1.phn").write_text("0 100 h#\n100 oops\n")
    write(root / "dr1-fvmh0" / "si1.wav", tone(0.2))  # 0.2 s: 9 frames, for 9 phones + 1 repeat
    (root / "dr1-fvmh0" / "si1.phn").write_text(
        "".join(f"{i} {i + 1} {p}\n" for i, p in enumerate("h# s s iy t ae n d h#".split()))
    )
    write(root / "dr1-fvmh0" / "sx1.wav", tone(1.0))
    (root / "dr1-fvmh0" / "sx1.phn").write_text("0 8000 h#\n8000 16000 ax-h\n")
    train, _, report = build_datasets(cfg_for(root, "dr1", "dr1", tmp_path), 0, frames_of)
    assert train.texts == ["sil ax"]  # ax-h keeps its dash (no character normalisation on phones)
    assert dict(report.counts["train"]) == {"unknown_phone": 1, "ctc_infeasible": 1}
    assert "sa1.phn:2: expected 'start end phone'" in capsys.readouterr().err


def test_manifest_of_phone_strings_folds_and_skips_unknown(tmp_path):
    write(tmp_path / "a.wav", tone(1.0))
    write(tmp_path / "b.wav", tone(1.0))
    lines = [{"audio": "a.wav", "text": "h#  hv ix q dx ax-h h#"}, {"audio": "b.wav", "text": "sil zz"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    cfg = DataConfig(
        corpus="manifest",
        root=str(tmp_path),
        train="m.jsonl",
        eval="m.jsonl",
        targets="phones",
        cache_dir=str(tmp_path / "cache"),
    )
    train, _, report = build_datasets(cfg, 0, frames_of)
    assert train.texts == ["sil hh ix dx ax sil"]
    assert dict(report.counts["train"]) == {"unknown_phone": 1}


# TIMIT's speakers per dialect region (TRAIN, TEST): the corpus's documentation (462 and 168 in all)
SPEAKERS_PER_REGION = [(38, 11), (76, 26), (76, 26), (68, 32), (70, 28), (35, 11), (77, 23), (22, 11)]


def complete_skeleton(root):
    """Every folder and file name of a complete TIMIT (empty files: the listing reads no audio)."""
    protocol = sorted(CORE_TEST_SPEAKERS | DEV_SPEAKERS)
    others = iter(f"mzz{i:03d}" for i in range(1000))
    utts = ["sa1", "sa2", "si1", "si2", "si3", "sx1", "sx2", "sx3", "sx4", "sx5"]
    for r, (n_train, n_test) in enumerate(SPEAKERS_PER_REGION, 1):
        for split, n in (("TRAIN", n_train), ("TEST", n_test)):
            for _ in range(n):
                spk = protocol.pop() if split == "TEST" and protocol else next(others)
                folder = root / split / f"DR{r}" / spk.upper()
                folder.mkdir(parents=True)
                for u in utts:
                    (folder / f"{u.upper()}.WAV").touch()
                    (folder / f"{u.upper()}.TXT").write_text("0 1 a.\n")
    assert not protocol


def test_protocol_split_sizes_on_a_complete_corpus(tmp_path, capsys):
    assert len(DEV_SPEAKERS) == 50 and len(CORE_TEST_SPEAKERS) == 24 and not DEV_SPEAKERS & CORE_TEST_SPEAKERS
    assert sum(s[0] == "m" for s in CORE_TEST_SPEAKERS) == 16  # two men and one woman per region
    complete_skeleton(tmp_path / "TIMIT")
    sizes = {}
    for spec in ("train", "test", "train-nosa", "test-nosa", "dev", "core-test"):
        utts = read_timit(tmp_path, spec, DataReport(), "eval")
        sizes[spec] = (len({u.speaker for u in utts}), len(utts))
    assert sizes == {
        "train": (462, 4620),
        "test": (168, 1680),
        "train-nosa": (462, 3696),
        "test-nosa": (168, 1344),
        "dev": (50, 400),
        "core-test": (24, 192),
    }
    assert "incomplete" not in capsys.readouterr().err
    dev = read_timit(tmp_path, "dev", DataReport(), "eval")
    assert {u.speaker for u in dev} == DEV_SPEAKERS and not any("-sa" in u.id for u in dev)


def test_protocol_splits_need_the_ldc_layout(tmp_path):
    from fastctc.data.dataset import CorpusError

    write(tmp_path / "dr1-fvmh0" / "sa1.wav", tone(0.5))
    with pytest.raises(CorpusError, match="no train/test split"):
        read_timit(tmp_path, "core-test", DataReport(), "eval")
    (tmp_path / "TRAIN").mkdir()
    with pytest.raises(CorpusError, match="train-nosa, dev, core-test"):
        read_timit(tmp_path, "validation", DataReport(), "eval")
    with pytest.raises(CorpusError, match="no TEST folder"):
        read_timit(tmp_path, "dev", DataReport(), "eval")


def jiwer_per(refs, hyps, to_set):
    """PER by jiwer: each phone folded by the test's own copy of the table, the phones scored as words."""
    jiwer = pytest.importorskip("jiwer")
    fold = {}
    for row in ROWS:
        if len(row) == 3:  # the 61 label and the 48-set phone both fold to the row's phone in to_set
            fold[row[0]] = fold[row[1]] = row[1] if to_set == 48 else row[2]

    def folded(s):
        return " ".join(fold[p] for p in s.split() if p != "q")

    return jiwer.wer([folded(s) for s in refs], [folded(s) for s in hyps])


@pytest.mark.parametrize("seed", range(3))
def test_per_equals_jiwer_on_folded_phones(seed):
    rng = random.Random(seed)
    refs = [" ".join(rng.choices(PHONES_48, k=rng.randint(1, 30))) for _ in range(20)]
    hyps = []
    for r in refs:
        h = [p for p in r.split() if rng.random() > 0.2]  # deletions
        h = [rng.choice(PHONES_48) if rng.random() < 0.2 else p for p in h]  # substitutions
        hyps.append(" ".join(h + rng.choices(PHONES_48, k=rng.randint(0, 3))))  # insertions
    hyps[0] = ""
    assert per(refs, hyps, fold_map(39)) == pytest.approx(jiwer_per(refs, hyps, 39), abs=1e-12)
    assert per(refs, hyps, fold_map(48)) == pytest.approx(jiwer_per(refs, hyps, 48), abs=1e-12)
    refs61 = [" ".join(rng.choices(PHONES_61, k=rng.randint(2, 30))) for _ in range(10)]
    hyps61 = [" ".join(rng.choices(PHONES_61, k=rng.randint(0, 30))) for _ in range(10)]
    assert per(refs61, hyps61, fold_map(39)) == pytest.approx(jiwer_per(refs61, hyps61, 39), abs=1e-12)


def test_per_scores_on_the_folded_set_corpus_level():
    refs, hyps = ["sil ix ao cl", "sil s"], ["sil ih aa vcl epi", "sil z s"]
    # on 39: ix=ih, ao=aa, cl=vcl=epi=sil -> one insertion (the extra sil) + one insertion (z) over 6
    assert per(refs, hyps, fold_map(39)) == pytest.approx(2 / 6)
    # on 48 all of ix/ih, ao/aa, cl/vcl differ: 3 substitutions + 2 insertions over 6
    assert per(refs, hyps, fold_map(48)) == pytest.approx(5 / 6)
    assert per(refs, hyps) == pytest.approx(5 / 6)  # no folding: phones as written
    with pytest.raises(ValueError, match="'xx' is not in the scoring table"):
        per(["sil"], ["xx"], fold_map(39))


def test_score_fold_and_vocab_follow_the_config():
    cfg = load_config(None, ["data.corpus=timit", "data.root=/x", "data.targets=phones"])
    assert (cfg.data.phone_set, cfg.data.score_phone_set) == (48, 39)  # the standard protocol
    assert score_fold(cfg.data) == fold_map(39) and len(vocab_for(cfg.data, [])) == 49
    assert score_fold(DataConfig()) is None and vocab_for(DataConfig(), ["ab"]).tokens == ["a", "b", "[UNK]", "[PAD]"]


@pytest.mark.parametrize(
    "override, fragment",
    [
        (["data.targets=words"], "data.targets: must be chars or phones"),
        (["data.corpus=librispeech", "data.root=/x", "data.targets=phones"], "TIMIT's .PHN files or a manifest"),
        (["data.phone_set=60"], "data.phone_set: must be 61, 48 or 39"),
        (
            ["data.phone_set=39", "data.score_phone_set=48"],
            "data.score_phone_set: must be data.phone_set=39 or a smaller",
        ),
    ],
)
def test_phone_config_errors_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(None, override)


def test_phone_vocab_ids_round_trip_and_refuse_unknown(tmp_path):
    vocab = PhoneVocab.for_set(48)
    assert vocab.tokens == [*PHONES_48, "[PAD]"] and vocab.blank == 48 and len(vocab) == 49
    text = "sil dh ax cl k ao l epi vcl sil"
    assert vocab.decode(vocab.encode(text)) == text
    assert vocab.decode([vocab.blank, vocab.index["sil"], vocab.blank]) == "sil"
    assert vocab.count_unknown("sil h# ax-h") == 2
    with pytest.raises(ValueError, match="phone 'h#' is not in the vocabulary"):
        vocab.encode("sil h#")
    vocab.save(tmp_path / "vocab.json")
    assert PhoneVocab.load(tmp_path / "vocab.json").tokens == vocab.tokens
    assert len(PhoneVocab.for_set(61)) == 62 and len(PhoneVocab.for_set(39)) == 40


def test_phone_vocab_loads_in_wav2vec2_tokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    vocab = PhoneVocab.for_set(48)
    vocab.save(tmp_path / "vocab.json")
    tok = transformers.Wav2Vec2CTCTokenizer(
        str(tmp_path / "vocab.json"), unk_token="[UNK]", pad_token="[PAD]", word_delimiter_token="|"
    )
    assert tok.pad_token_id == vocab.blank
    # every phone, multi-character ones included, is one token with fastctc's id
    assert tok.convert_ids_to_tokens(list(range(len(vocab)))) == vocab.tokens
    assert tok.convert_tokens_to_ids(vocab.tokens) == list(range(len(vocab)))
    ids = vocab.encode("sil dh ax cl k ao l epi")
    assert tok.convert_ids_to_tokens(ids) == "sil dh ax cl k ao l epi".split()


def test_export_of_a_phone_model_loads_in_transformers_with_the_same_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    from fastctc.models import CTCModel, save_pretrained

    vocab = PhoneVocab.for_set(48)
    cfg = tiny_phone_config(vocab, norm="group")
    torch.manual_seed(0)
    model = CTCModel(cfg).eval()
    save_pretrained(model, tmp_path, vocab.tokens)
    back = transformers.AutoModelForCTC.from_pretrained(tmp_path).eval()
    assert back.config.vocab_size == 49 and back.config.pad_token_id == vocab.blank
    x = torch.randn(2, 4000)
    with torch.no_grad():
        assert (model(x)[0] - back(x).logits).abs().max() <= 1e-5
    tok = transformers.Wav2Vec2CTCTokenizer.from_pretrained(tmp_path)
    assert tok.convert_ids_to_tokens(list(range(len(vocab)))) == vocab.tokens
    assert PhoneVocab.load(tmp_path / "vocab.json").tokens == vocab.tokens


def test_phone_card_config_is_the_card_recipe_with_the_protocol(tmp_path):
    import dataclasses
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "configs"
    paths = [f"model.checkpoint={tmp_path}", f"data.root={tmp_path}"]
    phones = load_config(configs / "wav2vec2-base-timit-phones.toml", paths)
    card = load_config(configs / "wav2vec2-base-timit.toml", paths)
    d = phones.data
    assert (d.train, d.eval, d.targets, d.phone_set, d.score_phone_set) == ("train-nosa", "dev", "phones", 48, 39)
    protocol = dict(train=d.train, eval=d.eval, targets=d.targets, phone_set=d.phone_set, score_phone_set=39)
    assert dataclasses.replace(card.data, **protocol) == d
    assert (phones.model, phones.optim, phones.train) == (card.model, card.optim, card.train)


def test_fastctc_eval_reports_per_on_the_scoring_set(tmp_path, capsys):
    """A phone model exported as training exports it, scored by `fastctc eval` on a phone config: PER
    equals PER recomputed here from the native model's own greedy phones and the corpus's .PHN files."""
    from fastctc.cli import main
    from fastctc.data.audio import load_audio
    from fastctc.data.batching import pad_waveforms
    from fastctc.decoding import greedy_ids
    from fastctc.models import CTCModel, save_pretrained

    ldc_phone_corpus(tmp_path / "timit")
    vocab = PhoneVocab.for_set(48)
    cfg = tiny_phone_config(vocab)
    torch.manual_seed(0)
    model = CTCModel(cfg).eval()
    save_pretrained(model, tmp_path / "model", vocab.tokens)
    (tmp_path / "phones.toml").write_text(
        f'[data]\ncorpus = "timit"\nroot = "{tmp_path / "timit"}"\ntrain = "train-nosa"\neval = "test-nosa"\n'
        f'targets = "phones"\ncache_dir = "{tmp_path / "cache"}"\nnum_workers = 0\n'
    )
    assert main(["eval", str(tmp_path / "model"), "--data", str(tmp_path / "phones.toml"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert "PER" in out and "(39 phones)" in out and result["utterances"] == 3

    refs, hyps = [], []
    for spk, utt, phn in (
        ("dr1/mdab0", "si1039", "h# ix ih ax ah h#"),
        ("dr4/faks0", "sx133", "h# aa ao h#"),
        ("dr2/mxyz0", "si1", "h# s h#"),
    ):
        audio = load_audio(str(tmp_path / "timit" / "TEST" / spk.upper() / f"{utt.upper()}.WAV"), 16000)
        waves, lengths = pad_waveforms([audio], True)
        with torch.no_grad():
            logits, logit_lengths = model(waves, lengths)
        hyps.append(vocab.decode(greedy_ids(logits, logit_lengths, vocab.blank)[0]))
        refs.append(phn)
    assert all(hyps) and all(" " in h for h in hyps)  # a random model still says several phones
    assert result["per"] == pytest.approx(jiwer_per(refs, hyps, 39), abs=1e-12)

    # --report: the per-utterance report on the 39-set phones, whose corpus rate is the PER
    assert (
        main(
            [
                "eval",
                str(tmp_path / "model"),
                "--data",
                str(tmp_path / "phones.toml"),
                "--device",
                "cpu",
                "--report",
                str(tmp_path / "report"),
            ]
        )
        == 0
    )
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert reported["per"] == pytest.approx(result["per"]) and summary["wer"] == pytest.approx(result["per"])
    rows = [json.loads(line) for line in (tmp_path / "report" / "utterances.jsonl").read_text().splitlines()]
    assert {r["ref"] for r in rows} == {"sil ih ih ah ah sil", "sil aa aa sil", "sil s sil"}
    assert main(["eval", str(tmp_path / "model"), "--data", str(tmp_path / "phones.toml"), "--beam", "4"]) == 2
    assert "phone targets" in capsys.readouterr().err


def test_training_on_phones_reports_per_and_exports_the_phone_vocabulary(tmp_path):
    """A few steps of a tiny model on phone targets: 49 outputs, eval events carry PER (equal to jiwer's
    on the decoded phones, folded to 39), best/ is chosen by it and exports the phone vocabulary."""
    from fastctc.train.loop import train

    ldc_phone_corpus(tmp_path / "timit")
    cfg = load_config(
        None,
        [
            "data.corpus=timit",
            f"data.root={tmp_path / 'timit'}",
            "data.train=train-nosa",
            "data.eval=test-nosa",
            "data.targets=phones",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.num_workers=0",
            "model.hidden_size=32",
            "model.num_hidden_layers=1",
            "model.num_attention_heads=2",
            "model.intermediate_size=64",
            "model.conv_dim=[16, 16, 16, 16, 16, 16, 16]",
            "model.num_conv_pos_embedding_groups=2",
            "model.freeze_feature_encoder=false",
            "train.threads=1",
            "train.max_steps=3",
            "train.batch_size=2",
            "train.eval_every=2",
            "train.checkpoint_every=0",
            "optim.warmup_steps=1",
            "optim.lr=1e-3",
        ],
    )
    result = train(cfg, tmp_path / "run")
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in events if e["event"] == "eval"]
    assert len(evals) == 2 and all("per" in e for e in evals) and evals[-1]["per"] == result["per"]
    refs, hyps = zip(*result["examples"])  # the 3 eval utterances, all of them
    assert set(refs) == {"sil ix ih ax ah sil", "sil aa ao sil", "sil s sil"}
    assert all(p in PHONES_48 for h in hyps for p in h.split())
    assert result["per"] == pytest.approx(jiwer_per(refs, hyps, 39), abs=1e-12)
    assert PhoneVocab.load(tmp_path / "run" / "model" / "vocab.json").tokens == PhoneVocab.for_set(48).tokens
    assert (tmp_path / "run" / "best" / "config.json").is_file()
    summary = json.loads((tmp_path / "run" / "report" / "summary.json").read_text())
    assert summary["wer"] == pytest.approx(result["per"], abs=1e-12)  # the report scores the 39-set phones
