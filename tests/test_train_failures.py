"""How a training run fails: non-finite weights, a full disk, a bad or read-only --out, a refused --resume.

Every failure ends `fastctc train` with exit 2 and one stderr line (no traceback) that names what failed,
what is intact and how to resume; nothing non-finite or half-written is left under a final name.
"""

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fastctc.cli import main
from fastctc.config import load_config
from fastctc.train import loop as loop_module
from fastctc.train.loop import train
from fastctc.train.run_dir import resume_command

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.toml"
TINY = [
    "model.hidden_size=32",
    "model.num_attention_heads=2",
    "model.intermediate_size=64",
    "model.conv_dim=[16, 16, 16, 16, 16, 16, 16]",
    "model.num_conv_pos_embedding_groups=2",
    "train.threads=1",
    "train.log_every=1",
    "train.eval_every=0",
    "train.checkpoint_every=0",
    "optim.warmup_steps=2",
    "data.synthetic_train_size=32",
    "data.synthetic_eval_size=4",
    "train.batch_size=8",
]


def _args(*overrides: str) -> list[str]:
    out = []
    for o in TINY + list(overrides):
        out += ["--set", o]
    return out


def _one_line(capsys) -> str:
    """The failure's stderr: exactly one line, no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _finite_tensors(directory: Path) -> int:
    """Asserts every tensor in every .safetensors file under `directory` is finite; how many files were read."""
    files = sorted(directory.rglob("*.safetensors"))
    for f in files:
        for name, t in load_file(f).items():
            if t.is_floating_point():
                assert torch.isfinite(t).all(), (f, name)
    return len(files)


def _step(run: Path) -> int:
    return json.loads((run / "checkpoint" / "state.json").read_text())["step"]


@contextlib.contextmanager
def _tmpfs(mount_point: Path, options: str):
    """A tmpfs mounted at mount_point (root only; skips otherwise), always unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


# 1. non-finite weights are never saved or exported


@pytest.mark.parametrize(
    "poison_after, max_steps, eval_every",
    [
        (3, 6, 0),  # refused by the periodic save at step 4
        (4, 4, 2),  # refused by the final evaluation (model/), after best/ was exported at step 2
    ],
)
def test_non_finite_weights_are_never_saved_or_exported(
    tmp_path, monkeypatch, capsys, poison_after, max_steps, eval_every
):
    real = loop_module.optimizer_step
    calls = {"n": 0}

    def poisoning_step(run):
        result = real(run)
        calls["n"] += 1
        if calls["n"] == poison_after:  # the weights after this step hold a NaN (a diverged run)
            with torch.no_grad():
                next(run.model.parameters()).view(-1)[0] = float("nan")
        return result

    monkeypatch.setattr(loop_module, "optimizer_step", poisoning_step)
    out = tmp_path / "run"
    code = main(
        ["train", str(DEMO), "--out", str(out)]
        + _args(f"train.max_steps={max_steps}", "train.checkpoint_every=2", f"train.eval_every={eval_every}")
    )
    line = _one_line(capsys)
    assert code == 2, line
    assert calls["n"] == 4, calls  # it ran on to the first save (or export) after the NaN, then stopped
    assert "step 4: the model's weights are no longer finite" in line, line
    assert "checkpoint/ (step 2) is intact" in line and resume_command(out) in line, line
    assert _step(out) == 2
    assert _finite_tensors(out / "checkpoint") == 3  # model, optimizer, rng
    assert not (out / "model").exists()
    if eval_every:
        assert _finite_tensors(out / "best") == 1  # the step-2 export, untouched
    else:
        assert not (out / "best").exists()
    assert not list(out.glob("*.tmp")) and not list(out.glob("*.old"))


# 2. a full disk at a save


