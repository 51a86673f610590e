"""The training loop: `train` prepares a Run and loops over optimizer steps; the small pieces it calls
(evaluation with the best-model export, checkpoints, the progress line, Ctrl-C and SIGTERM) follow it."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import torch
from safetensors import SafetensorError

from ..config import RunConfig
from ..errors import TrainingError
from ..models import save_pretrained
from .checkpoint import rng_state, save_checkpoint
from .distributed import all_reduce_sum, any_rank, barrier, shutdown
from .evaluate import evaluate
from .progress import Window, format_seconds
from .run import Run, prepare_run
from .run_dir import intact, resume_command
from .steps import forward_backward, optimizer_step, steps


def train(cfg: RunConfig, out_dir: Path, resume: bool = False) -> dict:
    """Train per `cfg` in run directory `out_dir`; `resume` continues the checkpoint found there.

    Writes config.toml, metrics.jsonl, checkpoint/ (resumable state), best/ (best eval WER) and
    model/ (the final model), the last two as Transformers-format checkpoints that load with
    fastctc.models.load_pretrained and with transformers' AutoModelForCTC / Wav2Vec2Processor.
    Returns the final evaluation (wer, cer, loss; {} on ranks other than 0), or {"stopped": step,
    "signal": signal number} when Ctrl-C or SIGTERM stopped it early. Raises TrainingError when a write
    fails (a full disk) or the weights are no longer finite; neither is ever saved half-way.
    """
    run = prepare_run(cfg, out_dir, resume)
    with StopRequest().installed() as stop:
        try:
            return loop(run, stop)
        except OSError as e:  # any other write of the run (metrics.jsonl on a full disk)
            raise TrainingError(f"step {run.state.step}: {e}; {intact(run.out_dir)}") from None
        finally:
            run.log.close()


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
        window.add(
            state.step,
            loss_sum,
            len(micro_batches),
            sum(len(b.texts) for b in micro_batches),
            sum(float(b.lengths.sum()) for b in micro_batches) / cfg.data.sample_rate,
            grad_norm,
            skipped,
        )

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
            return stopped(run, stop)
    return finish(run, window)


def dynamo_graphs() -> int:
    """Graphs dynamo has compiled in this process: a step that moved it spent its time compiling."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def report_progress(run: Run, window: Window, first_step: int) -> Window:
    """The progress line and its metrics.jsonl event, for the window that ends at this step; a new window."""
    state, clock, dist = run.state, run.clock, run.dist
    if dist.enabled:  # the global batch's loss: every rank's mean over equal-sized shares, read with the rest
        window.loss_sum = all_reduce_sum(torch.as_tensor(window.loss_sum, device=run.device).float(), dist)
        window.loss_sum /= dist.world_size
    loss_sum, grad_norm = record_skips(run, window)
    now = time.time()
    dt = max(now - window.t0, 1e-9)
    taken = state.step - first_step
    eta = (run.total_steps - state.step) * (now - clock.train_start - clock.compile_s) / taken
    mean_loss = loss_sum / max(1, window.micro_batches)
    lr = run.schedule.get_last_lr()[0]
    utt_s, audio_s = window.utterances * dist.world_size / dt, window.audio_s * dist.world_size / dt
    mem = f" | mem {torch.cuda.max_memory_allocated(run.device) / 2**30:.1f} GiB" if run.device.type == "cuda" else ""
    run.say(
        f"step {state.step}/{run.total_steps} | epoch {state.epoch + 1} | loss {mean_loss:.4f} | lr {lr:.2e} | "
        f"grad {grad_norm:.2f} | {utt_s:.1f} utt/s | {audio_s:.0f} audio s/s{mem} | ETA {format_seconds(eta)}"
    )
    run.log.write(
        "train",
        step=state.step,
        epoch=state.epoch + 1,
        loss=mean_loss,
        lr=lr,
        grad_norm=grad_norm,
        utt_per_s=utt_s,
        audio_s_per_s=audio_s,
        skipped=state.skipped,
        elapsed_s=clock.elapsed(),
        compile_s=clock.compile_s,
    )
    return Window(t0=now)


def record_skips(run: Run, window: Window) -> tuple[float, float]:
    """Read the window's device values (one transfer), count and log its skipped steps; (loss sum, grad norm)."""
    loss_sum, grad_norm, skipped_steps = window.fetch()
    for step in skipped_steps:
        run.log.write("skip", step=step)
    run.state.skipped += len(skipped_steps)
    return loss_sum, grad_norm


