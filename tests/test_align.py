"""fastctc.inference.align: character and word times from the Viterbi path, CTM/JSON, bad inputs."""

import json

import numpy as np
import pytest
import torch

from fastctc.inference.align import AlignmentError, align_audio, align_logits, encode_transcript, write_alignments

TOKENS = ["|", "a", "b", "n", "[UNK]", "[PAD]"]
BLANK = 5


def peaked(frames: str, margin: float = 8.0):
    """Logits (T, V) whose argmax spells `frames` (one character per frame, `_` = blank, ` ` = `|`)."""
    idx = {"_": BLANK, " ": 0, **{c: TOKENS.index(c) for c in "abn"}}
    x = torch.randn(len(frames), len(TOKENS), generator=torch.Generator().manual_seed(0))
    for t, c in enumerate(frames):
        x[t, idx[c]] += margin
    return x


def test_char_and_word_spans_follow_the_path():
    #        0123456789012
    frames = "_aa_b_ bb_a__"
    al = align_logits(peaked(frames), "ab ba", TOKENS, BLANK, frame_s=0.02, audio="x.wav")
    assert [(c.text, c.start, c.end) for c in al.chars] == [
        ("a", 0.02, 0.06),
        ("b", 0.08, 0.10),
        ("b", 0.14, 0.18),
        ("a", 0.20, 0.22),
    ]
    assert [(w.text, w.start, w.end) for w in al.words] == [("ab", 0.02, 0.10), ("ba", 0.14, 0.22)]
    assert all(0.9 < c.score <= 1 for c in al.chars) and al.frames == 13
    lp = peaked(frames).double().log_softmax(-1)
    assert al.log_prob == pytest.approx(float(lp.max(-1).values.sum()), abs=1e-4)  # the argmax path


def test_word_score_is_the_mean_posterior_over_its_frames():
    x = peaked("_a_b_ n")
    al = align_logits(x, "ab n", TOKENS, BLANK, 0.02)
    p = x.softmax(-1)
    assert al.words[0].score == pytest.approx(float((p[1, 1] + p[3, 2]) / 2), abs=1e-6)
    assert al.chars[2].score == pytest.approx(float(p[6, 3]), abs=1e-6)


def test_ctm_and_json(tmp_path):
    al = align_logits(peaked("_aa_b_ bb_a__"), "ab ba", TOKENS, BLANK, 0.02, audio="x.wav")
    assert al.ctm("utt1").splitlines()[0].split()[:5] == ["utt1", "1", "0.020", "0.080", "ab"]
    write_alignments([("utt1", al)], tmp_path / "a.jsonl", tmp_path / "a.ctm")
    row = json.loads((tmp_path / "a.jsonl").read_text())
    assert row["transcript"] == "ab ba" and [w["text"] for w in row["words"]] == ["ab", "ba"]
    assert len((tmp_path / "a.ctm").read_text().splitlines()) == 2


def test_transcript_case_follows_the_vocabulary():
    assert encode_transcript("  AB   ba ", TOKENS) == ("ab ba", [1, 2, 0, 2, 1])


@pytest.mark.parametrize(
    "text, message",
    [
        ("   ", "the transcript is empty"),
        ("ab, ba!", r"characters the model's vocabulary lacks: '!' ',' \(it has 'abn'\)"),
    ],
)
def test_bad_transcripts(text, message):
    with pytest.raises(AlignmentError, match=message):
        align_logits(peaked("_a_b_"), text, TOKENS, BLANK, 0.02)


def test_audio_shorter_than_the_transcript():
    # "aa b" needs a, blank, a, |, b = 5 frames; 4 frames cannot hold it
    with pytest.raises(
        AlignmentError, match=r"0\.08 s of audio \(4 frames of 20 ms\) is too short .* at least 5 frames"
    ):
        align_logits(peaked("_a_a"), "aa b", TOKENS, BLANK, 0.02, audio="short.wav")


