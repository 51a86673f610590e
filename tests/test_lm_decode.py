"""Beam search (fastctc.inference.lm) against greedy decoding, and a hand-written ARPA LM fixing the
errors a confused posterior stream makes. Skipped when the `[lm]` extra (flashlight-text) is absent."""

import math
from pathlib import Path

import pytest
import torch

from fastctc.decoding import greedy_ids
from fastctc.inference.lm import BeamDecoder, BeamOptions, LMError, arpa_words  # imports flashlight only when used

pytest.importorskip("flashlight.lib.text.decoder", reason="needs the [lm] extra: pip install 'fastctc[lm]'")

# fastctc's vocabulary layout: `|`, letters, [UNK], [PAD] (the blank, last)
TOKENS = ["|", "a", "c", "d", "g", "o", "t", "[UNK]", "[PAD]"]
IDX = {t: i for i, t in enumerate(TOKENS)}
BLANK = IDX["[PAD]"]


def text(ids):
    return " ".join("".join(" " if TOKENS[i] == "|" else TOKENS[i] for i in ids).split())


def peaked(seed: int, B: int, T: int, V: int, margin: float = 6.0):
    """Random logits whose argmax beats the runner-up by `margin` nats in every frame."""
    g = torch.Generator().manual_seed(seed)
    best = torch.randint(0, V, (B, T), generator=g)
    logits = torch.randn(B, T, V, generator=g)
    logits.scatter_(2, best[..., None], logits.max(-1, keepdim=True).values + margin)
    return logits


@pytest.mark.parametrize("seed", range(5))
def test_beam_without_lm_is_greedy_on_peaked_posteriors(seed):
    logits = peaked(seed, B=4, T=37, V=len(TOKENS))
    lengths = torch.tensor([37, 30, 1, 12])
    dec = BeamDecoder(TOKENS, BLANK, options=BeamOptions(beam=8))
    assert dec.decode(logits, lengths) == greedy_ids(logits, lengths, BLANK)


def test_beam_without_lm_zero_length_row():
    logits = peaked(9, B=2, T=5, V=len(TOKENS))
    dec = BeamDecoder(TOKENS, BLANK)
    assert dec.decode(logits, torch.tensor([5, 0]))[1] == []


# A bigram LM over "cat", "cot", "dog", "god": "the cat" is likely, "cot" nearly never follows
# "dog" ... the words below are all the LM knows. log10 probabilities, as ARPA writes them.
ARPA = """
\\data\\
ngram 1=6
ngram 2=4

\\1-grams:
-1.0\t<s>\t-0.3
-1.0\t</s>
-0.5\tcat\t-0.3
-3.0\tcot\t-0.3
-0.6\tdog\t-0.3
-3.0\tgod\t-0.3

\\2-grams:
-0.1\t<s> cat
-0.2\tcat dog
-0.2\tdog cat
-0.1\tdog </s>

\\end\\
"""


@pytest.fixture
def arpa(tmp_path):
    path = tmp_path / "words.arpa"
    path.write_text(ARPA.lstrip())
    return path


def confusing_stream(spellings: list[list[tuple[str, float]]]):
    """Log-probs (1, T, V): per character slot, the listed characters share the mass, each slot
    followed by a blank frame; words separated by a `|` frame."""
    frames = []
    for w, word in enumerate(spellings):
        if w:
            frames.append({"|": 0.95})
        for slot in word:
            frames.append(dict(slot))
            frames.append({"[PAD]": 0.95})
    lp = torch.full((1, len(frames), len(TOKENS)), 1e-4)
    for t, probs in enumerate(frames):
        for c, p in probs.items():
            lp[0, t, IDX[c]] = p
    return (lp / lp.sum(-1, keepdim=True)).log()


def test_arpa_words_reads_the_unigrams(arpa):
    assert arpa_words(arpa) == ["cat", "cot", "dog", "god"]


