"""`fastctc convert IN_DIR OUT_DIR`: a pytorch_model.bin checkpoint directory -> model.safetensors.

The .bin is read with `torch.load(weights_only=True)`, which refuses anything but tensors and plain
containers: a checkpoint is never fully unpickled. Other files (config.json, vocab.json, ...) are copied.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import CheckpointError


def _tensors(bin_file: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(bin_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's message advises weights_only=False, i.e. running the code
        called = re.search(r"GLOBAL (\S+)", str(e))
        raise CheckpointError(
            f"{bin_file}: refused: the pickle calls {called.group(1) if called else 'code'}, not only tensors, and "
            "fastctc never runs code from a checkpoint; get the checkpoint as model.safetensors, or a "
            "pytorch_model.bin that holds only its state_dict"
        ) from None
    except Exception as e:  # truncated or not a checkpoint: torch raises EOFError, OSError, RuntimeError, KeyError
        why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise CheckpointError(
            f"{bin_file}: damaged or not a PyTorch checkpoint ({why}); download or copy it again"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{bin_file}: expected a flat dict of tensors (a state_dict)")
    # safetensors refuses tensors that share storage; old checkpoints can hold views of one buffer
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def convert(in_dir, out_dir) -> list[Path]:
    """Write OUT_DIR/model.safetensors (or shards + index) from IN_DIR's pytorch_model.bin (or its shards)."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    created = not out_dir.exists()
    try:
        return _convert(in_dir, out_dir)
    except BaseException:  # a refused or damaged input leaves no half-written OUT_DIR behind
        if created and out_dir.is_dir():
            shutil.rmtree(out_dir)
        raise


def _convert(in_dir: Path, out_dir: Path) -> list[Path]:
    single, index = in_dir / "pytorch_model.bin", in_dir / "pytorch_model.bin.index.json"
    if not single.exists() and not index.exists():
        raise CheckpointError(f"{in_dir}: no pytorch_model.bin or pytorch_model.bin.index.json to convert")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if single.exists():
        save_file(_tensors(single), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
        written.append(out_dir / "model.safetensors")
    else:
        weight_map = json.loads(index.read_text())["weight_map"]
        renamed = {}
        for shard in sorted(set(weight_map.values())):
            name = shard.replace("pytorch_model", "model").replace(".bin", ".safetensors")
            save_file(_tensors(in_dir / shard), str(out_dir / name), metadata={"format": "pt"})
            renamed[shard] = name
            written.append(out_dir / name)
        new_index = {"metadata": {}, "weight_map": {k: renamed[v] for k, v in weight_map.items()}}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(new_index, indent=2) + "\n")
    for f in in_dir.iterdir():
        if f.is_file() and not f.name.startswith("pytorch_model") and not (out_dir / f.name).exists():
            shutil.copy2(f, out_dir / f.name)
    return written