def test_align_audio_with_a_saved_model(tmp_path):
    from fastctc.inference.model import load_model
    from fastctc.models import CTCModel, EncoderConfig, save_pretrained

    cfg = EncoderConfig(
        vocab_size=len(TOKENS),
        pad_token_id=BLANK,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        conv_dim=(8,) * 7,
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        mask_time_prob=0.0,
    )
    torch.manual_seed(0)
    save_pretrained(CTCModel(cfg).eval(), tmp_path / "m", TOKENS)
    lm = load_model(tmp_path / "m", torch.device("cpu"))
    audio = np.random.default_rng(0).standard_normal(16_000).astype(np.float32)  # 1 s: 49 frames
    al = align_audio(lm, audio, "ban nab", torch.device("cpu"), name="r.wav")
    assert al.frames == 49 and al.frame_s == 0.02 and [w.text for w in al.words] == ["ban", "nab"]
    ends = [(c.start, c.end) for c in al.chars]
    assert all(s < e for s, e in ends) and all(e1 <= s2 for (_, e1), (s2, _) in zip(ends, ends[1:]))
    with pytest.raises(AlignmentError, match="too short"):
        align_audio(lm, audio[:1600], "banana " * 3, torch.device("cpu"))


# ---- fastctc align ------------------------------------------------------------------------------


def test_cli_align_one_file_and_a_manifest(tmp_path, capsys):
    from tiny_inference_model import save_tiny_model, write_corpus

    from fastctc.cli import main

    model = save_tiny_model(tmp_path / "model")
    manifest, utts = write_corpus(tmp_path / "corpus", n=3)
    assert (
        main(
            ["align", str(model), str(tmp_path / "corpus" / "u0.wav"), utts[0].text, "--ctm", str(tmp_path / "u0.ctm")]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert [w["text"] for w in doc["words"]] == utts[0].text.split()
    assert doc["frames"] == (len(utts[0].audio) - 400) // 320 + 1
    assert [line.split()[4] for line in (tmp_path / "u0.ctm").read_text().splitlines()] == utts[0].text.split()

    assert main(["align", str(model), "--manifest", str(manifest), "--out", str(tmp_path / "al")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "al" / "alignments.jsonl").read_text().splitlines()]
    assert [r["transcript"] for r in rows] == [u.text for u in utts]
    ctm_ids = {line.split()[0] for line in (tmp_path / "al" / "words.ctm").read_text().splitlines()}
    assert ctm_ids == {"u0", "u1", "u2"}


@pytest.mark.parametrize(
    "transcript, message",
    [
        ("", "the transcript is empty"),
        ("héllo", "characters the model's vocabulary lacks: 'é'"),
        ("abcdefghij " * 30, "too short for the transcript"),
    ],
)
def test_cli_align_bad_inputs_one_line(tmp_path, capsys, transcript, message):
    from tiny_inference_model import save_tiny_model, write_corpus

    from fastctc.cli import main

    model = save_tiny_model(tmp_path / "model")
    write_corpus(tmp_path / "corpus", n=1)
    assert main(["align", str(model), str(tmp_path / "corpus" / "u0.wav"), transcript]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastctc align: ") and message in err and len(err.splitlines()) == 1


def test_vocabulary_without_word_delimiter_aligns_words_back_to_back():
    tokens = ["a", "b", "n", "[UNK]", "[PAD]"]  # trained on one-word transcripts: no `|`
    x = torch.randn(9, 5, generator=torch.Generator().manual_seed(1))
    for t, c in enumerate([4, 0, 4, 1, 4, 1, 2, 4, 4]):  # _ a _ b _ b n _ _
        x[t, c] += 8
    assert encode_transcript("ab bn", tokens) == ("ab bn", [0, 1, 1, 2])
    al = align_logits(x, "ab bn", tokens, 4, 0.02)
    assert [(w.text, w.start, w.end) for w in al.words] == [("ab", 0.02, 0.08), ("bn", 0.10, 0.14)]


def test_cli_align_a_transformers_checkpoint_with_an_upper_case_vocabulary(tmp_path, capsys):
    pytest.importorskip("transformers")
    from tiny_inference_model import save_transformers_checkpoint, write_corpus

    from fastctc.cli import main

    model = save_transformers_checkpoint(tmp_path / "hf")
    _, utts = write_corpus(tmp_path / "corpus", n=1)
    assert main(["align", str(model), str(tmp_path / "corpus" / "u0.wav"), utts[0].text]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["transcript"] == utts[0].text.upper()
    assert [w["text"] for w in doc["words"]] == utts[0].text.upper().split()