def evaluate_and_export(run: Run, final: bool = False) -> dict:
    """Rank 0 alone evaluates (the other ranks wait for it at the next collective): the model, and with
    train.weight_average the average too (under "average"); whichever scores a new best WER (PER for
    phone targets) is exported to best/, the model on a tie."""
    refuse_non_finite(run)  # every rank: under DDP they hold the same weights and reach the same verdict
    if not run.main:
        return {}
    result = evaluate_weights(run, run.model, "eval", final)
    scored = [(result, run.model, "model")]
    if run.average is not None:
        averaged = evaluate_weights(run, run.average.model, "eval_average", final)
        result["average"] = {k: v for k, v in averaged.items() if k != "examples"}
        scored.append((averaged, run.average.model, "average"))
    best, model, source = min(scored, key=lambda scored_one: _score(scored_one[0]))
    state = run.state
    if state.best_wer is None or _score(best) < state.best_wer:
        state.best_wer, state.best_source, state.best_step = _score(best), source, state.step
        export(run, run.out_dir / "best", model)
    return result


def _score(result: dict) -> float:
    return result.get("per", result["wer"])  # phone targets: PER picks best/


def evaluate_weights(run: Run, model, event: str, final: bool) -> dict:
    """One evaluation of `model` (the run's, or its weight average's): the line, the metrics.jsonl event
    and, at the end, the model's per-utterance report."""
    t0 = time.time()
    cfg, state = run.cfg, run.state
    result = evaluate(
        model,
        run.eval_ds,
        run.vocab,
        cfg.train.eval_batch_size,
        run.device,
        data=cfg.data,
        report_dir=run.out_dir / "report" if final and model is run.model else None,
        autocast=run.precision.autocast,
        features=run.features.eval if run.features is not None else None,
    )
    run.clock.eval_s += time.time() - t0
    tag = "final eval" if final else f"eval step {state.step}"
    if model is not run.model:
        tag += f" of the weight average ({run.average.label})"
    per = {"per": result["per"]} if "per" in result else {}
    scores = (
        f"PER {result['per']:.4f} ({cfg.data.score_phone_set} phones)"
        if per
        else f"WER {result['wer']:.4f} | CER {result['cer']:.4f}"
    )
    run.say(f"{tag} ({len(run.eval_ds)} utterances) | loss {result['loss']:.4f} | {scores}")
    run.log.write(
        event,
        step=state.step,
        loss=result["loss"],
        wer=result["wer"],
        cer=result["cer"],
        **per,
        elapsed_s=run.clock.elapsed(),
        eval_s=run.clock.eval_s,
        **({"final": True} if final else {}),
    )
    return result


def export(run: Run, directory: Path, model=None) -> None:
    """A Transformers-format model (the run's, or `model`), written under a temporary name and swapped in."""
    tmp = directory.parent / f"{directory.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with writing(run, f"{directory.name}/", tmp):
        save_pretrained(
            model if model is not None else run.model,
            tmp,
            run.vocab.tokens,
            do_normalize=run.cfg.data.do_normalize,
            return_attention_mask=run.use_mask,
            phones=run.cfg.data.targets == "phones",  # transformers' phoneme tokenizer: spaced phones
            adapter_language=run.cfg.model.target_language or None,  # MMS: adapter.<lang>.safetensors too
        )
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def save(run: Run, window: Window) -> None:
    """A resumable checkpoint (every rank's RNG streams, so a DDP resume is exact on every rank)."""
    refuse_non_finite(run)
    record_skips(run, window)  # the state it saves counts every step so far
    generators = run.augment.generators() if run.augment is not None else None
    rng_states = [rng_state(generators)]
    if run.dist.enabled:
        rng_states = [None] * run.dist.world_size
        torch.distributed.all_gather_object(rng_states, rng_state(generators))
    if run.main:
        with writing(run, "checkpoint/"):  # save_checkpoint removes its own partial copy
            save_checkpoint(
                run.out_dir / "checkpoint",
                run.model,
                run.optimizer,
                run.schedule,
                run.scaler,
                vars(run.state),
                rng_states,
                average=run.average.state_dict() if run.average is not None else None,
            )
    barrier(run.dist)


def refuse_non_finite(run: Run) -> None:
    """Weights with a NaN or inf are never saved or exported: one reduction on the device, one read
    (a host sync, once per save)."""
    weights = list(run.model.state_dict().values())
    finite = torch.stack([torch.isfinite(w).all() for w in weights if w.is_floating_point()]).all()
    if not finite.item():
        lr = run.schedule.get_last_lr()[0]
        raise TrainingError(
            f"step {run.state.step}: the model's weights are no longer finite (NaN or inf; lr {lr:.2e}, "
            f"{run.state.skipped} steps skipped so far), so nothing is saved or exported at this step; "
            f"{intact(run.out_dir)} (lower optim.lr or raise optim.warmup_steps to start afresh)"
        )


