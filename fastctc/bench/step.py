"""Training-step benchmark: a whole fastctc step against the step transformers' Trainer takes,
with the batch already in memory.

    fastctc bench step                                   # CPU: wav2vec2-base layout at base width, fp32
    fastctc bench step --families wav2vec2-base wavlm-large --batch 4 --seconds 1.5
    fastctc bench step --size card --precision bf16      # the cards' sizes on a GPU
    fastctc bench step --model-cost                      # no timing: FLOPs, bytes and the predicted H100
                                                         # time of every card (fastctc bench cost)

Providers, same weights, same batch, same precision, timed side by side in alternating order:
  fastctc           CTCModel forward under fastctc's autocast, fastctc.kernels.ctc_loss (the fused
                    Triton kernel on CUDA; its PyTorch path on CPU), backward, clip_grad_norm_(1.0),
                    AdamW as fastctc.train.optim builds it, the linear schedule, zero_grad: the loop's
                    own forward_backward + optimizer_step (fastctc.train.steps), with no host sync (the loss stays on the device, the
                    loop reads it once per progress line; the non-finite skip is fused AdamW's
                    found_inf, decided on the device);
  fastctc-compiled  the same with torch.compile(model) (train.compile=on; compiled in the warm-up);
  fastctc-invariant (group-norm families) the fastctc step with train.padding_invariant = true;
  fastctc-cached    the fastctc step with train.feature_cache: the frozen conv stack's output stored by
                    the warm-up and gathered from then on (padding-invariant for group-norm families,
                    where only that is exact); its cache_speedup is over the uncached row of the same
                    convention (fastctc, or fastctc-invariant), timed in the same run;
  trainer           what Trainer.training_step and its inner loop do for run_speech_recognition_ctc.py:
                    *ForCTC(input_values, attention_mask, labels padded with -100) with its own CTC
                    loss, backward, clip_grad_norm_(1.0), torch.optim.AdamW (optim="adamw_torch"),
                    get_linear_schedule_with_warmup, zero_grad, and the NaN/inf check of the loss
                    (logging_nan_inf_filter). Written out by hand: Trainer needs accelerate and a
                    dataset, and adds nothing per step beyond these calls.
Neither side uses a GradScaler (under fp16 it would cost both the same). Prints median and p20/p80
per provider, the speedup over trainer and each side's peak memory; the last line is one JSON document. Goals: >= 1.3x trainer on CPU in float32; >= 2x in bf16 on a GPU.
"""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import torch

from ..config import RunConfig
from ..data.batching import Batch
from ..models.frozen_features import FrozenFeatureStore
from ..train.feature_cache import FeatureCaches
from ..train.optim import build_optimizer, linear_schedule
from ..train.precision import resolve_precision
from ..train.run import Run, RunState
from ..train.steps import forward_backward, optimizer_step
from .pairs import FAMILIES, SIZES, audio_batch, build_pair, targets_for, uses_attention_mask
from .timing import add_run_args, alternate, environment, peak_memory_mb, print_goals, profile_table, setup_device

GOALS = {"cpu": ("fp32", 1.3), "cuda": ("bf16", 2.0)}  # device -> (precision, speedup over trainer)


def step_run(model, step_model, use_mask: bool, precision, device: torch.device, invariant: bool = False) -> Run:
    """A Run holding what one training step reads (the loop's defaults: AdamW as train.optim builds it,
    the linear schedule, clip at 1.0, zero_infinity, padded CTC lengths without a mask; blank = the last
    id, as pairs.targets_for draws targets); the data and log fields a step never reads are empty.
    No GradScaler (see the module docstring). invariant: train.padding_invariant."""
    cfg = RunConfig()
    cfg.train.padding_invariant = invariant
    optimizer = build_optimizer(model, cfg.optim, device)
    return Run(
        cfg=cfg,
        out_dir=None,
        dist=None,
        device=device,
        precision=precision,
        model=model,
        step_model=step_model,
        ddp=None,
        compiled=step_model is not model,
        vocab=SimpleNamespace(blank=model.config.vocab_size - 1),
        use_mask=use_mask,
        sampler=None,
        loader=None,
        augment=None,
        eval_ds=None,
        optimizer=optimizer,
        schedule=linear_schedule(optimizer, warmup_steps=1000, total_steps=10**6),
        scaler=torch.amp.GradScaler(device.type, enabled=False),
        average=None,
        total_steps=10**6,
        log=None,
        state=RunState(),  # the step reads its step count (train.freeze_finetune_steps)
        clock=None,
    )


