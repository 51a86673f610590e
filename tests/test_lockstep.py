"""bench/recipe_lockstep.py's `same` and `--order` reading: the two order.json shapes (fastctc's epochs of
batches, a RecordingSampler's epochs of indices) and masks drawn over different frame counts, on files
written here with known differences."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]


def _lockstep():
    spec = importlib.util.spec_from_file_location("recipe_lockstep", ROOT / "bench" / "recipe_lockstep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(folder: Path, order, masks: list[torch.Tensor] | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "order.json").write_text(json.dumps({"order": order}))
    if masks is not None:
        save_file({f"{i:06d}": m.to(torch.uint8) for i, m in enumerate(masks)}, str(folder / "masks.safetensors"))
    return folder


def test_flat_order_reads_both_shapes(tmp_path):
    lockstep = _lockstep()
    batches = _write(tmp_path / "a", [[[3, 1], [0, 2]], [[2], [1, 0, 3]]])
    flat = _write(tmp_path / "b", [[3, 1, 0, 2], [2, 1, 0, 3]])

    def read(folder):
        return lockstep._flat_order(json.loads((folder / "order.json").read_text())["order"])

    assert read(batches) == [[3, 1, 0, 2], [2, 1, 0, 3]]
    assert read(flat) == read(batches)


def test_same_counts_equal_epochs_and_masks(tmp_path, capsys):
    lockstep = _lockstep()
    g = torch.Generator().manual_seed(0)
    short = [torch.rand(2, 5, generator=g) < 0.3 for _ in range(4)]
    # fastctc pads the Trainer's mask (drawn over the longest row's frames) to its own frame count
    padded = [torch.cat([m, torch.zeros(2, 3, dtype=torch.bool)], 1) for m in short]
    changed = [m.clone() for m in padded]
    changed[2][1, 0] = not changed[2][1, 0]
    changed[3][0, 6] = True  # a span in the padding: not the Trainer's mask
    a = _write(tmp_path / "a", [[[0, 1], [2, 3]], [[1, 0], [3, 2]], [[2, 3], [0, 1]]], padded)
    b = _write(tmp_path / "b", [[0, 1, 2, 3], [1, 0, 2, 3], [2, 3, 0, 1]], short)
    c = _write(tmp_path / "c", [[0, 1, 2, 3], [1, 0, 3, 2]], changed)

    lockstep.same(a, b)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "order: 2 of 3 common epochs equal (3 and 3 epochs); the first that differs: epoch 1"
    assert out[1] == "masks: 4 of 4 equal (4 and 4 drawn)"

    lockstep.same(c, b)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "order: 1 of 2 common epochs equal (2 and 3 epochs); the first that differs: epoch 1"
    assert out[1] == "masks: 2 of 4 equal (4 and 4 drawn); the first that differs: mask 2"

    (c / "masks.safetensors").unlink()
    lockstep.same(a, c)
    assert capsys.readouterr().out.splitlines()[1] == "masks: not both recorded"
