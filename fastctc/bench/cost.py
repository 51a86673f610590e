"""Cost model: the FLOPs and bytes of one training step at each model card's size, the time floor
they imply on a named GPU, and the epoch and run times predicted at stated MFU levels, beside the
times the Transformers recipe published. Predicted, not measured: nothing here times anything.

    fastctc bench cost                         # every card, H100, one JSON line at the end
    fastctc bench step --model-cost            # the same table
    fastctc bench cost --cards wav2vec2-base-timit --mfu 0.3 0.5
    fastctc bench cost --memory-sizes xls-r-1b mms-1b-all --memory-batch 16 --memory-seconds 10

It also prints the memory model of XLS-R 300M / 1B / 2B and MMS-1b (fastctc/bench/memory.py): weights,
AdamW state and activations with and without gradient checkpointing, and whether each fits 80 GB.

How it counts. The native CTCModel is built on the meta device (no memory, no arithmetic) in bf16
and runs forward + backward of one step at the card's global batch and the corpus's mean utterance
length (frozen feature encoder, SpecAugment on, as the recipe trains). A dispatch mode sees every
aten op: FLOPs from torch.utils.flop_counter's formulas (matmuls, convolutions, attention; 2 per
multiply-add), bytes as the op's inputs plus outputs (what eager PyTorch moves, each op on its own;
fusion under torch.compile moves less). The optimizer (fused AdamW, fp32 state: read p, g, m, v and
write p, m, v = 28 B and ~12 FLOPs per trainable parameter) and the CTC loss (log-softmax over
(B, T, V) plus alpha and beta over 2S+1 states, ~30 FLOPs per state and frame) are added by formula.
bf16 everywhere is an approximation: autocast keeps layer norms and softmax in fp32, so their
bytes are under-counted up to 2x (they are a few percent of the step).

The floor of a step: each op at its own roofline, max(FLOPs / peak, bytes / bandwidth), summed;
launch overhead and the host are not counted. An MFU level m predicts a step at FLOPs / (m * peak).
Evaluation and data loading are not counted in the predicted run times.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from ..models import CTCModel, EncoderConfig
from . import memory
from .pairs import FAMILIES, RECIPE, VOCAB


@dataclasses.dataclass(frozen=True)
class GPU:
    name: str
    bf16_flops: float  # dense bf16 FLOP/s
    bandwidth: float  # bytes/s
    source: str


H100_DATASHEET = GPU("H100 SXM datasheet", 989e12, 3.35e12, "NVIDIA datasheet: 989 TFLOP/s dense bf16, 3.35 TB/s HBM3")
H100_MEASURED = GPU(
    "H100 measured here",
    798e12,
    3.0e12,
    "this workplace's H100: a bf16 matmul at 798 TFLOP/s, a device copy at ~3.0 TB/s",
)
GPUS = {"h100": H100_DATASHEET, "h100-measured": H100_MEASURED}


@dataclasses.dataclass(frozen=True)
class Corpus:
    name: str
    utterances: int
    hours: float

    @property
    def mean_seconds(self) -> float:
        return self.hours * 3600 / self.utterances


TIMIT = Corpus("TIMIT train", 4620, 4620 * 3.1 / 3600)  # mean ~3.1 s (SA sentences included)
LIBRISPEECH_100 = Corpus("LibriSpeech train-clean-100", 28539, 100.6)


@dataclasses.dataclass(frozen=True)
class Card:
    name: str
    family: str  # key of bench.pairs.FAMILIES (the layout)
    corpus: Corpus
    batch: int  # global batch
    epochs: int
    published: str  # the recipe README's training time, or "" where it published none
    published_s: float | None  # the same in seconds, per card, as published
    published_hw: str
    steps: int | None = None  # the card's own step count where it differs from epochs x ceil(N / batch)


CARDS = {
    "wav2vec2-base-timit": Card(
        "wav2vec2-base-timit", "wav2vec2-base", TIMIT, 32, 20, "32 min", 32 * 60, "1 x TITAN RTX"
    ),
    "distilhubert-timit": Card("distilhubert-timit", "distilhubert", TIMIT, 32, 20, "26 min", 26 * 60, "1 x TITAN RTX"),
    "unispeech-large-timit": Card(
        "unispeech-large-timit", "unispeech-large", TIMIT, 32, 20, "35 min", 35 * 60, "1 x TITAN RTX"
    ),
    "wavlm-large-timit": Card("wavlm-large-timit", "wavlm-large", TIMIT, 32, 100, "", None, "", steps=12_500),
    "hubert-large-librispeech100": Card(
        "hubert-large-librispeech100",
        "hubert-large",
        LIBRISPEECH_100,
        32,
        3,
        "1 h 30",
        90 * 60,
        "8 x V100",
        steps=2_620,
    ),  # > 20 s dropped
}


def card_config(family: str) -> EncoderConfig:
    """The native EncoderConfig of a family at its card's size with the recipe's settings."""
    fam = FAMILIES[family]
    fields = {f.name for f in dataclasses.fields(EncoderConfig)}
    keys = {
        **fam.card_width,
        **fam.layout,
        **RECIPE,
        "model_type": fam.model_type,
        "vocab_size": VOCAB,
        "pad_token_id": VOCAB - 1,
    }
    return EncoderConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in keys.items() if k in fields})


class OpCost(TorchDispatchMode):
    """Per aten op: FLOPs (flop_counter's formulas) and bytes (inputs + outputs); totals and the
    roofline floor on each GPU."""

    def __init__(self, gpus: dict[str, GPU]):
        super().__init__()
        self.gpus = gpus
        self.flops = 0
        self.bytes = 0
        self.ops = 0
        self.floor_s = {k: 0.0 for k in gpus}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.is_view or func in (torch.ops.aten.detach.default, torch.ops.aten.lift_fresh.default):
            return out  # no data moves
        packet = func._overloadpacket
        flops = flop_registry[packet](*args, **kwargs, out_val=out) if packet in flop_registry else 0
        nbytes = sum(t.numel() * t.element_size() for t in _tensors((args, kwargs, out)))
        self.add(flops, nbytes)
        return out

    def add(self, flops: float, nbytes: float) -> None:
        self.flops += flops
        self.bytes += nbytes
        self.ops += 1
        for k, g in self.gpus.items():
            self.floor_s[k] += max(flops / g.bf16_flops, nbytes / g.bandwidth)


def _tensors(tree) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_flatten

    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def step_cost(
    family: str, batch: int, seconds: float, gpus: dict[str, GPU] | None = None, sample_rate: int = 16_000
) -> dict:
    """FLOPs, bytes and per-GPU floor of one training step (forward, loss, backward, optimizer)."""
    gpus = gpus or GPUS
    cfg = card_config(family)
    with torch.device("meta"):
        model = CTCModel(cfg).to(torch.bfloat16)
    model.freeze_feature_encoder()
    model.train()
    N = int(seconds * sample_rate)
    waves = torch.empty(batch, N, device="meta", dtype=torch.bfloat16)
    lengths = torch.full((batch,), N, device="meta", dtype=torch.long)
    counter = OpCost(gpus)
    with counter:
        logits, _ = model(waves, lengths)  # (B, T, V)
        # stand-in for the loss's gradient: the CTC kernel writes a (B, T, V) gradient (formula below)
        logits.backward(torch.empty_like(logits))
    B, T, V = logits.shape
    S = 2 * max(1, T // 4) + 1  # the cards' corpora: about one character per four frames
    # fused CTC: log-softmax (read logits, ~5 FLOPs per element), alpha and beta (~30 FLOPs per state
    # and frame), gradient (write (B, T, V)); the alpha table is written and read once (fp32)
    counter.add(B * T * V * 5 + B * T * S * 30, 3 * B * T * V * 2 + 2 * B * T * S * 4)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counter.add(12 * trainable, 28 * trainable)  # fused AdamW, fp32 master weights and state
    return {
        "cached": frozen_feature_saving(model, waves, gpus),
        "family": family,
        "batch": batch,
        "seconds": seconds,
        "frames": T,
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": trainable,
        "flops": counter.flops,
        "bytes": counter.bytes,
        "ops": counter.ops,
        "floor_s": dict(counter.floor_s),
    }


def frozen_feature_saving(model: CTCModel, waves: torch.Tensor, gpus: dict[str, GPU]) -> dict:
    """What train.feature_cache takes out of a step: the frozen conv stack's forward (it has no backward: its
    parameters are frozen and its input needs no gradient), counted as the step counts it, less the gather
    that replaces it (read the stored rows, write the (B, T, C) batch, bf16)."""
    conv = OpCost(gpus)
    with torch.no_grad(), conv:
        feats = model.conv_features(waves, None)  # (B, T, C), as the step's forward runs it (rows unpadded)
    gather = 2 * feats.numel() * feats.element_size()
    return {
        "flops": conv.flops,
        "bytes": conv.bytes,
        "gather_bytes": gather,
        "floor_s": {k: conv.floor_s[k] - gather / g.bandwidth for k, g in gpus.items()},
    }


def card_prediction(card: Card, mfus: list[float], gpus: dict[str, GPU] | None = None) -> dict:
    """One card: its step at the global batch and mean utterance, the epoch and the run, on each GPU."""
    gpus = gpus or GPUS
    seconds = card.corpus.mean_seconds
    step = step_cost(card.family, card.batch, seconds, gpus)
    steps_per_epoch = math.ceil(card.corpus.utterances / card.batch)
    run_steps = card.steps or steps_per_epoch * card.epochs
    row = {
        "card": card.name,
        "family": card.family,
        "corpus": card.corpus.name,
        "utterances": card.corpus.utterances,
        "mean_seconds": seconds,
        "batch": card.batch,
        "epochs": card.epochs,
        "steps": run_steps,
        "step": step,
        "published": card.published,
        "published_s": card.published_s,
        "published_hw": card.published_hw,
        "gpus": {},
    }
    for k, g in gpus.items():
        row["gpus"][k] = {
            "floor_step_s": step["floor_s"][k],
            "floor_run_s": step["floor_s"][k] * run_steps,
            "mfu": {f"{m:g}": step["flops"] / (m * g.bf16_flops) * run_steps for m in mfus},
        }
    return row


def fmt_time(s: float | None) -> str:
    if s is None:
        return "—"
    if s >= 3600:
        return f"{int(s // 3600)} h {int(round(s % 3600 / 60)):02d}"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def table(rows: list[dict], gpu: str, mfus: list[float]) -> str:
    """The README's table: one line per card."""
    mfu_heads = " | ".join(f"run at {m:.0%} MFU" for m in mfus)
    lines = [
        f"| card | params | step (batch x mean s) | TFLOP / step | GB moved / step (eager) | floor / step | "
        f"floor / run | {mfu_heads} | published (hardware) |",
        "|---" * (8 + len(mfus)) + "|",
    ]
    for r in rows:
        s, g = r["step"], r["gpus"][gpu]
        mfu_cells = " | ".join(fmt_time(g["mfu"][f"{m:g}"]) for m in mfus)
        pub = f"{r['published']} ({r['published_hw']})" if r["published"] else "not published"
        lines.append(
            f"| {r['card']} | {s['params'] / 1e6:.0f} M | {r['batch']} x {r['mean_seconds']:.1f} s, "
            f"{r['steps']:,} steps | {s['flops'] / 1e12:.2f} | {s['bytes'] / 1e9:.1f} | "
            f"{g['floor_step_s'] * 1e3:.1f} ms | {fmt_time(g['floor_run_s'])} | {mfu_cells} | {pub} |"
        )
    return "\n".join(lines)


