"""Measured effects of the options beyond the recipe: each feature alone and all together, rows x seeds.

    fastctc bench noisy_corpus --root ../shared/data/fsdd --out runs/noisy-fsdd
    fastctc bench features configs/mini-fsdd-scratch.toml --corpus runs/noisy-fsdd --out runs/features

Each row is one `fastctc train CONFIG --set ...` per seed, with the same steps (`--set` below, applied to
every row), then `fastctc eval RUN/best --data CONFIG` (the clean test) and `fastctc eval RUN/best --data
CORPUS/test.jsonl` (its noisy, reverberant copy, built by `fastctc bench noisy_corpus`). Training's
augmentation reads CORPUS/noise/train and CORPUS/rir/train, which share no file with the test copy.

Every run evaluates only at its end (train.eval_every = 0), so best/ is the final model, or with a weight
average whichever of the model and the average scored the lower clean-test WER at that step (the run's
final event holds both). The step-time cost is the run's own training seconds per step (final event's
train_s / steps) against the `none` row's: on a shared machine, label it as measured under load.

A finished run (its metrics.jsonl has a final event) is scored again but not retrained, so an
interrupted driver picks up where it stopped. Prints the table (mean ± sd over seeds, then each seed)
and ends with one JSON line; --json FILE writes the same.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Per row: the --set overrides. {corpus} is the noisy corpus folder. Values scaled to the mini card
# (0.5 M parameters, ~1,000 steps): channel masks 10 of 128 channels as fairseq's 64 of 768; the freeze
# a tenth of the run as base_10h's 10,000 of 20,000 is a half; EMA's horizon ~200 steps, icefall's period.
ROWS: dict[str, list[str]] = {
    "none": [],
    "speed": ["augment.speed_prob=1.0"],
    "noise": ["augment.noise_prob=0.5", "augment.noise_dir={corpus}/noise/train"],
    "reverb": ["augment.rir_prob=0.5", "augment.rir_dir={corpus}/rir/train"],
    "channel mask": ["model.mask_feature_prob=0.25", "model.mask_feature_length=10"],
    "fairseq schedule": ["optim.schedule=tri_stage", "train.freeze_finetune_steps=100"],
    "weight averaging (ema)": ["train.weight_average=ema", "train.ema_decay=0.995"],
}
ROWS["all together"] = [s for row in ROWS.values() for s in row]
# The same steps for every row: 3 epochs of the mini card (1,014 steps of batch 8), scored at the end only.
COMMON = ["train.epochs=3", "train.eval_every=0", "train.threads=1", "train.log_every=100"]


def slug(row: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in row).strip("-")


def row_sets(row: str, corpus: str, extra: list[str]) -> list[str]:
    return [*COMMON, *(s.format(corpus=corpus) for s in ROWS[row]), *extra]


def final_event(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return next((e for e in reversed(events) if e.get("event") == "final"), None)


def fastctc(args: list[str], log: Path) -> None:
    """`python -m fastctc ARGS` with one thread, its output appended to `log`; a failure names the log."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "a") as f:
        f.write(f"$ fastctc {' '.join(args)}\n")
        f.flush()
        done = subprocess.run([sys.executable, "-m", "fastctc", *args], stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"fastctc {args[0]} failed (exit {done.returncode}); its output is in {log}")


