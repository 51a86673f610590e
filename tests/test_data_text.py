"""Transcript normalisation and the character vocabulary as transformers' tokenizer reads it."""

from fastctc.data.text import PAD, UNK, CharVocab, normalise


def test_recipe_normalisation_and_configurable_characters():
    assert normalise('He said: "Don\'t — go!"  Fine; ok?  “x” 50% ‘y”') == "he said don't — go fine ok x 50 y"
    assert normalise("A-b, C.", chars_to_ignore="", lowercase=False) == "A-b, C."
    assert normalise("  ...  ") == ""


def test_vocab_json_loads_in_wav2vec2_tokenizer_and_round_trips(tmp_path):
    from transformers import Wav2Vec2CTCTokenizer

    texts = ["she had your dark suit", "don't ask me"]
    vocab = CharVocab.from_transcripts(texts)
    assert vocab.tokens[-2:] == [UNK, PAD] and vocab.blank == len(vocab) - 1 and "|" in vocab.tokens
    vocab.save(tmp_path / "vocab.json")
    tok = Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), unk_token=UNK, pad_token=PAD, word_delimiter_token="|")
    for text in texts:
        ids = vocab.encode(text)
        assert tok(text).input_ids == ids
        assert tok.decode(ids, group_tokens=False) == text == vocab.decode(ids)
    assert tok.pad_token_id == vocab.blank
    assert CharVocab.load(tmp_path / "vocab.json").tokens == vocab.tokens
    assert vocab.encode("dq") == [vocab.index["d"], vocab.unk] and vocab.count_unknown("dq z!") == 3  # q, z and !


def test_recipe_vocabulary_switches_give_the_scripts_tokenizer(tmp_path):
    """data.trailing_delimiter + model.bos_eos_tokens: the ids of the tokenizer the recipe builds (its vocab.json
    from transcripts + " ", then Wav2Vec2CTCTokenizer's added <s> and </s>), even for one-word transcripts."""
    import json

    from transformers import Wav2Vec2CTCTokenizer

    from fastctc.bench.recipe_reference import create_vocabulary_from_data

    texts = {"train": ["seven", "two", "zero"], "eval": ["nine"]}  # FSDD-like: no transcript has a space
    (tmp_path / "vocab.json").write_text(
        json.dumps(create_vocabulary_from_data({split: [t + " " for t in ts] for split, ts in texts.items()}))
    )
    tok = Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), unk_token=UNK, pad_token=PAD, word_delimiter_token="|")
    theirs = sorted(tok.get_vocab(), key=tok.get_vocab().get)
    all_texts = [t for ts in texts.values() for t in ts]
    vocab = CharVocab.from_transcripts(all_texts, delimiter=True, bos_eos=True)
    assert vocab.tokens == theirs and len(vocab) == len(tok)
    assert vocab.blank == tok.pad_token_id and vocab.index["<s>"] == tok.bos_token_id == vocab.blank + 1
    assert vocab.encode("seven ") == tok("seven ").input_ids
    # the defaults: no `|` without a space, no <s>/</s>
    assert CharVocab.from_transcripts(all_texts).tokens == [t for t in theirs if t not in ("|", "<s>", "</s>")]
    # <s> and </s> are never text
    assert vocab.decode([vocab.index["<s>"], *vocab.encode("two"), vocab.index["</s>"]]) == "two"