def fastctc_step(
    model, step_model, waves, lengths, targets, target_lengths, use_mask, precision, device, invariant=False, store=None
):
    """One optimizer step as the training loop takes it (grad_accum 1): train.steps' own forward_backward,
    then its optimizer_step. invariant: train.padding_invariant; store: a FrozenFeatureStore
    (train.feature_cache), filled by the first call (the warm-up), gathered from by every later one."""
    run = step_run(model, step_model, use_mask, precision, device, invariant)
    ids = [str(i) for i in range(len(waves))]
    if store is not None:  # the loader's lengths are on the host: the store builds its gather indices there
        run.features = FeatureCaches(train=store, eval=None, conv=model.conv_features)
        lengths = lengths.cpu().pin_memory() if device.type == "cuda" else lengths.cpu()
    micro_batches = [Batch(waves, lengths, targets, target_lengths, texts=[""] * len(waves), ids=ids)]

    def step():
        loss_sum = forward_backward(run, micro_batches)
        optimizer_step(run)
        return loss_sum  # read by the loop once per progress line, not here

    return step


def trainer_step(hf, waves, mask, labels, precision, device):
    """One optimizer step as Trainer takes it (gradient_accumulation_steps 1, max_grad_norm 1.0)."""
    import transformers

    params = [p for p in hf.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, 1000, 10**6)
    inputs = {"input_values": waves, "labels": labels}
    if mask is not None:
        inputs["attention_mask"] = mask

    def step():
        with precision.autocast():  # Trainer's autocast for bf16/fp16 (accelerate's), none in fp32
            loss = hf(**inputs).loss
        loss.backward()
        bool(torch.isnan(loss) | torch.isinf(loss))  # logging_nan_inf_filter (a host sync)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        hf.zero_grad(set_to_none=True)

    return step


def step_inputs(native, batch: int, seconds: float, device: torch.device) -> dict:
    """The batch both sides step on: audio, targets (fastctc's), and the attention mask and -100-padded
    labels Trainer's collator would give (the mask only where the family's checkpoints return one)."""
    waves, lengths = audio_batch(batch, seconds)
    targets, target_lengths = targets_for(native, lengths)
    waves, lengths, targets, target_lengths = (t.to(device) for t in (waves, lengths, targets, target_lengths))
    use_mask = uses_attention_mask(native)
    mask = (torch.arange(waves.shape[1], device=device)[None, :] < lengths[:, None]).long() if use_mask else None
    labels = targets.masked_fill(
        torch.arange(targets.shape[1], device=device)[None, :] >= target_lengths[:, None], -100
    )
    return dict(
        waves=waves,
        lengths=lengths,
        targets=targets,
        target_lengths=target_lengths,
        use_mask=use_mask,
        mask=mask,
        labels=labels,
    )


def fastctc_providers(native, batch_tensors, use_mask: bool, precision, device, compiled: bool) -> tuple[dict, str]:
    """fastctc's providers for one family, and the name of the uncached row fastctc-cached is compared with.

    Frozen features computed once (train.feature_cache) are exact only where padding cannot reach the conv
    stack's valid frames, so a group-norm family's cached step is padding-invariant, beside its uncached twin.
    """

    def step(step_model, **kw):
        return fastctc_step(native, step_model, *batch_tensors, use_mask, precision, device, **kw)

    providers = {"fastctc": step(native)}
    if compiled:
        providers["fastctc-compiled"] = step(torch.compile(native))
    group = native.config.feat_extract_norm == "group"
    if group:
        providers["fastctc-invariant"] = step(native, invariant=True)
    lengths = batch_tensors[1]
    ids, dtype = [str(i) for i in range(len(lengths))], precision.dtype or torch.float32
    store = FrozenFeatureStore(ids, lengths.tolist(), native.config, dtype, device)
    providers["fastctc-cached"] = step(native, invariant=group, store=store)
    return providers, "fastctc-invariant" if group else "fastctc"


