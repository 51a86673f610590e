"""Encoder benchmark: the native encoder against transformers' model holding the same weights.

    fastctc bench encoder                              # CPU: every family at base width, 1 s audio
    fastctc bench encoder --families wav2vec2-base --batch 2 --seconds 1 --repeats 7
    fastctc bench encoder --size card                  # the cards' sizes and batches (a GPU)

Per family, float32, three providers timed side by side in alternating order:
  native           fastctc.models CTCModel, eager
  native-compiled  torch.compile(CTCModel) (compiled in the warm-up; compile time is reported apart)
  transformers     transformers' *ForCTC (its default attention implementation), eager
and two modes:
  forward          eval mode under torch.no_grad(): inference;
  forward+backward train mode as fine-tuning runs it (recipe settings: SpecAugment on, dropouts 0,
                   frozen feature encoder), backward of a fixed random cotangent of the logits, so the
                   loss is left out (bench step measures it).
Prints median and p20/p80 per provider and the speedup over transformers; the last line is one JSON
document. Goals (CPU float32): forward+backward >= 1.0x transformers eager, >= 1.3x compiled.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import torch

from .pairs import FAMILIES, SIZES, audio_batch, build_pair, uses_attention_mask
from .timing import add_run_args, alternate, environment, print_goals, profile_table, setup_device

MODES = ("forward", "forward+backward")
GOALS = {"native": 1.0, "native-compiled": 1.3}  # forward+backward speedup over transformers eager


@dataclass
class Inputs:
    """One family's timed batch, the same for every provider."""

    waves: torch.Tensor  # (B, L)
    lengths: torch.Tensor | None  # (B,) the native side's true lengths; None when it sees no attention mask
    mask: torch.Tensor | None  # (B, L) transformers' attention_mask, or None
    cotangent: torch.Tensor  # (B, T, V) the fixed gradient of the logits that backward starts from


def make_inputs(native, batch: int, seconds: float, device: torch.device) -> Inputs:
    waves, lengths = audio_batch(batch, seconds)
    waves, lengths = waves.to(device), lengths.to(device)
    masked = uses_attention_mask(native)
    native_lengths = lengths if masked else None
    mask = (torch.arange(waves.shape[1], device=device)[None, :] < lengths[:, None]).long() if masked else None
    with torch.no_grad():
        T = native(waves, native_lengths)[0].shape[1]
    cotangent = torch.randn(batch, T, native.config.vocab_size, generator=torch.Generator().manual_seed(2)).to(device)
    return Inputs(waves, native_lengths, mask, cotangent)


def timed_call(forward, model, training: bool, cotangent: torch.Tensor):
    """What one timed run calls: the forward under no_grad, or (training) the forward and the backward of
    `cotangent` from cleared gradients."""
    if not training:

        def run():
            with torch.no_grad():
                forward()

        return run

    def run():
        model.zero_grad(set_to_none=True)
        forward().backward(cotangent)

    return run


def providers_for(training: bool, hf, native, step_model, x: Inputs) -> dict:
    """native, native-compiled (when compiled) and transformers, in that order, each a timed call."""
    forwards = {"native": (native, lambda: native(x.waves, x.lengths)[0])}
    if step_model is not None:
        forwards["native-compiled"] = (native, lambda: step_model(x.waves, x.lengths)[0])
    forwards["transformers"] = (hf, lambda: hf(x.waves, attention_mask=x.mask).logits)
    return {name: timed_call(fwd, model, training, x.cotangent) for name, (model, fwd) in forwards.items()}


def speedup_rows(timings: dict, where: dict, log) -> list[dict]:
    """One result row per provider (`where` names the family, size, batch, seconds and mode), each logged."""
    ref = timings["transformers"]["median_ms"]
    rows = []
    for name, t in timings.items():
        speedup = ref / t["median_ms"]
        rows.append(dict(**where, provider=name, speedup_vs_transformers=speedup, **t))
        log(
            f"  {name:16s} median {t['median_ms']:9.1f} ms  p20 {t['p20_ms']:9.1f}  p80 {t['p80_ms']:9.1f}  "
            f"{speedup:5.2f}x transformers"
        )
    return rows


def bench_family(
    family: str,
    size: str,
    batch: int,
    seconds: float,
    repeats: int,
    warmup: int,
    compiled: bool,
    device: torch.device,
    profile: int = 0,
    log=print,
) -> list[dict]:
    hf, native = build_pair(family, size)
    hf, native = hf.to(device), native.to(device)
    x = make_inputs(native, batch, seconds, device)
    # a fresh dynamo cache per family: every family's CTCModel.forward is the same code object, and its
    # guards would pile up to the recompile limit, after which "compiled" silently runs eager
    torch._dynamo.reset()
    step_model = torch.compile(native) if compiled else None
    params = sum(p.numel() for p in native.parameters())
    log(
        f"== {family} ({size}: {native.config.hidden_size} wide, {native.config.num_hidden_layers} layers, "
        f"{params / 1e6:.1f} M parameters), batch {batch} x {seconds:g} s, "
        f"attention mask {'on' if x.mask is not None else 'off'}"
    )
    rows = []
    for mode in MODES:
        training = mode == "forward+backward"
        hf.train(training)
        native.train(training)
        providers = providers_for(training, hf, native, step_model, x)
        log(f"-- {mode}")
        timings = alternate(providers, repeats, warmup, device, log)
        rows += speedup_rows(timings, dict(family=family, size=size, batch=batch, seconds=seconds, mode=mode), log)
        for name in providers if profile else ():
            log(f"-- profile: {family} {mode} {name}\n{profile_table(providers[name], device, profile)}")
    return rows


def main(argv: list[str] | None = None) -> dict:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(
        prog="fastctc bench encoder",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[1:]),
    )
    ap.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    ap.add_argument(
        "--size",
        choices=SIZES,
        default="card" if cuda else "base",
        help="tiny (smoke test), base (base width; the CPU default), card (the cards' sizes; GPU default)",
    )
    ap.add_argument("--batch", type=int, default=None, help="rows (default: the card's batch at card size, else 2)")
    ap.add_argument(
        "--seconds", type=float, default=None, help="audio per row (default: the card's at card size, else 1.0)"
    )
    add_run_args(ap, "timed runs per provider and mode")
    args = ap.parse_args(argv)
    device = setup_device(args)

    report = {"bench": "encoder", **environment(device), "size": args.size, "repeats": args.repeats, "results": []}
    for family in args.families:
        fam = FAMILIES[family]
        batch = args.batch or (fam.card_batch if args.size == "card" else 2)
        seconds = args.seconds or (fam.card_seconds if args.size == "card" else 1.0)
        report["results"] += bench_family(
            family, args.size, batch, seconds, args.repeats, args.warmup, args.compile == "on", device, args.profile
        )

    goals = {}
    for provider, target in GOALS.items():
        rows = [r for r in report["results"] if r["provider"] == provider and r["mode"] == "forward+backward"]
        if rows:
            worst = min(rows, key=lambda r: r["speedup_vs_transformers"])
            goals[f"fwd_bwd_{provider}_vs_transformers"] = {
                "worst": worst["speedup_vs_transformers"],
                "family": worst["family"],
                "target": target,
                "met": worst["speedup_vs_transformers"] >= target,
            }
    report["goals"] = goals
    print_goals(goals, "\ngoals (forward+backward, worst family):")
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
