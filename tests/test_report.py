"""The per-utterance error report against jiwer's process_words / process_characters."""

import json
import random

import pytest

from fastctc.inference.report import align_words, build_report, pra_block, score_utterance, write_report
from fastctc.metrics import cer, wer

jiwer = pytest.importorskip("jiwer")


def random_pairs(seed: int, n: int):
    rng = random.Random(seed)
    words = ["a", "the", "cat", "sat", "on", "mat", "dog", "ran", "x"]
    refs, hyps = [], []
    for _ in range(n):
        ref = [rng.choice(words) for _ in range(rng.randint(1, 9))]
        hyp = list(ref)
        for _ in range(rng.randint(0, 4)):
            k = rng.randint(0, 2)
            if k == 0 and hyp:
                hyp[rng.randrange(len(hyp))] = rng.choice(words)
            elif k == 1 and hyp:
                del hyp[rng.randrange(len(hyp))]
            else:
                hyp.insert(rng.randint(0, len(hyp)), rng.choice(words))
        refs.append(" ".join(ref))
        hyps.append("  ".join(hyp) + rng.choice(["", " "]))  # jiwer's whitespace rules apply
    return refs, hyps


@pytest.mark.parametrize("seed", range(4))
def test_per_utterance_counts_match_jiwer(seed):
    refs, hyps = random_pairs(seed, 60)
    for r, h in zip(refs, hyps):
        u, ops = score_utterance("u", r, h)
        out = jiwer.process_words(r, h)
        assert u.word_errors == out.substitutions + out.deletions + out.insertions
        assert u.ref_words == out.hits + out.substitutions + out.deletions
        assert u.char_errors == sum(
            jiwer.process_characters(r, h).__dict__[k] for k in ("substitutions", "deletions", "insertions")
        )
        # the alignment rebuilds both sides
        assert [x for _, x, _ in ops if x is not None] == r.split()
        assert [y for _, _, y in ops if y is not None] == h.split()
        assert all((op == "C") == (x == y) for op, x, y in ops if x is not None and y is not None)


@pytest.mark.parametrize("seed", range(3))
def test_totals_equal_the_aggregate_rates_exactly(seed, tmp_path):
    refs, hyps = random_pairs(100 + seed, 40)
    ids = [f"utt{i}" for i in range(len(refs))]
    summary = write_report(tmp_path, ids, refs, hyps)
    assert summary["wer"] == wer(refs, hyps) == pytest.approx(jiwer.wer(refs, hyps), abs=0)
    assert summary["cer"] == cer(refs, hyps)
    assert summary["cer"] == pytest.approx(jiwer.cer(refs, hyps), rel=1e-12)
    rows = [json.loads(line) for line in (tmp_path / "utterances.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ids
    assert sum(r["subs"] + r["dels"] + r["ins"] for r in rows) == summary["word_errors"]
    assert sum(r["ref_words"] for r in rows) == summary["ref_words"]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_pra_marks_substitutions_deletions_insertions():
    u, ops = score_utterance("spk1-1", "the cat sat on the mat", "the bat sat on on mat x")
    assert [op for op, _, _ in ops] == ["C", "S", "C", "C", "S", "C", "I"]
    text = pra_block(u, ops)
    assert text.splitlines() == [
        "id: (spk1-1)",
        "Scores: (#C #S #D #I) 4 2 0 1",
        "REF:  the CAT sat on THE mat *",
        "HYP:  the BAT sat on ON  mat X",
        "Eval:     S          S       I",
    ]
    u, ops = score_utterance("d", "one two three", "one three")
    assert pra_block(u, ops).splitlines()[2:] == ["REF:  one TWO three", "HYP:  one *** three", "Eval:     D"]


def test_confusions_and_worst_files(tmp_path):
    refs = ["a cat", "a cat sat", "the dog", "x"]
    hyps = ["a bat", "a bat sit", "the", "x"]
    write_report(tmp_path, ["u1", "u2", "u3", "u4"], refs, hyps)
    conf = (tmp_path / "confusions.txt").read_text().splitlines()
    assert conf[1].split() == ["2", "cat", "->", "bat"]
    assert conf[2].split() == ["1", "sat", "->", "sit"] and "     1  dog" in conf
    worst = (tmp_path / "worst.txt").read_text().splitlines()
    assert [w.split()[2] for w in worst[1:]] == ["u2", "u1", "u3"]  # 2 errors; then 1 error at WER 0.5 each, by id
    assert worst[1].split()[:2] == ["2", "0.667"]


def test_empty_hypothesis_and_reference_word_counts():
    assert [op for op, _, _ in align_words(["a", "b"], [])] == ["D", "D"]
    assert [op for op, _, _ in align_words([], ["a"])] == ["I"]
    with pytest.raises(ValueError, match="no words"):
        build_report(["u"], [""], ["x"])


def test_cli_eval_report_totals_equal_the_greedy_eval(tmp_path, capsys):
    from tiny_inference_model import save_tiny_model, write_corpus

    from fastctc.cli import main

    model = save_tiny_model(tmp_path / "model")
    manifest, utts = write_corpus(tmp_path / "corpus", n=4)
    assert main(["eval", str(model), "--data", str(manifest)]) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["eval", str(model), "--data", str(manifest), "--report", str(tmp_path / "rep")]) == 0
    with_report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["wer"] == with_report["wer"] == plain["wer"]
    assert summary["cer"] == with_report["cer"] == plain["cer"]
    rows = [json.loads(line) for line in (tmp_path / "rep" / "utterances.jsonl").read_text().splitlines()]
    assert sorted(r["ref"] for r in rows) == sorted(u.text for u in utts)
    assert jiwer.wer([r["ref"] for r in rows], [r["hyp"] for r in rows]) == pytest.approx(summary["wer"], abs=1e-12)
    pra = (tmp_path / "rep" / "alignment.pra").read_text()
    assert pra.count("id: (") == 4 and pra.count("REF:") == 4


def test_training_final_evaluation_writes_the_report(tmp_path):
    from pathlib import Path

    from fastctc.config import load_config
    from fastctc.train.loop import train

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.toml"
    tiny = [
        "model.hidden_size=32",
        "model.num_attention_heads=2",
        "model.intermediate_size=64",
        "model.conv_dim=[16, 16, 16, 16, 16, 16, 16]",
        "model.num_conv_pos_embedding_groups=2",
        "train.threads=1",
        "train.log_every=1",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        "optim.warmup_steps=2",
        "data.synthetic_train_size=8",
        "data.synthetic_eval_size=4",
        "train.batch_size=4",
        "train.max_steps=1",
    ]
    train(load_config(demo, tiny), tmp_path / "run")
    final = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = [e for e in final if e.get("event") == "eval" and e.get("final")][-1]
    summary = json.loads((tmp_path / "run" / "report" / "summary.json").read_text())
    assert summary["utterances"] == 4 and summary["wer"] == final["wer"] and summary["cer"] == final["cer"]
    assert (tmp_path / "run" / "report" / "alignment.pra").read_text().count("id: (") == 4
