"""A finished CTC model loaded for inference.

MODEL is a Transformers-format CTC checkpoint directory (config.json, model.safetensors, vocab.json;
tokenizer and preprocessor files optional), or a fastctc run directory, whose `best/` or `model/` it
uses. The checkpoint is read by `fastctc.models.read_pretrained`, so its own conventions apply.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from ..models.hf_weights import Pretrained, read_pretrained
from ..vocab import DecoderVocab

LoadedModel = Pretrained  # what inference works with: the model, its vocabulary and conventions

__all__ = ["DecoderVocab", "LoadedModel", "load_model", "resolve_model_dir"]


def resolve_model_dir(path: str | Path) -> Path:
    path = Path(path)
    for candidate in (path, path / "best", path / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    raise CheckpointError(
        f"{path}: no model here; expected a Transformers-format checkpoint (config.json + model.safetensors "
        "+ vocab.json) or a fastctc run directory holding best/ or model/"
    )


def load_model(path: str | Path, device: torch.device) -> LoadedModel:
    """The checkpoint at `path` (see resolve_model_dir) on `device`, in eval mode, with its vocabulary."""
    path = resolve_model_dir(path)
    loaded = read_pretrained(path)
    if loaded.vocab is None:
        raise CheckpointError(f"{path}: no vocab.json, so the CTC head's ids cannot be turned into text")
    loaded.model.to(device).eval()
    return loaded