def cache_table(rows: list[dict], gpu: str) -> str:
    """The frozen-feature cache's predicted effect per card on one GPU: what it takes out of a step."""
    lines = [
        "| card | conv stack forward: TFLOP / step (share) | GB / step (share) | floor / step without -> with the cache "
        "| floor / run saved | exact under |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, c, g = r["step"], r["step"]["cached"], r["gpus"][gpu]
        saved = c["floor_s"][gpu]
        group = FAMILIES[r["family"]].layout.get("feat_extract_norm") == "group"
        lines.append(
            f"| {r['card']} | {c['flops'] / 1e12:.2f} ({c['flops'] / s['flops']:.0%}) | "
            f"{c['bytes'] / 1e9:.1f} ({c['bytes'] / s['bytes']:.0%}) | "
            f"{g['floor_step_s'] * 1e3:.1f} -> {(g['floor_step_s'] - saved) * 1e3:.1f} ms "
            f"({saved / g['floor_step_s']:.0%} less) | {fmt_time(saved * r['steps'])} | "
            f"{'train.padding_invariant (group norm)' if group else 'the recipe (layer norm)'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        prog="fastctc bench cost",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[1:]),
    )
    ap.add_argument("--cards", nargs="+", choices=list(CARDS), default=list(CARDS))
    ap.add_argument(
        "--mfu",
        nargs="+",
        type=float,
        default=[0.6, 0.4, 0.25],
        help="MFU levels (fractions of each table's bf16 peak) to predict at (default 0.6 0.4 0.25)",
    )
    ap.add_argument(
        "--memory-sizes",
        nargs="*",
        choices=list(memory.SIZES),
        default=list(memory.SIZES),
        help="XLS-R / MMS sizes of the memory table (default all; none: no table)",
    )
    ap.add_argument("--memory-batch", type=int, default=32, help="the memory table's batch (default 32)")
    ap.add_argument("--memory-seconds", type=float, default=5.0, help="its utterances' length in s (default 5)")
    args = ap.parse_args(argv)
    if any(not 0 < m <= 1 for m in args.mfu):
        raise SystemExit(f"--mfu: each level must be in (0, 1], got {args.mfu}")
    if args.memory_batch < 1 or not 0 < args.memory_seconds <= 60:
        raise SystemExit("--memory-batch must be >= 1 and --memory-seconds in (0, 60]")
    rows = [card_prediction(CARDS[c], args.mfu) for c in args.cards]
    for key, gpu in GPUS.items():
        print(f"\n{gpu.name} ({gpu.source}); predicted, not measured:\n")
        print(table(rows, key, args.mfu))
    print(f"\nThe frozen-feature cache (train.feature_cache) on the {GPUS['h100'].name}; predicted, not measured:\n")
    print(cache_table(rows, "h100"))
    print(
        "\nfloor: every op at its own roofline on that GPU, summed (eager: no fusion; launches and host not "
        "counted); an MFU time below it is reachable only with fusion (torch.compile). Run times: training "
        "steps only (no evaluation, no data loading); MFU = the fraction of that table's bf16 peak."
    )
    memory_rows = [
        memory.memory_row(name, which, args.memory_batch, args.memory_seconds)
        for name, which in memory.ROWS
        if name in args.memory_sizes
    ]
    if memory_rows:
        print(f"\n{memory.describe(args.memory_batch, args.memory_seconds)}\n")
        print(memory.table(memory_rows))
    report = {
        "bench": "cost",
        "gpus": {k: dataclasses.asdict(g) for k, g in GPUS.items()},
        "mfu": args.mfu,
        "results": rows,
        "memory": memory_rows,
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