def bench_family(
    family: str,
    size: str,
    batch: int,
    seconds: float,
    repeats: int,
    warmup: int,
    compiled: bool,
    precision_name: str,
    device: torch.device,
    profile: int = 0,
    log=print,
) -> list[dict]:
    precision = resolve_precision(precision_name, device)
    hf, native = build_pair(family, size)
    hf, native = hf.to(device), native.to(device)
    x = step_inputs(native, batch, seconds, device)
    log(
        f"== {family} ({size}: {native.config.hidden_size} wide, {native.config.num_hidden_layers} layers), "
        f"batch {batch} x {seconds:g} s, {precision.name}, attention mask {'on' if x['use_mask'] else 'off'}"
    )

    torch._dynamo.reset()  # a fresh dynamo cache per family (see bench.encoder: the recompile limit)
    batch_tensors = (x["waves"], x["lengths"], x["targets"], x["target_lengths"])
    providers, uncached = fastctc_providers(native, batch_tensors, x["use_mask"], precision, device, compiled)
    providers["trainer"] = trainer_step(hf, x["waves"], x["mask"], x["labels"], precision, device)
    timings = alternate(providers, repeats, warmup, device, log)
    ref = timings["trainer"]["median_ms"]
    rows = []
    for name, t in timings.items():
        peak = peak_memory_mb(providers[name], device)
        speedup = ref / t["median_ms"]
        shape = dict(family=family, size=size, batch=batch, seconds=seconds, precision=precision.name)
        rows.append(dict(**shape, provider=name, speedup_vs_trainer=speedup, peak_mb=peak, **t))
        log(
            f"  {name:16s} median {t['median_ms']:9.1f} ms  p20 {t['p20_ms']:9.1f}  p80 {t['p80_ms']:9.1f}  "
            f"{speedup:5.2f}x trainer  peak " + (f"{peak:8.1f} MiB" if peak is not None else "n/a")
        )
    cache_speedup = timings[uncached]["median_ms"] / timings["fastctc-cached"]["median_ms"]
    for r in rows:
        r["cache_speedup"] = cache_speedup if r["provider"] == "fastctc-cached" else None
    log(f"  frozen features cached: {cache_speedup:.2f}x {uncached} (the conv stack skipped; same run)")
    for name in providers if profile else ():
        log(f"-- profile: {family} step {name}\n{profile_table(providers[name], device, profile)}")
    return rows


def build_parser(cuda: bool) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="fastctc bench step",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[1:]),
    )
    ap.add_argument("--families", nargs="+", choices=list(FAMILIES), default=["wav2vec2-base"])
    ap.add_argument("--size", choices=SIZES, default="card" if cuda else "base")
    ap.add_argument("--batch", type=int, default=None, help="rows (default: the card's batch at card size, else 4)")
    ap.add_argument(
        "--seconds", type=float, default=None, help="audio per row (default: the card's at card size, else 1.5)"
    )
    ap.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="bf16" if cuda else "fp32")
    add_run_args(ap, "timed steps per provider")
    ap.add_argument(
        "--model-cost",
        action="store_true",
        help="time nothing: print the cost model of every card's step (fastctc bench cost) and exit",
    )
    return ap


def goals_met(results: list[dict], precision: str, device: torch.device) -> dict:
    """Per fastctc provider, its worst family's speedup against the goal (none at another precision)."""
    goal_precision, target = GOALS[device.type]
    goals = {}
    if precision != goal_precision:
        return goals
    for provider in ("fastctc", "fastctc-compiled"):
        rows = [r for r in results if r["provider"] == provider]
        if rows:
            worst = min(rows, key=lambda r: r["speedup_vs_trainer"])
            goals[f"step_{provider}_vs_trainer"] = {
                "worst": worst["speedup_vs_trainer"],
                "family": worst["family"],
                "target": target,
                "met": worst["speedup_vs_trainer"] >= target,
            }
    return goals


def main(argv: list[str] | None = None) -> dict:
    ap = build_parser(torch.cuda.is_available())
    args, rest = ap.parse_known_args(argv)
    if args.model_cost:
        from . import cost

        return cost.main(rest)
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    device = setup_device(args)

    report = {
        "bench": "step",
        **environment(device),
        "size": args.size,
        "precision": args.precision,
        "repeats": args.repeats,
        "results": [],
    }
    for family in args.families:
        fam = FAMILIES[family]
        batch = args.batch or (fam.card_batch if args.size == "card" else 4)
        seconds = args.seconds or (fam.card_seconds if args.size == "card" else 1.5)
        report["results"] += bench_family(
            family,
            args.size,
            batch,
            seconds,
            args.repeats,
            args.warmup,
            args.compile == "on",
            args.precision,
            device,
            args.profile,
        )
    goal_precision = GOALS[device.type][0]
    report["goals"] = goals = goals_met(report["results"], args.precision, device)
    print_goals(
        goals,
        f"\ngoals ({goal_precision} on {device.type}, worst family):"
        if goals
        else f"\nno goal at {args.precision} on {device.type} (the goal is {goal_precision})",
    )
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
