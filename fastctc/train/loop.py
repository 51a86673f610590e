"""The training loop: `train` prepares a Run and loops over optimizer steps; the small pieces it calls
(evaluation with the best-model export, checkpoints, the progress line, Ctrl-C) follow it."""

from __future__ import annotations

import contextlib
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

import torch

from ..config import RunConfig
from ..models import save_pretrained
from .checkpoint import rng_state, save_checkpoint
from .distributed import all_reduce_sum, barrier, shutdown
from .evaluate import evaluate
from .progress import Window, format_seconds
from .run import Run, prepare_run
from .steps import forward_backward, optimizer_step, steps


def train(cfg: RunConfig, out_dir: Path, resume: bool = False) -> dict:
    """Train per `cfg` in run directory `out_dir`; `resume` continues the checkpoint found there.

    Writes config.toml, metrics.jsonl, checkpoint/ (resumable state), best/ (best eval WER) and
    model/ (the final model), the last two as Transformers-format checkpoints that load with
    fastctc.models.load_pretrained and with transformers' AutoModelForCTC / Wav2Vec2Processor.
    Returns the final evaluation (wer, cer, loss; {} on ranks other than 0), or {"stopped": step} when
    stopped early (Ctrl-C).
    """
    run = prepare_run(cfg, out_dir, resume)
    with StopRequest().installed() as stop:
        return loop(run, stop)


def loop(run: Run, stop: StopRequest) -> dict:
    """Optimizer steps from the run's position to its last step, then the final evaluation and export."""
    cfg, state, clock = run.cfg, run.state, run.clock
    clock.train_start = time.time()
    clock.startup_s = clock.train_start - clock.start
    first_step = state.step
    window = Window(t0=time.time())
    run.model.train()
    for micro_batches in steps(run):
        t_step, graphs = time.time(), dynamo_graphs() if run.compiled else 0
        clock.shapes.add(tuple(micro_batches[0].waveforms.shape))
        loss_sum = forward_backward(run, micro_batches)
        grad_norm, skipped = optimizer_step(run)
        state.step += 1
        if run.compiled and dynamo_graphs() != graphs:  # this step compiled (a new shape alone may not)
            clock.compile_s += time.time() - t_step
        window.add(state.step, loss_sum, len(micro_batches), sum(len(b.texts) for b in micro_batches),
                   sum(float(b.lengths.sum()) for b in micro_batches) / cfg.data.sample_rate, grad_norm, skipped)

        last = state.step == run.total_steps
        if state.step % cfg.train.log_every == 0 or last:
            window = report_progress(run, window, first_step)
        if not last and cfg.train.eval_every and state.step % cfg.train.eval_every == 0:
            evaluate_and_export(run)
            save(run, window)
        elif not last and cfg.train.checkpoint_every and state.step % cfg.train.checkpoint_every == 0:
            save(run, window)
        if not last and stop.should_stop(run):
            save(run, window)
            return stopped(run)
    return finish(run, window)


def dynamo_graphs() -> int:
    """Graphs dynamo has compiled in this process: a step that moved it spent its time compiling."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def report_progress(run: Run, window: Window, first_step: int) -> Window:
    """The progress line and its metrics.jsonl event, for the window that ends at this step; a new window."""
    state, clock, dist = run.state, run.clock, run.dist
    loss_sum, grad_norm = record_skips(run, window)
    if dist.enabled:  # the global batch's loss: every rank's mean over equal-sized shares
        loss_sum = float(all_reduce_sum(torch.tensor([loss_sum], device=run.device), dist)) / dist.world_size
    now = time.time()
    dt = max(now - window.t0, 1e-9)
    taken = state.step - first_step
    eta = (run.total_steps - state.step) * (now - clock.train_start - clock.compile_s) / taken
    mean_loss = loss_sum / max(1, window.micro_batches)
    lr = run.schedule.get_last_lr()[0]
    utt_s, audio_s = window.utterances * dist.world_size / dt, window.audio_s * dist.world_size / dt
    mem = f" | mem {torch.cuda.max_memory_allocated(run.device) / 2**30:.1f} GiB" if run.device.type == "cuda" else ""
    run.say(f"step {state.step}/{run.total_steps} | epoch {state.epoch + 1} | loss {mean_loss:.4f} | lr {lr:.2e} | "
            f"grad {grad_norm:.2f} | {utt_s:.1f} utt/s | {audio_s:.0f} audio s/s{mem} | ETA {format_seconds(eta)}")
    run.log.write("train", step=state.step, epoch=state.epoch + 1, loss=mean_loss, lr=lr, grad_norm=grad_norm,
                  utt_per_s=utt_s, audio_s_per_s=audio_s, skipped=state.skipped, elapsed_s=clock.elapsed(),
                  compile_s=clock.compile_s)
    return Window(t0=now)


def record_skips(run: Run, window: Window) -> tuple[float, float]:
    """Read the window's device values (one transfer), count and log its skipped steps; (loss sum, grad norm)."""
    loss_sum, grad_norm, skipped_steps = window.fetch()
    for step in skipped_steps:
        run.log.write("skip", step=step)
    run.state.skipped += len(skipped_steps)
    return loss_sum, grad_norm


