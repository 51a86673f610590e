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
