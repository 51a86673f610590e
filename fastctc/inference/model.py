"""A finished CTC model loaded for inference, with what decoding and preprocessing need.

MODEL is a Transformers-format CTC checkpoint directory (config.json, model.safetensors, vocab.json;
preprocessor_config.json optional), or a fastctc run directory, whose `best/` or `model/` it uses.
The checkpoint's own conventions apply: `do_normalize` from its preprocessor config (default true), and
no attention mask when the preprocessor says `return_attention_mask: false` (group-norm checkpoints).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.text import WORD_DELIMITER


@dataclass
class DecoderVocab:
    """ids -> text for any CTC vocab.json: fastctc's ([UNK], [PAD]) or other tokenizers' (<pad>, <unk>, ...)."""

    tokens: list[str]
    blank: int
    specials: frozenset[int]

    def decode(self, ids) -> str:
        chars = (self.tokens[i] for i in ids if i != self.blank and i not in self.specials)
        return " ".join("".join(" " if c == WORD_DELIMITER else c for c in chars).split())


@dataclass
class LoadedModel:
    model: torch.nn.Module
    vocab: DecoderVocab
    do_normalize: bool
    use_lengths: bool
    path: Path


def resolve_model_dir(path: str | Path) -> Path:
    path = Path(path)
    for candidate in (path, path / "best", path / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    raise SystemExit(
        f"{path}: no model here; expected a Transformers-format checkpoint (config.json + model.safetensors "
        "+ vocab.json) or a fastctc run directory holding best/ or model/"
    )


def load_model(path: str | Path, device: torch.device) -> LoadedModel:
    from ..models import load_pretrained

    path = resolve_model_dir(path)
    vocab_file = path / "vocab.json"
    if not vocab_file.is_file():
        raise SystemExit(f"{path}: no vocab.json, so the CTC head's ids cannot be turned into text")
    index = json.loads(vocab_file.read_text(encoding="utf-8"))
    tokens = sorted(index, key=index.get)
    config = json.loads((path / "config.json").read_text())
    blank = config.get("pad_token_id")
    if blank is None:
        blank = index.get("[PAD]", index.get("<pad>"))
    if blank is None:
        raise SystemExit(f"{path}: cannot tell the CTC blank: config.json has no pad_token_id and vocab.json no [PAD]/<pad>")
    specials = frozenset(i for t, i in index.items() if t in ("<s>", "</s>", "[UNK]", "<unk>"))
    pre_file = path / "preprocessor_config.json"
    pre = json.loads(pre_file.read_text()) if pre_file.is_file() else {}
    model = load_pretrained(path).to(device).eval()
    if model.config.vocab_size != len(tokens):
        raise SystemExit(f"{path}: vocab.json has {len(tokens)} tokens but the CTC head {model.config.vocab_size}")
    return LoadedModel(
        model=model,
        vocab=DecoderVocab(tokens, int(blank), specials),
        do_normalize=bool(pre.get("do_normalize", True)),
        use_lengths=bool(pre.get("return_attention_mask", model.config.feat_extract_norm == "layer")),
        path=path,
    )
