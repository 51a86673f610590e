"""A small random CTC checkpoint and a manifest of generated speech on disk, for the inference CLI tests
(align, eval --lm/--report, transcribe in chunks). Written with soundfile into a tmp dir."""

import json

import numpy as np
import soundfile as sf
import torch

from fastctc.data.synthetic import make_utterance
from fastctc.models import CTCModel, EncoderConfig, save_pretrained

TOKENS = ["|", *"abcdefghijklmnopqrstuvwxyz", "[UNK]", "[PAD]"]


def save_tiny_model(directory, layers: int = 1, seed: int = 0, vocab=TOKENS, local: bool = False):
    """A random wav2vec2-layout model (layer-norm features, 320 samples per frame). local: attention's
    output projection zeroed, so each frame sees only the conv receptive field and the 8-frame positional
    conv (under 0.2 s): chunked logits must then equal whole-file logits."""
    cfg = EncoderConfig(
        vocab_size=len(vocab),
        pad_token_id=len(vocab) - 1,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=48,
        conv_dim=(16,) * 7,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        mask_time_prob=0.0,
    )
    torch.manual_seed(seed)
    model = CTCModel(cfg).eval()
    if local:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "attention.out_proj" in name:
                    p.zero_()
    save_pretrained(model, directory, vocab)
    return directory


def write_corpus(directory, n: int = 4, seed: int = 5):
    """n generated utterances as 16 kHz WAV files and a manifest.jsonl; returns (manifest, utterances)."""
    directory.mkdir(parents=True, exist_ok=True)
    utts = [make_utterance(seed, "eval", i) for i in range(n)]
    with open(directory / "manifest.jsonl", "w") as f:
        for i, u in enumerate(utts):
            sf.write(directory / f"u{i}.wav", u.audio, 16_000)
            f.write(json.dumps({"id": f"u{i}", "audio": f"u{i}.wav", "text": u.text}) + "\n")
    return directory / "manifest.jsonl", utts


def long_recording(path, n: int = 8, seed: int = 3) -> np.ndarray:
    audio = np.concatenate([make_utterance(seed, "train", i).audio for i in range(n)])
    sf.write(path, audio, 16_000, subtype="FLOAT")
    return audio


def save_transformers_checkpoint(path, seed: int = 0):
    """A checkpoint as transformers saves a 960h-style model: vocab <pad> <s> </s> <unk> | A..Z (upper
    case, blank = <pad> = 0), group-norm features without attention mask."""
    import transformers
    from hf_checkpoints import tiny_ctc_model

    index = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4}
    index.update({c: 5 + i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ")})
    path.mkdir(parents=True)
    (path / "vocab_in.json").write_text(json.dumps(index))
    tok = transformers.Wav2Vec2CTCTokenizer(str(path / "vocab_in.json"))
    (path / "vocab_in.json").unlink()
    hf = tiny_ctc_model("wav2vec2-base", seed=seed, vocab_size=len(index), pad_token_id=0)
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(path)
    return path


def tiny_phone_config(vocab, norm: str = "layer") -> EncoderConfig:
    """A random phone model's config: two conv layers (10 samples per frame), one transformer layer, vocab's
    outputs and its blank as the pad. norm "layer": wav2vec2-large's layout (layer-norm conv stack,
    pre-norm transformer); "group": wav2vec2-base's (group norm in the first conv, post-norm)."""
    return EncoderConfig(
        vocab_size=len(vocab),
        pad_token_id=vocab.blank,
        hidden_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=40,
        conv_dim=(8, 8),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=9,
        num_conv_pos_embedding_groups=2,
        mask_time_prob=0.0,
        feat_extract_norm=norm,
        do_stable_layer_norm=norm == "layer",
    )
