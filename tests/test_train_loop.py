"""The training loop: exact resume, Ctrl-C, non-finite steps, DDP on gloo, eval and transcribe."""

import dataclasses
import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from fastctc.config import load_config
from fastctc.data.synthetic import make_utterance
from fastctc.train import steps
from fastctc.train.loop import StopRequest, loop, train
from fastctc.train.run import prepare_run

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
]


def _train_until(cfg, out: Path, stop_at_step: int | None = None, resume: bool = False) -> dict:
    """train(), stopping at a given step the way Ctrl-C does."""
    return loop(prepare_run(cfg, out, resume), StopRequest(at_step=stop_at_step))


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _losses(run: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in _events(run) if e["event"] == "train"}


def test_resume_continues_exactly(tmp_path):
    # dropout and SpecAugment on, so the restored RNG state matters; fairseq's schedule and frozen encoder
    # (the stop falls inside the freeze, so the resumed run starts the encoder's optimizer state), and the EMA
    cfg = load_config(
        DEMO,
        TINY
        + [
            "data.synthetic_train_size=48",
            "data.synthetic_eval_size=4",
            "train.batch_size=8",
            "train.max_steps=8",
            "model.hidden_dropout=0.1",
            "model.mask_time_prob=0.2",
            "model.mask_time_length=2",
            "optim.schedule=tri_stage",
            "train.freeze_finetune_steps=5",
            "train.weight_average=ema",
            "train.ema_decay=0.9",
        ],
    )
    full = train(cfg, tmp_path / "full")
    assert _train_until(cfg, tmp_path / "split", stop_at_step=4) == {"stopped": 4}
    assert (tmp_path / "split" / "checkpoint" / "state.json").is_file()
    assert max(_losses(tmp_path / "split")) == 4
    resumed = train(cfg, tmp_path / "split", resume=True)
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "split")
    assert sorted(a) == sorted(b) == list(range(1, 9))  # the epoch boundary (6 batches) is crossed too
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-6, (step, a[step], b[step])
    assert resumed["wer"] == full["wer"] and resumed["loss"] == pytest.approx(full["loss"], abs=1e-6)
    assert resumed["average"]["wer"] == full["average"]["wer"]
    assert resumed["average"]["loss"] == pytest.approx(full["average"]["loss"], abs=1e-6)
    averages = [load_file(str(tmp_path / run / "checkpoint" / "average.safetensors")) for run in ("full", "split")]
    assert averages[0].keys() == averages[1].keys()
    for name, value in averages[0].items():
        assert torch.equal(averages[1][name], value), name
    lrs = {e["step"]: e["lr"] for e in _events(tmp_path / "full") if e["event"] == "train"}
    # tri-stage over 8 steps: no warmup (int(0.8) = 0), hold for 3, decay for 4 to lr * 0.05, then held
    assert lrs[1] == lrs[3] == cfg.optim.lr
    assert lrs[7] == pytest.approx(cfg.optim.lr * 0.05, rel=1e-12) and lrs[8] == cfg.optim.lr * 0.05


def test_resume_continues_exactly_with_the_recipes_random_streams(tmp_path):
    """train.random_streams = recipe: the Trainer's order (a function of the epoch, evaluations counted) and
    numpy's SpecAugment stream (saved in the checkpoint) continue across a stop inside an epoch."""
    cfg = load_config(
        DEMO,
        TINY
        + [
            "data.synthetic_train_size=48",
            "data.synthetic_eval_size=4",
            "train.batch_size=8",
            "train.max_steps=9",
            "train.eval_every=2",
            "model.mask_time_prob=0.3",
            "model.mask_time_length=2",
            "model.mask_feature_prob=0.2",
            "model.mask_feature_length=4",
            "data.sampler=group_by_length",
            "train.random_streams=recipe",
        ],
    )
    train(cfg, tmp_path / "full")
    assert _train_until(cfg, tmp_path / "split", stop_at_step=4) == {"stopped": 4}
    train(cfg, tmp_path / "split", resume=True)
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "split")
    assert sorted(a) == sorted(b) == list(range(1, 10))  # across the epoch boundary (6 batches)
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-6, (step, a[step], b[step])
    # the switch changes the draws: fastctc's own streams give other batches and masks from step 1
    own = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, random_streams="own", max_steps=2))
    train(own, tmp_path / "own")
    assert _losses(tmp_path / "own")[1] != a[1]


