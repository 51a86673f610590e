"""WER and CER against jiwer on randomised strings; greedy CTC decoding; the character vocabulary."""

import itertools
import random

import jiwer
import pytest
import torch

from fastctc.data.text import CharVocab, normalise
from fastctc.decoding import greedy_decode, greedy_ids
from fastctc.metrics import cer, edit_distance, wer


def _random_sentence(rng: random.Random, alphabet: str) -> str:
    words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 8))]
    seps = [rng.choice([" ", " ", " ", "  ", "\t", " \n "]) for _ in words]
    return rng.choice(["", " ", "  "]) + "".join(w + s for w, s in zip(words, seps))


@pytest.mark.parametrize("seed", range(5))
def test_wer_cer_equal_jiwer_on_random_corpora(seed):
    rng = random.Random(seed)
    alphabet = "abcde" if seed % 2 else "ab"  # a tiny alphabet makes many near-matches
    refs = [_random_sentence(rng, alphabet) for _ in range(rng.randint(1, 40))]
    hyps = []
    for r in refs:
        mode = rng.random()
        hyps.append(r if mode < 0.2 else "" if mode < 0.3 else _random_sentence(rng, alphabet))
    assert wer(refs, hyps) == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
    assert cer(refs, hyps) == pytest.approx(jiwer.cer(refs, hyps), abs=1e-12)


def test_corpus_rate_is_not_a_mean_of_utterance_rates():
    refs, hyps = ["a b c d", "e"], ["a b c d", "x"]
    assert wer(refs, hyps) == pytest.approx(1 / 5)  # a mean of per-utterance rates would give 0.5


def test_edit_distance_reference():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance(["a", "b"], ["a", "b"]) == 0


def _groupby_decode(ids, blank):
    return [k for k, _ in itertools.groupby(ids) if k != blank]


def test_greedy_ids_match_groupby_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 40, 5, generator=g)
    lengths = torch.tensor([40, 1, 17, 0, 33, 39])
    for blank in (0, 4):
        got = greedy_ids(logits, lengths, blank)
        best = logits.argmax(-1)
        for row, n, ids in zip(best, lengths.tolist(), got):
            assert ids == _groupby_decode(row[:n].tolist(), blank)


def test_greedy_decode_collapses_repeats_and_keeps_blank_separated_doubles():
    vocab = CharVocab.from_transcripts(["ab ba"])  # tokens: a b | [UNK] [PAD]
    a, b, sep, pad = vocab.index["a"], vocab.index["b"], vocab.index["|"], vocab.blank
    frames = [a, a, pad, a, b, b, sep, sep, b, pad, pad, pad]
    logits = torch.full((1, len(frames), len(vocab)), -5.0)
    logits[0, torch.arange(len(frames)), torch.tensor(frames)] = 5.0
    assert greedy_decode(logits, torch.tensor([len(frames)]), vocab) == ["aab b"]
    assert greedy_decode(logits, torch.tensor([4]), vocab) == ["aa"]


def test_vocab_follows_recipe_and_round_trips(tmp_path):
    texts = [normalise("Hello, World!"), normalise("  she   HAD your-dark suit ")]
    assert texts == ["hello world", "she had yourdark suit"]
    vocab = CharVocab.from_transcripts(texts)
    assert vocab.tokens[-2:] == ["[UNK]", "[PAD]"] and vocab.blank == len(vocab) - 1
    assert "|" in vocab.tokens and " " not in vocab.tokens
    # sorted characters with the space's slot renamed "|", as the recipe builds it
    chars = [" " if t == "|" else t for t in vocab.tokens[:-2]]
    assert chars == sorted(set("".join(texts)))
    for t in texts:
        assert vocab.decode(vocab.encode(t)) == t
    assert vocab.encode("z")[0] == vocab.unk
    vocab.save(tmp_path / "vocab.json")
    assert CharVocab.load(tmp_path / "vocab.json").tokens == vocab.tokens


def test_vocab_json_loads_in_transformers_tokenizer(tmp_path):
    from transformers import Wav2Vec2CTCTokenizer

    vocab = CharVocab.from_transcripts(["the cat sat", "on a mat"])
    vocab.save(tmp_path / "vocab.json")
    tok = Wav2Vec2CTCTokenizer(
        str(tmp_path / "vocab.json"), unk_token="[UNK]", pad_token="[PAD]", word_delimiter_token="|"
    )
    assert tok.pad_token_id == vocab.blank
    assert tok("the cat").input_ids == vocab.encode("the cat")
    ids = vocab.encode("on a mat")
    assert tok.decode(ids, group_tokens=False) == vocab.decode(ids)
