"""Training checkpoints: everything needed to continue a run exactly, without pickle.

A checkpoint is a directory:

    model.safetensors      the model's state_dict
    optimizer.safetensors  every tensor of the optimizer's state, keyed "state.{param index}.{name}"
    rng.safetensors        torch CPU (and CUDA) generator states, one set per DDP rank
    state.json             step, epoch, sampler position, param groups, scheduler, scaler, Python and
                           NumPy RNG states, and whatever else the loop records

No file is ever unpickled (resume never calls torch.load), so a checkpoint from elsewhere cannot run code.

Saving is atomic: the directory is written under a temporary name, flushed, then swapped in with
renames, so a crash at any moment leaves either the previous good checkpoint or the new one
(`load_checkpoint` also recovers the previous one from `NAME.old` if a crash hit between renames).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON-able rest."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = value
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda.{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted(k for k in tensors if k.startswith("torch_cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler | None,
    state: dict,
    rng_states: list[tuple[dict, dict]] | None = None,
) -> None:
    """Atomically write a checkpoint to `directory` (replacing any previous one).

    rng_states: every rank's `rng_state()` under DDP (rank order), so each resumes its own streams;
    default: this process's alone.
    """
    directory = Path(directory)
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f"{directory.name}.tmp"
    old = parent / f"{directory.name}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()

    _save_tensors(tmp / "model.safetensors", model.state_dict())
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    _save_tensors(tmp / "optimizer.safetensors", opt_tensors)
    ranks = rng_states if rng_states is not None else [rng_state()]
    _save_tensors(tmp / "rng.safetensors", {f"rank{r}.{k}": v for r, (t, _) in enumerate(ranks) for k, v in t.items()})
    rng_meta = [meta for _, meta in ranks]
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    _write_json(tmp / "state.json", {
        **state,
        "optimizer": opt_meta,
        "scheduler": sched,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_meta,
    })
    _fsync_dir(tmp)

    # swap: current -> .old, tmp -> current, drop .old. A crash between the renames leaves .old,
    # which load_checkpoint falls back to.
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    tmp.rename(directory)
    _fsync_dir(parent)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(directory: Path) -> Path | None:
    """The complete checkpoint at `directory`, or its `.old` twin left by a crash mid-swap."""
    directory = Path(directory)
    for candidate in (directory, directory.parent / f"{directory.name}.old"):
        if (candidate / "state.json").is_file() and (candidate / "model.safetensors").is_file():
            return candidate
    return None


def _read(file: Path, read):
    """read(file), or a CheckpointError naming the damaged file and the previous checkpoint, if one is kept."""
    try:
        return read(file)
    except (OSError, ValueError, SafetensorError) as e:  # truncated, corrupted or missing
        previous = file.parent.parent / f"{file.parent.name}.old"
        offer = (f"; the previous checkpoint {previous} is intact: move it to {file.parent} to resume from it"
                 if previous != file.parent and find_checkpoint(previous) == previous else
                 "; no earlier checkpoint is kept, so start the run again (without --resume)")
        raise CheckpointError(f"{file} is damaged ({str(e).splitlines()[0] if str(e) else type(e).__name__}){offer}") from None


def load_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler | None,
    rank: int = 0,
) -> dict:
    """Restore everything `save_checkpoint` wrote (RNG streams: `rank`'s); returns the loop's `state` dict."""
    found = find_checkpoint(directory)
    if found is None:
        raise FileNotFoundError(f"no complete checkpoint at {directory} (expected state.json and model.safetensors)")
    device = next(model.parameters()).device
    model.load_state_dict(_read(found / "model.safetensors", lambda f: load_file(str(f), device=str(device))))
    meta = _read(found / "state.json", lambda f: json.loads(f.read_text(encoding="utf-8")))
    optimizer_from_flat(optimizer, _read(found / "optimizer.safetensors", lambda f: load_file(str(f), device=str(device))),
                        meta.pop("optimizer"))
    scheduler.load_state_dict({**scheduler.state_dict(), **meta.pop("scheduler")})
    scaler_state = meta.pop("scaler")
    if scaler is not None and scaler_state is not None:
        scaler.load_state_dict(scaler_state)
    rng_meta = meta.pop("rng")
    if rank >= len(rng_meta):
        raise ValueError(f"{found} holds RNG states for {len(rng_meta)} ranks; resume with the same world size")
    prefix = f"rank{rank}."
    rng = _read(found / "rng.safetensors", lambda f: load_file(str(f)))
    tensors = {k[len(prefix):]: v for k, v in rng.items() if k.startswith(prefix)}
    set_rng_state(tensors, rng_meta[rank])
    return meta