def run_one(config: str, corpus: str, out: Path, row: str, seed: int, extra: list[str], train_new: bool) -> dict | None:
    """Train (unless finished) and score one (row, seed): WERs, the final event's figures, the command.
    None for a run not finished when train_new is false (--no-train)."""
    run_dir = out / slug(row) / f"seed{seed}"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run_dir.parent / f"seed{seed}.log"
    sets = [*row_sets(row, corpus, extra), f"train.seed={seed}"]
    train = ["train", config, *(a for s in sets for a in ("--set", s)), "--out", str(run_dir)]
    if final_event(run_dir) is None:
        if not train_new:
            return None
        if run_dir.exists():
            raise RuntimeError(f"{run_dir} holds an unfinished run; remove it (or resume it by hand) and rerun")
        fastctc(train, log)
    final = final_event(run_dir)
    scores = {}
    for name, data in (("clean", config), ("noisy", f"{corpus}/test.jsonl")):
        json_file = run_dir / f"eval-{name}.json"
        if not json_file.is_file():  # scored once: a finished run's best/ no longer changes
            fastctc(["eval", str(run_dir / "best"), "--data", data, "--json", str(json_file)], log)
        scores[name] = json.loads(json_file.read_text())
    return {
        "row": row,
        "seed": seed,
        "clean_wer": scores["clean"]["wer"],
        "noisy_wer": scores["noisy"]["wer"],
        "step_s": final["train_s"] / final["step"],
        "steps": final["step"],
        "model_wer": final["wer"],
        "average_wer": final.get("average_wer"),
        "best_source": final.get("best_source", "model"),
        "command": "fastctc " + " ".join(train),
    }


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:  # no spread from one seed
        return f"{values[0]:.3f} (1 seed)"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(results: list[dict], rows: list[str]) -> list[str]:
    """The markdown table: per row, mean ± sd (then each seed) of both WERs, and the step time vs `none`."""
    by_row = {r: [x for x in results if x["row"] == r] for r in rows}
    base = by_row.get("none")
    base_step = statistics.fmean(x["step_s"] for x in base) if base else None
    lines = [
        "| feature | clean-test WER, mean ± sd (per seed) | noisy-test WER, mean ± sd (per seed) | step time (under load) |",
        "|---|---|---|---|",
    ]
    for row, runs in by_row.items():
        if not runs:
            continue
        cells = []
        for key in ("clean_wer", "noisy_wer"):
            values = [x[key] for x in runs]
            cells.append(f"{mean_sd(values)} ({', '.join(f'{v:.3f}' for v in values)})")
        step = statistics.fmean(x["step_s"] for x in runs)
        cost = f"{1000 * step:.1f} ms" + (
            f" ({100 * (step / base_step - 1):+.0f}%)" if base_step and row != "none" else ""
        )
        lines.append(f"| {row} | {cells[0]} | {cells[1]} | {cost} |")
    return lines


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="fastctc bench features",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[1:]),
    )
    ap.add_argument("config", help="the base config, e.g. configs/mini-fsdd-scratch.toml")
    ap.add_argument("--corpus", required=True, help="the folder `fastctc bench noisy_corpus` wrote")
    ap.add_argument("--out", required=True, help="runs go to OUT/ROW/seedN")
    ap.add_argument("--seeds", default="42,43,44", help="comma-separated (default 42,43,44)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of: {', '.join(ROWS)}")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once, one thread each (default 1)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="for every run")
    ap.add_argument("--no-train", action="store_true", help="train nothing: the table of the runs finished so far")
    ap.add_argument("--json", help="also write the results to this file")
    return ap


def main(argv: list[str] | None = None) -> dict:
    ap = build_parser()
    args = ap.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"--rows: unknown row {unknown[0]!r}; rows are: {', '.join(ROWS)}")
    if not (Path(args.corpus) / "test.jsonl").is_file():
        ap.error(f"--corpus: {args.corpus} has no test.jsonl; build it with `fastctc bench noisy_corpus`")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    jobs = [(row, seed) for seed in seeds for row in rows]  # seed by seed: every row has a seed early
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        scored = pool.map(lambda rs: run_one(args.config, args.corpus, out, *rs, args.set, not args.no_train), jobs)
        results = [r for r in scored if r is not None]
    if not results:
        ap.error(f"no finished run under {out} (--no-train)")
    steps = sorted({r["steps"] for r in results})
    print(f"== features: {len(results)} runs, rows x seeds {args.seeds}, {steps} steps, {args.config}")
    print("\n".join(table(results, rows)))
    summary = {"config": args.config, "corpus": args.corpus, "common": COMMON + args.set, "runs": results}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
