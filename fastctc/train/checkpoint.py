"""Training checkpoints: everything needed to continue a run exactly, without pickle.

A checkpoint is a directory:

    model.safetensors      the model's state_dict
    optimizer.safetensors  every tensor of the optimizer's state, keyed "state.{param index}.{name}"
    rng.safetensors        torch CPU (and CUDA) generator states and the run's own generators
                           (augmentation's), one set per DDP rank
    state.json             step, epoch, sampler position, param groups, scheduler, scaler, Python and
                           NumPy RNG states, and whatever else the loop records
    average.safetensors    the weight average's parameters (train.weight_average), when the run keeps one

No file is ever unpickled (resume never calls torch.load), so a checkpoint from elsewhere cannot run code.

Saving is atomic: the directory is written under a temporary name, flushed, then swapped in with
renames, so a crash at any moment leaves either the previous good checkpoint or the new one
(`load_checkpoint` also recovers the previous one from `NAME.old` if a crash hit between renames).
A save that fails (a full disk) removes its temporary directory and leaves the previous checkpoint.
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

FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")
AVERAGE_FILE = "average.safetensors"  # only in the checkpoints of runs with a weight average


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


def rng_state(generators: dict[str, torch.Generator] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """This process's random streams: torch's (CPU, CUDA), Python's, NumPy's and `generators` by name."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    for name, g in (generators or {}).items():
        tensors[f"generator.{name}"] = g.get_state()
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


def set_rng_state(
    tensors: dict[str, torch.Tensor], meta: dict, generators: dict[str, torch.Generator] | None = None
) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    for name, g in (generators or {}).items():
        if f"generator.{name}" not in tensors:
            raise CheckpointError(
                f"the checkpoint holds no state for the {name} generator (saved by a run without it); "
                "resume with the run's own config.toml"
            )
        g.set_state(tensors[f"generator.{name}"])
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
    average: dict[str, torch.Tensor] | None = None,
) -> None:
    """Atomically write a checkpoint to `directory` (replacing any previous one).

    rng_states: every rank's `rng_state()` under DDP (rank order), so each resumes its own streams;
    default: this process's alone. average: the weight average's tensors (WeightAverage.state_dict()).
    """
    directory = Path(directory)
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f"{directory.name}.tmp"
    old = parent / f"{directory.name}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        if average is not None:
            _save_tensors(tmp / AVERAGE_FILE, average)
        _write(tmp, model, optimizer, scheduler, scaler, state, rng_states)
    except BaseException:  # a full disk, a second signal: the previous checkpoint stays, the partial copy goes
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    # swap: current -> .old, tmp -> current, drop .old. A crash between the renames leaves .old,
    # which load_checkpoint falls back to.
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    tmp.rename(directory)
    _fsync_dir(parent)
    shutil.rmtree(old, ignore_errors=True)


def _write(tmp: Path, model, optimizer, scheduler, scaler, state: dict, rng_states) -> None:
    _save_tensors(tmp / "model.safetensors", model.state_dict())
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    _save_tensors(tmp / "optimizer.safetensors", opt_tensors)
    ranks = rng_states if rng_states is not None else [rng_state()]
    _save_tensors(tmp / "rng.safetensors", {f"rank{r}.{k}": v for r, (t, _) in enumerate(ranks) for k, v in t.items()})
    rng_meta = [meta for _, meta in ranks]
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    _write_json(
        tmp / "state.json",
        {
            **state,
            "optimizer": opt_meta,
            "scheduler": sched,
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
            "rng": rng_meta,
        },
    )
    _fsync_dir(tmp)


def find_checkpoint(directory: Path) -> Path | None:
    """The complete checkpoint at `directory`, or its `.old` twin left by a crash mid-swap; None if neither
    holds every file. The one answer to "is there a checkpoint to resume?" (the CLI, prepare_run, load)."""
    directory = Path(directory)
    for candidate in (directory, directory.parent / f"{directory.name}.old"):
        if all((candidate / name).is_file() for name in FILES):
            return candidate
    return None


def read_state(directory: Path) -> dict:
    """state.json of the checkpoint `find_checkpoint(directory)` finds (step, epoch, ..., rng), without
    touching the weights; a CheckpointError naming the file when it is damaged."""
    found = find_checkpoint(directory)
    if found is None:
        raise FileNotFoundError(f"no complete checkpoint at {directory} (expected {', '.join(FILES)})")
    return _read(found / "state.json", lambda f: json.loads(f.read_text(encoding="utf-8")))


def _read(file: Path, read):
    """read(file), or a CheckpointError naming the damaged file and the previous checkpoint, if one is kept."""
    try:
        return read(file)
    except (OSError, ValueError, SafetensorError) as e:  # truncated, corrupted or missing
        previous = file.parent.parent / f"{file.parent.name}.old"
        offer = (
            f"; the previous checkpoint {previous} is intact: move it to {file.parent} to resume from it"
            if previous != file.parent and find_checkpoint(previous) == previous
            else "; no earlier checkpoint is kept, so start the run again (without --resume)"
        )
        raise CheckpointError(
            f"{file} is damaged ({str(e).splitlines()[0] if str(e) else type(e).__name__}){offer}"
        ) from None


def load_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler | None,
    rank: int = 0,
    world_size: int = 1,
    generators: dict[str, torch.Generator] | None = None,
) -> dict:
    """Restore everything `save_checkpoint` wrote (RNG streams: `rank`'s, of `world_size` processes, the
    number that saved it; `generators`, the run's own, by the names rng_state saved them under); returns
    the loop's `state` dict."""
    meta = read_state(directory)
    found = find_checkpoint(directory)
    if len(meta["rng"]) != world_size:
        raise CheckpointError(
            f"{found} was saved by {len(meta['rng'])} processes, and this run has {world_size}: "
            f"the per-process batches and random streams follow that number; resume with "
            f"{len(meta['rng'])} (torchrun --nproc_per_node {len(meta['rng'])})"
        )
    device = next(model.parameters()).device
    weights = _read(found / "model.safetensors", lambda f: load_file(str(f), device=str(device)))
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:  # shapes or names from another model (the run's config.toml edited by hand)
        raise CheckpointError(
            f"{found / 'model.safetensors'} does not fit this run's model "
            f"({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}); "
            "resume with the run's own config.toml"
        ) from None
    optimizer_from_flat(
        optimizer,
        _read(found / "optimizer.safetensors", lambda f: load_file(str(f), device=str(device))),
        meta.pop("optimizer"),
    )
    scheduler.load_state_dict({**scheduler.state_dict(), **meta.pop("scheduler")})
    scaler_state = meta.pop("scaler")
    if scaler is not None and scaler_state is not None:
        scaler.load_state_dict(scaler_state)
    rng_meta = meta.pop("rng")
    prefix = f"rank{rank}."
    rng = _read(found / "rng.safetensors", lambda f: load_file(str(f)))
    tensors = {k[len(prefix) :]: v for k, v in rng.items() if k.startswith(prefix)}
    set_rng_state(tensors, rng_meta[rank], generators)
    return meta


def load_average(directory: Path) -> dict[str, torch.Tensor]:
    """The weight average `save_checkpoint` wrote (on the CPU); a CheckpointError when the checkpoint has none."""
    found = find_checkpoint(directory)
    if found is None or not (found / AVERAGE_FILE).is_file():
        raise CheckpointError(
            f"{directory} holds no {AVERAGE_FILE}: the run was saved without train.weight_average; "
            "resume it with the run's own config.toml"
        )
    return _read(found / AVERAGE_FILE, lambda f: load_file(str(f)))