def test_lm_fixes_what_the_acoustics_confuse(arpa):
    # acoustics prefer "cot" (o 0.55 over a 0.45) and "god" (g 0.55 over d 0.45): greedy says "cot god"
    lp = confusing_stream(
        [
            [[("c", 0.95)], [("o", 0.55), ("a", 0.45)], [("t", 0.95)]],
            [[("g", 0.55), ("d", 0.45)], [("o", 0.95)], [("d", 0.55), ("g", 0.45)]],
        ]
    )
    n = torch.tensor([lp.shape[1]])
    assert text(greedy_ids(lp, n, BLANK)[0]) == "cot god"
    assert text(BeamDecoder(TOKENS, BLANK).decode_log_probs(lp, n)[0]) == "cot god"
    with_lm = BeamDecoder(TOKENS, BLANK, lm=arpa, options=BeamOptions(beam=20, lm_weight=1.0))
    assert text(with_lm.decode_log_probs(lp, n)[0]) == "cat dog"
    # with the LM weighted down to nothing, the lexicon alone cannot tell: the acoustics win again
    no_weight = with_lm.with_options(lm_weight=0.0)
    assert text(no_weight.decode_log_probs(lp, n)[0]) == "cot god"


def test_lexicon_keeps_words_the_lm_knows(arpa):
    # "cag" is not a word: with the LM, the decoder must choose a lexicon word
    lp = confusing_stream([[[("c", 0.95)], [("a", 0.95)], [("g", 0.6), ("t", 0.4)]]])
    n = torch.tensor([lp.shape[1]])
    assert text(greedy_ids(lp, n, BLANK)[0]) == "cag"
    assert text(BeamDecoder(TOKENS, BLANK, lm=arpa).decode_log_probs(lp, n)[0]) == "cat"


def test_missing_lm_file_is_one_clear_error(tmp_path):
    with pytest.raises(LMError, match="language model file not found: .*nope.arpa"):
        BeamDecoder(TOKENS, BLANK, lm=tmp_path / "nope.arpa")


def test_kenlm_binary_needs_a_word_list(tmp_path):
    fake = tmp_path / "lm.bin"
    fake.write_bytes(b"mmap lm http://kheafield.com/code format version 5\0" + bytes(64))
    with pytest.raises(LMError, match="KenLM binary.*--lexicon"):
        BeamDecoder(TOKENS, BLANK, lm=fake)


def test_lm_whose_words_the_vocabulary_cannot_spell(tmp_path):
    path = tmp_path / "other.arpa"
    path.write_text(ARPA.replace("cat", "xyz").replace("cot", "qqq").replace("dog", "ÿÿ").replace("god", "zz"))
    with pytest.raises(LMError, match="none of its 4 words can be spelled"):
        BeamDecoder(TOKENS, BLANK, lm=path)


def test_not_an_arpa_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\nworld\n")
    with pytest.raises(LMError, match="no \\\\1-grams section"):
        BeamDecoder(TOKENS, BLANK, lm=path)


@pytest.mark.parametrize("kwargs", [dict(beam=0), dict(lm_weight=math.nan)])
def test_bad_options(kwargs):
    with pytest.raises(LMError):
        BeamDecoder(TOKENS, BLANK, options=BeamOptions(**kwargs))


def test_uppercase_lm_words_match_a_lowercase_vocabulary(tmp_path):
    path = tmp_path / "upper.arpa"
    path.write_text(
        ARPA.lstrip().replace("cat", "CAT").replace("cot", "COT").replace("dog", "DOG").replace("god", "GOD")
    )
    lp = confusing_stream([[[("c", 0.95)], [("a", 0.95)], [("g", 0.6), ("t", 0.4)]]])
    n = torch.tensor([lp.shape[1]])
    assert text(BeamDecoder(TOKENS, BLANK, lm=path).decode_log_probs(lp, n)[0]) == "cat"


# ---- the command line ---------------------------------------------------------------------------