def test_disk_full_at_a_save_leaves_the_last_checkpoint_and_no_partial_copy(tmp_path, monkeypatch, capsys):
    with _tmpfs(tmp_path / "disk", "size=2m") as disk:
        out, filler = disk / "run", disk / "filler"
        real = loop_module.save_checkpoint
        calls = {"n": 0}

        def fill_then_save(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:  # the disk fills up between the step-2 checkpoint and the step-4 one
                with contextlib.suppress(OSError), open(filler, "wb") as f:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
            return real(*args, **kwargs)

        monkeypatch.setattr(loop_module, "save_checkpoint", fill_then_save)
        code = main(["train", str(DEMO), "--out", str(out)] + _args("train.max_steps=6", "train.checkpoint_every=2"))
        line = _one_line(capsys)
        assert code == 2, line
        assert calls["n"] == 2 and filler.stat().st_size > 0
        assert f"step 4: writing {out / 'checkpoint'} failed (" in line and "No space left on device" in line, line
        assert "checkpoint/ (step 2) is intact" in line and resume_command(out) in line, line
        assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".old")]
        assert _step(out) == 2 and _finite_tensors(out / "checkpoint") == 3
        assert not (out / "model").exists()

        # the printed resume command works once there is space again
        filler.unlink()
        monkeypatch.setattr(loop_module, "save_checkpoint", real)
        assert main(["train", str(out / "config.toml"), "--resume", str(out)]) == 0, capsys.readouterr().err
        assert _step(out) == 6 and (out / "model" / "model.safetensors").is_file()


# 3. the run directory


def test_out_that_is_a_file_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("not a directory\n")
    assert main(["train", str(DEMO), "--out", str(out)] + _args("train.max_steps=2")) == 2
    line = _one_line(capsys)
    assert f"run directory {out} is a file; choose another with --out" in line, line
    assert out.read_text() == "not a directory\n"


@pytest.mark.parametrize("inside", [False, True], ids=["the-mount-itself", "a-new-dir-on-it"])
def test_out_on_a_read_only_file_system_is_refused_in_one_line(tmp_path, capsys, inside):
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        out = ro / "run" if inside else ro
        assert main(["train", str(DEMO), "--out", str(out)] + _args("train.max_steps=2")) == 2
        line = _one_line(capsys)
        assert f"run directory {out}" in line and "choose another with --out" in line, line
        assert ("Read-only file system" in line) if inside else ("is not writable" in line), line
        assert not list(ro.iterdir())


def test_a_failed_start_leaves_nothing_that_refuses_the_same_out(tmp_path, capsys):
    out = tmp_path / "run"
    missing = tmp_path / "no-such-corpus"
    code = main(
        ["train", str(DEMO), "--out", str(out)]
        + _args("train.max_steps=2", "data.corpus=librispeech", f"data.root={missing}")
    )
    line = _one_line(capsys)
    assert code == 2 and str(missing) in line, line
    assert out.is_dir() and not list(out.iterdir())  # past the run directory's check; no config.toml, no metrics.jsonl
    assert main(["train", str(DEMO), "--out", str(out)] + _args("train.max_steps=2")) == 0, capsys.readouterr().err
    assert _step(out) == 2 and (out / "model" / "model.safetensors").is_file()


# 4. --resume refusals


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "run"
    train(load_config(DEMO, TINY + ["train.max_steps=2"]), out)
    return out


def _snapshot(run: Path) -> dict:
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "change, named",
    [
        ("model.hidden_size=48", "model.hidden_size = 48 (the run's 32)"),
        ("train.batch_size=4", "train.batch_size = 4 (the run's 8)"),
    ],
)
def test_resume_refuses_a_changed_key_by_name(finished_run, capsys, change, named):
    before = _snapshot(finished_run)
    code = main(["train", str(finished_run / "config.toml"), "--resume", str(finished_run), "--set", change])
    line = _one_line(capsys)
    assert code == 2, line
    assert f"--resume {finished_run}: {named} differs from {finished_run / 'config.toml'}" in line, line
    assert _snapshot(finished_run) == before  # nothing written


def test_resume_allows_a_resumable_key(finished_run, tmp_path, capsys):
    # the control for the refusals above: the same resume with a key a resume may change goes ahead
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert main(["train", str(run / "config.toml"), "--resume", str(run), "--set", "train.log_every=2"]) == 0, (
        capsys.readouterr().err
    )
    assert _step(run) == 2


@pytest.mark.parametrize("leftover", [False, True], ids=["empty", "config-only"])
def test_resume_without_a_checkpoint_is_one_line(tmp_path, capsys, leftover):
    run = tmp_path / "run"
    run.mkdir()
    if leftover:  # a run that ended before its first checkpoint
        (run / "config.toml").write_text((REPO / "configs" / "demo.toml").read_text())
        (run / "checkpoint.tmp").mkdir()
    code = main(["train", str(DEMO), "--resume", str(run)] + _args("train.max_steps=2"))
    line = _one_line(capsys)
    assert code == 2, line
    assert f"--resume {run}: no checkpoint there (expected {run / 'checkpoint'})" in line, line
    assert not (run / "metrics.jsonl").exists()