@contextlib.contextmanager
def writing(run: Run, what: str, tmp: Path | None = None):
    """A write of the run that fails (a full disk, a file system gone read-only) ends the run in one line
    that says what failed and what is intact; its temporary copy `tmp` is removed."""
    try:
        yield
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, (OSError, SafetensorError)):
            raise
        reason = e.strerror if isinstance(e, OSError) and e.strerror else _io_reason(str(e))
        raise TrainingError(
            f"step {run.state.step}: writing {run.out_dir / what} failed ({reason}); {intact(run.out_dir)}"
        ) from None


def _io_reason(message: str) -> str:
    """safetensors reports an OS error as `IoError(Os { code: 28, kind: StorageFull, message: "No space left
    on device" })`: its message, or the first line."""
    found = re.search(r'message: "([^"]*)"', message)
    return found.group(1) if found else message.splitlines()[0] if message else "write failed"


def stopped(run: Run, stop: StopRequest) -> dict:
    run.log.close()
    if run.main:
        print(
            f"fastctc: stopped at step {run.state.step}/{run.total_steps}; checkpoint saved. Resume with:\n  "
            f"{resume_command(run.out_dir)}",
            flush=True,
        )
    shutdown(run.dist)
    return {"stopped": run.state.step, **({"signal": stop.signum} if stop.signum else {})}


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
        print(
            f"fastctc: {state.step} steps in {format_seconds(train_wall)}"
            + (
                f" ({format_seconds(clock.compile_s)} compiling over {len(clock.shapes)} shapes, "
                f"{format_seconds(steady)} steady)"
                if run.compiled
                else ""
            )
            + f" | skipped steps {state.skipped} | {format_seconds(clock.elapsed())} total",
            flush=True,
        )
        if run.average is not None:
            print(average_summary(run, result), flush=True)
        print(f"run directory: {run.out_dir}")
        averaged = result.get("average", {})
        run.log.write(
            "final",
            step=state.step,
            wer=result["wer"],
            cer=result["cer"],
            loss=result["loss"],
            **({"per": result["per"]} if "per" in result else {}),
            skipped=state.skipped,
            startup_s=clock.startup_s,
            train_s=train_s,
            compile_s=clock.compile_s,
            eval_s=clock.eval_s,
            total_s=clock.elapsed(),
            cuda_peak_bytes=torch.cuda.max_memory_allocated(run.device) if run.device.type == "cuda" else None,
            **{f"average_{k}": v for k, v in averaged.items()},
            best_source=state.best_source,
            best_step=state.best_step,
        )
    run.log.close()
    shutdown(run.dist)
    return result


def average_summary(run: Run, result: dict) -> str:
    """The summary's line on the weight average: its final score beside the model's, and what best/ holds."""
    state, averaged = run.state, result["average"]
    metric = "per" if "per" in result else "wer"
    return (
        f"fastctc: weight average ({run.average.label}): final {metric.upper()} {averaged[metric]:.4f} "
        f"(the model's {result[metric]:.4f}) | best/ holds the "
        + ("weight average" if state.best_source == "average" else "model")
        + f" of step {state.best_step} ({metric.upper()} {state.best_wer:.4f})"
    )


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM (what Slurm, Kubernetes, `docker stop` and torchrun send before their
    SIGKILL) asks the loop to stop at the next step boundary and save. A second Ctrl-C interrupts at
    once; a second SIGTERM ends the process at once, as the SIGKILL would: the last checkpoint is intact
    either way (saves are atomic). `at_step` stops the same way at a given step (tests drive `loop` with it)."""

    NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

    def __init__(self, at_step: int | None = None):
        self.requested, self.at_step = False, at_step
        self.signum: int | None = None  # the signal that asked, if one did

    @contextlib.contextmanager
    def installed(self):
        def handler(signum, frame):
            if self.requested and signum == signal.SIGTERM:  # the default action: terminate now
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)
            if self.requested:
                raise KeyboardInterrupt
            self.requested, self.signum = True, signum
            print(
                f"\nfastctc: {self.NAMES[signum]}: saving a checkpoint at the end of this step "
                f"({self.NAMES[signum]} again to abort)",
                file=sys.stderr,
                flush=True,
            )

        try:
            previous = {s: signal.signal(s, handler) for s in self.NAMES}
        except ValueError:  # not the main thread: no handler, the signals behave as usual
            yield self
            return
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def should_stop(self, run: Run) -> bool:
        """Every rank stops at the same step: the ranks agree on the host (any_rank), without a device sync."""
        return any_rank(self.requested or (self.at_step is not None and run.state.step >= self.at_step), run.dist)