def corpus_arpa(path, texts):
    """A bigram ARPA (uniform, every word pair) over the words of `texts`."""
    words = sorted({w for t in texts for w in t.split()})
    uni = ["-99\t<s>\t0", "-1\t</s>"] + [f"-1\t{w}\t0" for w in words]
    bi = [f"-1\t<s> {w}" for w in words] + [f"-1\t{w} </s>" for w in words]
    path.write_text(
        "\\data\\\nngram 1=%d\nngram 2=%d\n\n\\1-grams:\n%s\n\n\\2-grams:\n%s\n\n\\end\\\n"  # noqa: UP031
        % (len(uni), len(bi), "\n".join(uni), "\n".join(bi))
    )
    return path


def test_cli_eval_with_lm_sweep_and_transcribe_with_lm(tmp_path, capsys):
    import json

    from tiny_inference_model import save_tiny_model, write_corpus

    from fastctc.cli import main

    model = save_tiny_model(tmp_path / "model")
    manifest, utts = write_corpus(tmp_path / "corpus", n=3)
    arpa = corpus_arpa(tmp_path / "lm.arpa", [u.text for u in utts])
    args = ["eval", str(model), "--data", str(manifest), "--lm", str(arpa), "--beam", "8"]
    assert main(args + ["--lm-sweep", "--lm-weights", "0,1", "--word-scores", "0"]) == 0
    out = capsys.readouterr().out
    assert "lm_weight word_score" in out and "best: --lm-weight" in out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["decoder"] == "beam" and result["beam"] == 8 and result["decode_audio_s_per_s"] > 0
    # a lexicon decoder only outputs LM words
    assert main(["transcribe", str(model), str(tmp_path / "corpus" / "u0.wav"), "--lm", str(arpa)]) == 0
    hyp = capsys.readouterr().out.split("\t")[1].split()
    assert set(hyp) <= {w for u in utts for w in u.text.split()}


def test_cli_missing_lm_file_is_one_line(tmp_path, capsys):
    from tiny_inference_model import save_tiny_model, write_corpus

    from fastctc.cli import main

    model = save_tiny_model(tmp_path / "model")
    manifest, _ = write_corpus(tmp_path / "corpus", n=1)
    assert main(["eval", str(model), "--data", str(manifest), "--lm", str(tmp_path / "missing.arpa")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"fastctc eval: language model file not found: {tmp_path / 'missing.arpa'} "
        "(pass an ARPA or KenLM binary file to --lm)"
    )


def test_kenlm_binary_with_a_word_list_decodes_as_its_arpa(arpa, tmp_path):
    # tests/lm_words_bigram.klm: KenLM's build_binary (kenlm 0.3.0 sources) run on ARPA above
    words = tmp_path / "words.txt"
    words.write_text("cat\ncot\ndog\ngod\n")
    binary = Path(__file__).parent / "lm_words_bigram.klm"
    lp = confusing_stream(
        [
            [[("c", 0.95)], [("o", 0.55), ("a", 0.45)], [("t", 0.95)]],
            [[("g", 0.55), ("d", 0.45)], [("o", 0.95)], [("d", 0.55), ("g", 0.45)]],
        ]
    )
    n = torch.tensor([lp.shape[1]])
    options = BeamOptions(beam=20, lm_weight=1.0)
    from_binary = BeamDecoder(TOKENS, BLANK, lm=binary, lexicon=words, options=options).decode_log_probs(lp, n)
    assert from_binary == BeamDecoder(TOKENS, BLANK, lm=arpa, options=options).decode_log_probs(lp, n)
    assert text(from_binary[0]) == "cat dog"


def test_cli_transcribe_with_lm_on_a_transformers_checkpoint(tmp_path, capsys):
    pytest.importorskip("transformers")
    from tiny_inference_model import save_transformers_checkpoint, write_corpus

    from fastctc.cli import main

    model = save_transformers_checkpoint(tmp_path / "hf")
    _, utts = write_corpus(tmp_path / "corpus", n=2)
    arpa = corpus_arpa(tmp_path / "lm.arpa", [u.text for u in utts])  # lower-case LM, upper-case model
    assert main(["transcribe", str(model), str(tmp_path / "corpus" / "u0.wav"), "--lm", str(arpa)]) == 0
    hyp = capsys.readouterr().out.split("\t")[1].split()
    assert hyp and set(hyp) <= {w.upper() for u in utts for w in u.text.split()}