def test_resume_continues_exactly_with_augmentation_on(tmp_path):
    """Speed (host draws), reverberation and noise (device draws) on: the resumed run restores their
    generators and reproduces the uninterrupted losses."""
    rng = np.random.default_rng(0)
    for name, x in (
        ("noise", rng.standard_normal(9_000)),
        ("rir", rng.standard_normal(700) * np.exp(-np.arange(700) / 90)),
    ):
        (tmp_path / name).mkdir()
        sf.write(tmp_path / name / f"{name}.wav", x.astype(np.float32) * 0.3, 16_000, subtype="FLOAT")
    cfg = load_config(
        DEMO,
        TINY
        + [
            "data.synthetic_train_size=32",
            "data.synthetic_eval_size=4",
            "train.batch_size=8",
            "train.max_steps=6",
            "augment.speed_prob=0.7",
            "augment.speed_factors=[0.9, 1.0, 1.1]",
            "augment.rir_prob=0.5",
            f"augment.rir_dir={tmp_path / 'rir'}",
            "augment.noise_prob=0.5",
            f"augment.noise_dir={tmp_path / 'noise'}",
        ],
    )
    train(cfg, tmp_path / "full")
    assert _train_until(cfg, tmp_path / "split", stop_at_step=3) == {"stopped": 3}
    train(cfg, tmp_path / "split", resume=True)
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "split")
    assert sorted(a) == sorted(b) == list(range(1, 7))  # 4 batches an epoch: the boundary is crossed
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-6, (step, a[step], b[step])
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "split" / "checkpoint" / "rng.safetensors"))
    assert {"rank0.generator.augment_host", "rank0.generator.augment_device"} <= set(saved)


def test_non_finite_step_is_skipped_and_weights_stay_finite(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = steps.ctc_loss

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(steps, "ctc_loss", poisoned)
    cfg = load_config(
        DEMO,
        TINY
        + ["data.synthetic_train_size=32", "data.synthetic_eval_size=4", "train.batch_size=8", "train.max_steps=5"],
    )
    result = train(cfg, tmp_path / "run")
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "skip"] == [3]
    assert [e["skipped"] for e in events if e["event"] == "train"] == [0, 0, 1, 1, 1]
    assert math.isfinite(result["loss"])
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_ctrl_c_saves_a_checkpoint_and_prints_the_resume_command(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fastctc",
            "train",
            str(DEMO),
            "--out",
            str(out),
            *sum((["--set", s] for s in TINY), []),
            "--set",
            "data.synthetic_train_size=64",
            "--set",
            "data.synthetic_eval_size=4",
            "--set",
            "train.max_steps=100000",
            "--set",
            "train.batch_size=4",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step 2/"):
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=120)
    text = "".join(lines) + rest
    assert proc.returncode == 130, text
    assert f"fastctc train {out / 'config.toml'} --resume {out}" in text
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] >= 2
    assert not (out / "model").exists()  # the run did not finish


def _start_training(out: Path, overrides: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fastctc",
            "train",
            str(DEMO),
            "--out",
            str(out),
            *sum((["--set", s] for s in overrides), []),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=out.parent,
    )


