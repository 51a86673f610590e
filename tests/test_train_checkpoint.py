"""Training checkpoints: exact round trip without pickle, and atomic saves that survive a crash."""

import random

import numpy as np
import pytest
import torch

from fastctc.config import OptimConfig
from fastctc.train import checkpoint as ck
from fastctc.train.optim import build_optimizer, linear_schedule


def _setup(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.GELU(), torch.nn.Linear(7, 3))
    opt = build_optimizer(model, OptimConfig(lr=1e-2, warmup_steps=2, weight_decay=0.01), torch.device("cpu"))
    sched = linear_schedule(opt, 2, 20)
    return model, opt, sched


def _step(model, opt, sched):
    x = torch.randn(4, 5)
    loss = model(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    return float(loss.detach())


def test_round_trip_continues_exactly(tmp_path):
    model, opt, sched = _setup()
    for _ in range(3):
        _step(model, opt, sched)
    random.seed(5)
    np.random.seed(6)
    ck.save_checkpoint(tmp_path / "ckpt", model, opt, sched, None, {"step": 3, "epoch": 0, "sampler": [1, 2]})
    expected = [_step(model, opt, sched) for _ in range(3)]
    expected_draws = (random.random(), float(np.random.rand()))

    model2, opt2, sched2 = _setup(seed=1)  # different weights and RNG until restored
    state = ck.load_checkpoint(tmp_path / "ckpt", model2, opt2, sched2, None)
    assert state == {"step": 3, "epoch": 0, "sampler": [1, 2]}
    got = [_step(model2, opt2, sched2) for _ in range(3)]
    assert got == expected  # bit-identical: same weights, moments, step counts, lr and torch RNG
    assert (random.random(), float(np.random.rand())) == expected_draws
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = _setup()
    _step(model, opt, sched)
    ck.save_checkpoint(tmp_path / "ckpt", model, opt, sched, None, {"step": 1})
    good = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model, opt, sched)

    calls = {"n": 0}
    real = ck._save_tensors

    def dying(path, tensors):
        calls["n"] += 1
        if calls["n"] == 2:  # after model.safetensors, while writing the optimizer
            raise KeyboardInterrupt("killed mid-save")
        real(path, tensors)

    monkeypatch.setattr(ck, "_save_tensors", dying)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(tmp_path / "ckpt", model, opt, sched, None, {"step": 2})
    monkeypatch.setattr(ck, "_save_tensors", real)

    fresh, opt2, sched2 = _setup(seed=3)
    assert ck.load_checkpoint(tmp_path / "ckpt", fresh, opt2, sched2, None) == {"step": 1}
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, good[k])
    # the next save still works and replaces it
    ck.save_checkpoint(tmp_path / "ckpt", model, opt, sched, None, {"step": 2})
    assert ck.load_checkpoint(tmp_path / "ckpt", fresh, opt2, sched2, None) == {"step": 2}
    assert not (tmp_path / "ckpt.tmp").exists() or not (tmp_path / "ckpt.tmp" / "state.json").exists()


def test_crash_between_renames_falls_back_to_old(tmp_path):
    model, opt, sched = _setup()
    ck.save_checkpoint(tmp_path / "ckpt", model, opt, sched, None, {"step": 7})
    (tmp_path / "ckpt").rename(tmp_path / "ckpt.old")  # the state a crash after the first rename leaves
    assert ck.find_checkpoint(tmp_path / "ckpt") == tmp_path / "ckpt.old"
    m2, o2, s2 = _setup(seed=2)
    assert ck.load_checkpoint(tmp_path / "ckpt", m2, o2, s2, None) == {"step": 7}


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    model, opt, sched = _setup()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        ck.load_checkpoint(tmp_path / "nothing", model, opt, sched, None)


def test_checkpoint_files_hold_no_pickle(tmp_path):
    model, opt, sched = _setup()
    _step(model, opt, sched)
    ck.save_checkpoint(tmp_path / "ckpt", model, opt, sched, None, {"step": 1})
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"]