def evaluate_and_export(run: Run, final: bool = False) -> dict:
    """Rank 0 alone evaluates (the other ranks wait for it at the next collective); a new best WER (PER
    for phone targets) is exported to best/."""
    if not run.main:
        return {}
    t0 = time.time()
    cfg, state = run.cfg, run.state
    result = evaluate(run.model, run.eval_ds, run.vocab, cfg.train.eval_batch_size, run.device, data=cfg.data,
                      report_dir=run.out_dir / "report" if final else None, autocast=run.precision.autocast)
    run.clock.eval_s += time.time() - t0
    tag = "final eval" if final else f"eval step {state.step}"
    per = {"per": result["per"]} if "per" in result else {}  # phone targets: PER picks best/
    scores = (f"PER {result['per']:.4f} ({cfg.data.score_phone_set} phones)" if per
              else f"WER {result['wer']:.4f} | CER {result['cer']:.4f}")
    run.say(f"{tag} ({len(run.eval_ds)} utterances) | loss {result['loss']:.4f} | {scores}")
    run.log.write("eval", step=state.step, loss=result["loss"], wer=result["wer"], cer=result["cer"], **per,
                  elapsed_s=run.clock.elapsed(), eval_s=run.clock.eval_s, **({"final": True} if final else {}))
    score = result.get("per", result["wer"])
    if state.best_wer is None or score < state.best_wer:
        state.best_wer = score
        export(run, run.out_dir / "best")
    return result


def export(run: Run, directory: Path) -> None:
    """A Transformers-format model, written under a temporary name and swapped in."""
    tmp = directory.parent / f"{directory.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained(run.model, tmp, run.vocab.tokens, do_normalize=run.cfg.data.do_normalize,
                    return_attention_mask=run.use_mask)
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def save(run: Run, window: Window) -> None:
    """A resumable checkpoint (every rank's RNG streams, so a DDP resume is exact on every rank)."""
    record_skips(run, window)  # the state it saves counts every step so far
    rng_states = None
    if run.dist.enabled:
        rng_states = [None] * run.dist.world_size
        torch.distributed.all_gather_object(rng_states, rng_state())
    if run.main:
        save_checkpoint(run.out_dir / "checkpoint", run.model, run.optimizer, run.schedule, run.scaler,
                        vars(run.state), rng_states)
    barrier(run.dist)


def stopped(run: Run) -> dict:
    run.log.close()
    if run.main:
        out = run.out_dir
        cmd = " ".join(shlex.quote(a) for a in ["fastctc", "train", str(out / "config.toml"), "--resume", str(out)])
        print(f"fastctc: stopped at step {run.state.step}/{run.total_steps}; checkpoint saved. Resume with:\n  {cmd}",
              flush=True)
    shutdown(run.dist)
    return {"stopped": run.state.step}


def finish(run: Run, window: Window) -> dict:
    """Final evaluation, checkpoint and model/ export; the summary line and metrics.jsonl's final event."""
    clock, state = run.clock, run.state
    train_wall = time.time() - clock.train_start  # steps, checkpoints and the evaluations between them
    train_s = train_wall - clock.eval_s
    result = evaluate_and_export(run, final=True)
    save(run, window)
    if run.main:
        export(run, run.out_dir / "model")
        for ref, hyp in result["examples"]:
            print(f"  ref: {ref}\n  hyp: {hyp}")
        steady = train_s - clock.compile_s
        print(f"fastctc: {state.step} steps in {format_seconds(train_wall)}"
              + (f" ({format_seconds(clock.compile_s)} compiling over {len(clock.shapes)} shapes, "
                 f"{format_seconds(steady)} steady)" if run.compiled else "")
              + f" | skipped steps {state.skipped} | {format_seconds(clock.elapsed())} total", flush=True)
        print(f"run directory: {run.out_dir}")
        run.log.write("final", step=state.step, wer=result["wer"], cer=result["cer"], loss=result["loss"],
                      **({"per": result["per"]} if "per" in result else {}),
                      skipped=state.skipped, startup_s=clock.startup_s, train_s=train_s,
                      compile_s=clock.compile_s, eval_s=clock.eval_s, total_s=clock.elapsed())
    run.log.close()
    shutdown(run.dist)
    return result


class StopRequest:
    """Ctrl-C (SIGINT) asks the loop to stop at the next step boundary and save; a second Ctrl-C
    interrupts at once. `at_step` stops the same way at a given step (tests drive `loop` with it)."""

    def __init__(self, at_step: int | None = None):
        self.requested, self.at_step = False, at_step

    @contextlib.contextmanager
    def installed(self):
        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            print("\nfastctc: Ctrl-C: saving a checkpoint at the end of this step (Ctrl-C again to abort)",
                  file=sys.stderr, flush=True)

        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    def should_stop(self, run: Run) -> bool:
        stop = self.requested or (self.at_step is not None and run.state.step >= self.at_step)
        if run.dist.enabled:  # every rank stops at the same step
            flag = all_reduce_sum(torch.tensor([float(stop)], device=run.device), run.dist)
            stop = bool(flag.item() > 0)  # host sync, once per step and only under DDP
        return stop