def _signal_at(proc: subprocess.Popen, step_line: str, signum: int) -> str:
    """Send `signum` once the progress line `step_line` shows; the run's whole output."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(step_line):
            proc.send_signal(signum)
            break
    rest, _ = proc.communicate(timeout=120)
    return "".join(lines) + rest


def test_sigterm_saves_and_resumes_exactly_and_so_does_the_sigkill_after_it(tmp_path):
    # what a cluster sends: SIGTERM, which stops at the step's end like Ctrl-C (exit 143), then after a
    # grace period SIGKILL, after which the last periodic checkpoint resumes as exactly
    overrides = TINY + [
        "data.synthetic_train_size=32",
        "data.synthetic_eval_size=4",
        "train.batch_size=8",
        "train.max_steps=12",
        "train.checkpoint_every=2",
        "model.hidden_dropout=0.1",
    ]
    cfg = load_config(DEMO, overrides)
    train(cfg, tmp_path / "full")
    full = _losses(tmp_path / "full")

    term = tmp_path / "term"
    text = _signal_at(proc := _start_training(term, overrides), "step 2/", signal.SIGTERM)
    assert proc.returncode == 143, text
    assert "fastctc: SIGTERM: saving a checkpoint at the end of this step" in text
    assert f"fastctc train {term / 'config.toml'} --resume {term}" in text
    stopped_at = json.loads((term / "checkpoint" / "state.json").read_text())["step"]
    assert 2 <= stopped_at < 12 and max(_losses(term)) == stopped_at, text
    assert not (term / "model").exists()

    kill = tmp_path / "kill"
    text = _signal_at(proc := _start_training(kill, overrides), "step 3/", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, text
    assert json.loads((kill / "checkpoint" / "state.json").read_text())["step"] in (2, 4), text

    for run in (term, kill):
        train(cfg, run, resume=True)
        resumed = _losses(run)  # the killed run logged steps past its checkpoint: the resume logs them again
        assert sorted(resumed) == list(range(1, 13)), run
        for step in full:
            assert abs(full[step] - resumed[step]) <= 1e-6, (run.name, step, full[step], resumed[step])


def test_a_second_sigterm_ends_the_process_at_once():
    code = (
        "import os, signal, time\n"
        "from fastctc.train.loop import StopRequest\n"
        "with StopRequest().installed() as stop:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(0.5)\n"
        "    assert stop.requested and stop.signum == signal.SIGTERM\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(5)\n"
        "print('still running')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGTERM, proc.stdout + proc.stderr
    assert "SIGTERM again to abort" in proc.stderr and "still running" not in proc.stdout


def _write_equal_length_manifest(root: Path, count: int) -> Path:
    """count utterances of exactly 1.0 s, so batching is identical at any world size."""
    rows = []
    for i in range(count):
        u = make_utterance(3, "train", i, min_words=1, max_words=2)
        audio = np.zeros(16_000, dtype=np.float32)
        audio[: min(16_000, len(u.audio))] = u.audio[:16_000]
        sf.write(root / f"u{i}.wav", audio, 16_000, subtype="FLOAT")
        rows.append(json.dumps({"audio": f"u{i}.wav", "text": u.text[:6].strip() or "a"}))
    path = root / "m.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def _ddp_worker(
    rank: int, world: int, port: int, overrides: list, out: str, resume: bool = False, stop_at_step: int | None = None
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    _train_until(load_config(DEMO, overrides), Path(out), stop_at_step, resume)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_sets(tmp_path) -> list[str]:
    """The tiny model for 4 steps on 16 equal-length synthetic utterances in a manifest, on CPU."""
    manifest = _write_equal_length_manifest(tmp_path, 16)
    return TINY + [
        "data.corpus=manifest",
        f"data.train={manifest}",
        f"data.eval={manifest}",
        "data.num_workers=0",
        "train.max_steps=4",
        "train.device=cpu",
        "data.max_duration_s=0",
    ]


def _ddp_full_and_resumed_agree(worker, sets: list[str], tmp_path) -> None:
    """Two ranks on gloo, run by `worker`: 4 steps in one go, and stopped after 2 then resumed: the same
    losses at every step."""
    spawn = torch.multiprocessing.spawn
    spawn(worker, args=(2, _free_port(), sets, str(tmp_path / "full")), nprocs=2, join=True)
    spawn(worker, args=(2, _free_port(), sets, str(tmp_path / "split"), False, 2), nprocs=2, join=True)
    spawn(worker, args=(2, _free_port(), sets, str(tmp_path / "split"), True), nprocs=2, join=True)
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "split")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-6, (step, a[step], b[step])


@pytest.mark.parametrize(
    "per_rank, both",
    [
        (["train.batch_size=2"], []),
        (["train.batch_size=1", "train.grad_accum=2"], []),
        # the encoder frozen for 2 steps: DDP must leave its parameters without gradient, then reduce them
        pytest.param(["train.batch_size=2"], ["train.freeze_finetune_steps=2"], marks=pytest.mark.slow),
    ],
    ids=["batch2", "batch1-accum2", "batch2-frozen-encoder"],
)
def test_ddp_on_gloo_matches_single_process_global_batch(tmp_path, per_rank, both):
    common = both + _ddp_sets(tmp_path)
    single = tmp_path / "single"
    train(load_config(DEMO, common + ["train.batch_size=4"]), single)
    ddp = tmp_path / "ddp"
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), common + per_rank, str(ddp)), nprocs=2, join=True)
    a, b = _losses(single), _losses(ddp)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-5 * max(1.0, abs(a[step])), (step, a[step], b[step])
    from safetensors.torch import load_file

    s, d = load_file(single / "model" / "model.safetensors"), load_file(ddp / "model" / "model.safetensors")
    for k in s:
        if k.endswith("k_proj.bias"):
            # softmax ignores a constant added to every key's score, so this bias's exact gradient is 0:
            # both runs hold rounding noise there, which Adam scales up to lr-sized steps
            continue
        torch.testing.assert_close(s[k], d[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")


def test_transcribe_and_eval_commands_on_a_run_directory(tmp_path):
    manifest = _write_equal_length_manifest(tmp_path, 6)
    run = tmp_path / "run"
    train(
        load_config(
            DEMO,
            TINY
            + ["data.synthetic_train_size=16", "data.synthetic_eval_size=4", "train.batch_size=8", "train.max_steps=2"],
        ),
        run,
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastctc",
            "transcribe",
            str(run),
            str(tmp_path / "u0.wav"),
            str(tmp_path / "missing.wav"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1  # one file could not be read; the other was still transcribed
    assert proc.stdout.startswith(f"{tmp_path / 'u0.wav'}\t")
    assert "skipping" in proc.stderr and "missing.wav" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "fastctc", "eval", str(run), "--data", str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["utterances"] == 6 and 0.0 <= result["cer"] and 0.0 <= result["wer"]


def test_plot_writes_a_png_of_the_run(tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    train(
        load_config(
            DEMO,
            TINY
            + ["data.synthetic_train_size=16", "data.synthetic_eval_size=4", "train.batch_size=8", "train.max_steps=3"],
        ),
        run,
    )
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"event": "train", "step": 4, "lo')  # a line cut short by a crash
    proc = subprocess.run(
        [sys.executable, "-m", "fastctc", "plot", str(run)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    png = run / "curves.png"
    assert proc.stdout.strip() == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "skipping unreadable line" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "fastctc", "plot", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0 and "metrics.jsonl not found" in proc.stderr


@pytest.mark.parametrize("extra", [["train.precision=bf16"], ["train.compile=on"]], ids=["bf16-autocast", "compiled"])
def test_cpu_checks_of_the_gpu_paths(tmp_path, extra):
    # bf16 autocast and torch.compile are the CUDA defaults; both run on CPU and must learn the same way.
    # One batch of all 16 utterances: every step has the same shape, so inductor compiles once.
    common = TINY + [
        "data.synthetic_train_size=16",
        "data.synthetic_eval_size=4",
        "train.batch_size=16",
        "train.max_steps=3",
        "optim.warmup_steps=1",
    ]
    result = train(load_config(DEMO, common + extra), tmp_path / "run")
    losses = _losses(tmp_path / "run")
    assert sorted(losses) == [1, 2, 3] and all(math.isfinite(v) for v in losses.values())
    assert math.isfinite(result["loss"])
    train(load_config(DEMO, common), tmp_path / "eager")
    eager = _losses(tmp_path / "eager")
    # fp32 compiled: kernel fusion reorders float sums; bf16: 8-bit mantissa activations
    tol = 1e-3 if "train.compile=on" in extra else 5e-2
    for step in losses:
        assert abs(losses[step] - eager[step]) <= tol * max(1.0, abs(eager[step])), (step, losses[step], eager[step])
    if "train.compile=on" in extra:
        events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        assert events[0]["compile_s"] > 0  # the first shape's step is reported as compile time


def test_ddp_resume_restores_every_ranks_random_streams(tmp_path):
    sets = _ddp_sets(tmp_path) + ["model.hidden_dropout=0.2", "model.mask_time_prob=0.3", "model.mask_time_length=2"]
    _ddp_full_and_resumed_agree(_ddp_worker, sets + ["train.batch_size=2"], tmp_path)


def _ddp_worker_failing_loads(
    rank: int, world: int, port: int, overrides: list, out: str, resume: bool = False, stop_at_step: int | None = None
) -> None:
    # every file of rank 1's first batch fails to load (in every run and epoch)
    from fastctc.data import dataset
    from fastctc.data.batching import LengthBucketSampler

    real = dataset.SpeechDataset.__getitem__

    def flaky(self, i):
        first = LengthBucketSampler(self.durations, 42, 2, world_size=world).epoch_batches(0)[0][1]
        if i in first and len(self) == 16 and rank == 1:
            return dataset.Item(self.ids[i], None, self.texts[i], "simulated read error")
        return real(self, i)

    dataset.SpeechDataset.__getitem__ = flaky
    _ddp_worker(rank, world, port, overrides, out, resume, stop_at_step)


def test_ddp_rank_with_an_unloadable_batch_stays_in_step_and_resumes_exactly(tmp_path):
    # The rank whose batch failed still takes part in that step (a stand-in with weight 0), so every
    # rank stays at the same position in the epoch and a resume puts each back where it was.
    _ddp_full_and_resumed_agree(_ddp_worker_failing_loads, _ddp_sets(tmp_path) + ["train.batch_size=2"], tmp_path)
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(tmp_path / "full" / "model" / "model.safetensors").values())


def test_transcribe_any_transformers_ctc_checkpoint(tmp_path):
    # a checkpoint fine-tuned elsewhere: another tokenizer's vocabulary (<pad> = 0 as blank, <s>, </s>, <unk>)
    from hf_checkpoints import tiny_ctc_model

    tokens = ["<pad>", "<s>", "</s>", "<unk>", "|", "a", "b", "c", "d", "e", "f"]
    hf = tiny_ctc_model("wav2vec2-base", vocab_size=len(tokens), pad_token_id=0)
    hf.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    audio = np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 0.1
    sf.write(tmp_path / "a.wav", audio, 16_000)
    proc = subprocess.run(
        [sys.executable, "-m", "fastctc", "transcribe", str(tmp_path / "ckpt"), str(tmp_path / "a.wav")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    path, text = proc.stdout.rstrip("\n").split("\t")
    # the same greedy decoding done by hand on transformers' own logits (no attention mask: group norm)
    x = torch.from_numpy((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7))[None]
    with torch.no_grad():
        ids = hf(x).logits.argmax(-1)[0].tolist()
    import itertools

    chars = [tokens[k] for k, _ in itertools.groupby(ids) if k not in (0, 1, 2, 3)]
    assert text and text == " ".join("".join(" " if c == "|" else c for c in chars).split())


@pytest.mark.parametrize("zero_infinity", [True, False])
def test_zero_infinity_switch_reaches_the_loss(tmp_path, monkeypatch, zero_infinity):
    """train.zero_infinity is the loss's: torch's own CTC with the same flag is the reference. At step 2 one
    utterance gets a single frame (infeasible): true gives a finite loss and a step; false (the recipe's)
    gives inf, and the step is skipped rather than applied."""
    import torch.nn.functional as F

    real, losses = steps.ctc_loss, []

    def checked(logits, targets, input_lengths, target_lengths, **kw):
        if len(losses) == 1:
            input_lengths = input_lengths.clone()
            input_lengths[0] = 1
        loss = real(logits, targets, input_lengths, target_lengths, **kw)
        assert kw["zero_infinity"] is zero_infinity
        ref = F.ctc_loss(
            logits.detach().double().log_softmax(-1).transpose(0, 1),
            targets,
            input_lengths,
            target_lengths,
            blank=kw["blank"],
            reduction="mean",
            zero_infinity=zero_infinity,
        )
        torch.testing.assert_close(loss.detach().double(), ref, rtol=1e-5, atol=1e-5)
        losses.append(float(loss.detach()))
        return loss

    monkeypatch.setattr(steps, "ctc_loss", checked)
    cfg = load_config(
        DEMO,
        TINY
        + [
            "data.synthetic_train_size=24",
            "data.synthetic_eval_size=4",
            "train.batch_size=8",
            "train.max_steps=3",
            f"train.zero_infinity={str(zero_infinity).lower()}",
        ],
    )
    train(cfg, tmp_path / "run")
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(losses[1]) is zero_infinity and all(math.isfinite(x) for x in losses[::2])
    assert [e["step"] for e in events if e["event"] == "skip"] == ([] if zero_infinity else [2])


def test_recipe_exact_run_trains_and_exports_what_transformers_loads(tmp_path):
    """All of RECIPE_EXACT at once: group_by_length batches, targets ending in `|`, <s>/</s> outputs after [PAD];
    the exported model and tokenizer load in transformers with the head as wide as the tokenizer."""
    transformers = pytest.importorskip("transformers")
    from fastctc.config import RECIPE_EXACT
    from fastctc.data.batching import GroupByLengthSampler

    cfg = load_config(
        DEMO,
        TINY
        + [
            "data.synthetic_train_size=24",
            "data.synthetic_eval_size=4",
            "train.batch_size=8",
            "train.max_steps=3",
            *RECIPE_EXACT,
        ],
    )
    run = prepare_run(cfg, tmp_path / "run")
    assert isinstance(run.sampler, GroupByLengthSampler) and run.vocab.tokens[-3:] == ["[PAD]", "<s>", "</s>"]
    batch = next(iter(run.loader))
    bar = run.vocab.index["|"]
    assert all(batch.targets[i, n - 1] == bar for i, n in enumerate(batch.target_lengths.tolist()))
    assert math.isfinite(loop(run, StopRequest())["loss"])
    model_dir = tmp_path / "run" / "model"
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    hf = transformers.AutoModelForCTC.from_pretrained(model_dir)
    assert hf.config.vocab_size == len(tok) == len(run.vocab) and hf.lm_head.out_features == len(tok)
    assert tok.convert_ids_to_tokens(list(range(len(tok)))) == run.vocab.tokens
    assert tok.pad_token_id == hf.config.pad_token_id == run.vocab.blank
    assert (tok.bos_token, tok.eos_token) == ("<s>", "</s>")
    a, b, c = [t for t in run.vocab.tokens if len(t) == 1 and t != "|"][:3]
    ids = [tok.bos_token_id, *run.vocab.encode(f"{a}{b} {c}"), tok.eos_token_id]
    assert tok.decode(ids, skip_special_tokens=True, group_tokens=False) == f"{a}{b} {c}" == run.vocab.decode(ids)


def test_final_event_holds_the_runs_result_and_time_split(tmp_path):
    """metrics.jsonl's last event is what `fastctc bench recipe` reads: the returned scores, the steps and
    the seconds of each phase, which add up to no more than the run's total."""
    sizes = ["data.synthetic_train_size=8", "data.synthetic_eval_size=4", "train.batch_size=4", "train.max_steps=2"]
    cfg = load_config(DEMO, TINY + sizes)
    result = train(cfg, tmp_path / "run")
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = events[-1]
    assert final["event"] == "final" and [e["event"] for e in events].count("final") == 1
    assert (final["step"], final["skipped"]) == (2, 0)
    assert (final["wer"], final["cer"]) == (result["wer"], result["cer"])
    assert final["loss"] == pytest.approx(result["loss"])
    assert final["cuda_peak_bytes"] is None  # a CPU run
    eval_s = [e for e in events if e["event"] == "eval"][-1]["eval_s"]
    assert final["eval_s"] == pytest.approx(eval_s)
    parts = [final[k] for k in ("startup_s", "train_s", "eval_s")]
    assert all(p >= 0 for p in parts) and final["compile_s"] == 0.0
    assert sum(parts) <= final["total_s"] + 1e-6
    assert final["time"] - final["total_s"] <= events[0]["time"]  # the clock starts before the first event
