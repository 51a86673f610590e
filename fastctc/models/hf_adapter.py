"""MMS language adapters in and out: `adapter.<lang>.safetensors`, as transformers' Wav2Vec2ForCTC.load_adapter
reads it and run_speech_recognition_ctc_adapter.py writes it (`model._get_adapters()`).

The file holds every layer's attention adapter (`wav2vec2.encoder.layers.N.adapter_layer.*`) and the
language's CTC head (`lm_head.*`), nothing else; its head may be another width than the checkpoint's own
(each language has its own vocabulary). The same tensors are what `model.train_only = "adapters"` trains.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError
from .config import ADAPTER_FILE, ADAPTER_LANGUAGE
from .ctc_model import CTCModel


def adapter_file(directory, language: str) -> Path:
    """Where the adapter of `language` lives in a checkpoint directory (transformers' WAV2VEC2_ADAPTER_SAFE_FILE)."""
    if not ADAPTER_LANGUAGE.fullmatch(language):
        raise ValueError(f"adapter language {language!r}: use letters, digits, '_' or '-' (e.g. 'tur')")
    return Path(directory) / ADAPTER_FILE.format(language)


def adapter_parameters(model: CTCModel) -> dict[str, torch.nn.Parameter]:
    """The adapter file's tensors by native name: every layer's adapter, then the CTC head."""
    if model.config.adapter_attn_dim is None:
        raise ValueError("the model has no attention adapters (adapter_attn_dim is not set)")
    named = dict(model.named_parameters())
    return {n: p for n, p in named.items() if ".adapter_layer." in n or n.startswith("lm_head.")}


def languages_in(directory) -> list[str]:
    """The languages whose adapter files a checkpoint directory holds."""
    return sorted(p.name[len("adapter.") : -len(".safetensors")] for p in Path(directory).glob("adapter.*.safetensors"))


def _missing(file: Path) -> str:
    found = languages_in(file.parent)
    listed = (
        f"it holds adapters for {', '.join(found[:20])}{' ...' if len(found) > 20 else ''}"
        if found
        else "it holds none"
    )
    return f"{file}: no such adapter file ({listed}); check model.adapter_language, or leave it empty"


def adapter_head_width(directory, language: str) -> int:
    """Rows of the language's CTC head (its vocabulary size); reads the file's header only."""
    file = adapter_file(directory, language)
    if not file.is_file():
        raise CheckpointError(_missing(file))
    try:
        with safe_open(str(file), framework="pt") as f:
            return f.get_slice("lm_head.weight").get_shape()[0]
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file}: damaged or not a safetensors file ({e}); download or copy it again") from None


def read_adapter(directory, language: str, model: CTCModel) -> dict[str, torch.Tensor]:
    """The adapter file of `language` under native names, in the model's dtype. As load_adapter, its keys
    must be exactly the model's adapter tensors and head; any other key, a missing one or a shape that
    differs raises, naming the file."""
    file = adapter_file(directory, language)
    if not file.is_file():
        raise CheckpointError(_missing(file))
    expected = adapter_parameters(model)
    loaded, unexpected, mismatched = {}, [], []
    try:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                target = _native(key, model)
                if target not in expected:
                    unexpected.append(key)
                    continue
                tensor = f.get_tensor(key)
                if tensor.shape != expected[target].shape:
                    mismatched.append(f"{key} {tuple(tensor.shape)}, the model's {tuple(expected[target].shape)}")
                    continue
                loaded[target] = tensor.to(expected[target].dtype)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file}: damaged or not a safetensors file ({e}); download or copy it again") from None
    if unexpected:
        raise KeyError(f"{file}: keys that are not the model's adapters or CTC head: {unexpected}")
    if mismatched:
        raise ValueError(f"{file}: shape mismatches (another adapter_attn_dim or hidden_size?): {mismatched}")
    missing = [n for n in expected if n not in loaded]
    if missing:
        raise KeyError(f"{file}: adapter tensors missing: {[_file_key(n, model) for n in missing]}")
    return loaded


# The adapters' and the head's native names are their checkpoint keys (hf_weights.WEIGHT_MAP maps them
# to themselves); in the file the adapters carry the *ForCTC prefix and the head none.
def _file_key(native: str, model: CTCModel) -> str:
    return native if native.startswith("lm_head.") else f"{model.config.model_type}.{native}"


def _native(key: str, model: CTCModel) -> str:
    prefix = model.config.model_type + "."
    return key[len(prefix) :] if key.startswith(prefix) else key


def write_adapter(model: CTCModel, directory, language: str) -> Path:
    """adapter.<language>.safetensors in `directory`: the model's adapters and CTC head in float32, under
    the keys load_adapter reads (the *ForCTC prefix on the adapters, none on the head)."""
    file = adapter_file(directory, language)
    tensors = {
        _file_key(name, model): p.detach().to("cpu", torch.float32).contiguous()
        for name, p in adapter_parameters(model).items()
    }
    save_file(tensors, str(file), metadata={"format": "pt"})
    return file
