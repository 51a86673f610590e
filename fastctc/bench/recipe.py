"""`fastctc bench recipe CONFIG`: the Transformers recipe and `fastctc train`, from one checkpoint on one
corpus, one after the other on this machine, each in its own process with the same threads and loader
workers; then both final models scored by fastctc's evaluation on the same eval split, and the time
fastctc takes to reach the recipe's WER.

    fastctc bench recipe configs/mini-fsdd-scratch.toml [--seeds 42,43,44] [--plot curves.png]

The reference (fastctc/bench/recipe_reference.py) is the Trainer setup run_speech_recognition_ctc.py
builds; MAPPING below is how each CONFIG key reaches it (`--show-mapping` prints it). Per side: start-up
(listing, preprocessing, model load), training, evaluation and total wall time, train loss at the
logged steps, final WER/CER, peak memory; then the ratios, and one JSON line.

The recipe's own WER (its compute_metrics) is shown beside fastctc's scoring of its model but never
compared with: transformers 5's Trainer pads the argmax ids of eval batches with -100, which the
tokenizer decodes as "[UNK]", one wrong word on every utterance shorter than the longest (RECIPE.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import RECIPE_EXACT, ConfigError, RunConfig, load_config

# CONFIG key -> what the reference does with it. "config.X" is the script's config.update({X: ...}) before
# AutoModelForCTC.from_pretrained; "args.X" a TrainingArguments field; anything else is said in words.
# Both sides read every key; fastctc-only keys say how the reference does without them.
MAPPING: dict[str, str] = {
    "model.checkpoint": "AutoConfig / AutoFeatureExtractor / AutoModelForCTC.from_pretrained(model_name_or_path)",
    "model.hidden_dropout": "config.hidden_dropout",
    "model.attention_dropout": "config.attention_dropout",
    "model.activation_dropout": "config.activation_dropout",
    "model.feat_proj_dropout": "config.feat_proj_dropout",
    "model.final_dropout": "config.final_dropout",
    "model.layerdrop": "config.layerdrop",
    "model.mask_time_prob": "config.mask_time_prob",
    "model.mask_time_length": "config.mask_time_length",
    "model.mask_time_min_masks": "not a script flag: the checkpoint's config.json value (warned when CONFIG differs)",
    "model.mask_feature_prob": "config.mask_feature_prob",
    "model.mask_feature_length": "config.mask_feature_length",
    "model.mask_feature_min_masks, model.apply_spec_augment": "not script flags: the checkpoint's config.json values",
    "model.initializer_range": "not a script flag: the checkpoint's config.json value (the new head's init)",
    "model.conformer_conv_dropout, model.add_adapter": "not script flags: the checkpoint's config.json values (conformer_conv_dropout: wav2vec2-conformer and w2v-BERT; add_adapter: w2v-BERT)",
    "model.freeze_feature_encoder": "model.freeze_feature_encoder() when true",
    "model.gradient_checkpointing": "args.gradient_checkpointing",
    "model.bos_eos_tokens": "fastctc only: the reference's head always has <s>/</s> (--recipe-exact sets it true)",
    "model.attention_mask": "the checkpoint feature extractor's return_attention_mask (auto only)",
    "model.<sizes>": "the checkpoint's config.json on both sides (fastctc refuses size keys beside a checkpoint)",
    "data.corpus/root/train/eval": "the utterances fastctc's reader lists (the script reads a datasets split)",
    "data.chars_to_ignore, data.lowercase": "the transcripts as fastctc normalises them, + ' ' (remove_special_characters)",
    "data.max_duration_s": "max_duration_in_seconds (the length filter after prepare_dataset)",
    "data.do_normalize": "the checkpoint feature extractor's do_normalize (fastctc follows it too)",
    "data.sample_rate, data.resample": "feature_extractor.sampling_rate; audio resampled with soxr on both sides",
    "data.num_workers": "args.dataloader_num_workers",
    "data.batch_seconds, data.pad_lengths": "fastctc only: the reference batches train.batch_size by group_by_length",
    "data.sampler": "fastctc only: the reference always batches by group_by_length (--recipe-exact sets it)",
    "data.trailing_delimiter": "fastctc only: the reference always appends ' ' to targets (--recipe-exact sets it true)",
    "optim.lr": "args.learning_rate",
    "optim.betas": "args.adam_beta1, args.adam_beta2",
    "optim.eps": "args.adam_epsilon",
    "optim.weight_decay": "args.weight_decay (the Trainer skips biases and LayerNorm weights)",
    "optim.warmup_steps": "args.warmup_steps (args.lr_scheduler_type = linear)",
    "optim.max_grad_norm": "args.max_grad_norm",
    "optim.schedule, optim.phase_ratio, optim.init_lr_scale, optim.final_lr_scale": (
        "fastctc only: the reference's schedule is linear (tri_stage is fairseq's)"
    ),
    "train.epochs": "args.num_train_epochs",
    "train.max_steps": "args.max_steps when > 0 (the Trainer then ignores epochs; fastctc stops at whichever ends first)",
    "train.batch_size": "args.per_device_train_batch_size",
    "train.eval_batch_size": "args.per_device_eval_batch_size",
    "train.grad_accum": "args.gradient_accumulation_steps",
    "train.seed": "args.seed and set_seed (--seeds overrides it on both sides)",
    "train.log_every": "args.logging_steps",
    "train.eval_every": "args.eval_steps with args.eval_strategy = steps (0: no evaluation during training)",
    "train.checkpoint_every": "args.save_steps",
    "train.precision": "args.fp16 on CUDA for auto/fp16, args.bf16 for bf16; fp32 on CPU",
    "train.device": "args.use_cpu unless CUDA (--device)",
    "train.threads": "torch.set_num_threads on both sides (--threads overrides it)",
    "train.compile": "fastctc only: the recipe runs eager",
    "train.ctc_true_lengths": "fastctc only: the recipe takes padded CTC lengths without an attention mask",
    "train.padding_invariant": "fastctc only: the recipe's group-norm rows see their batch's padding as audio",
    "train.zero_infinity": "fastctc only: the reference's config.ctc_zero_infinity is false (--recipe-exact sets it false)",
    "train.random_streams": (
        "fastctc only: the reference draws from torch's and numpy's global generators (--recipe-exact sets recipe: "
        "fastctc draws the same)"
    ),
    "augment.*": "fastctc only: the recipe has no waveform augmentation (off unless a probability is set)",
    "train.freeze_finetune_steps": "fastctc only (fairseq's freeze_finetune_updates): the reference trains all from step 1",
    "train.weight_average, train.ema_decay, train.average_period": "fastctc only: the reference keeps no average",
    "train.feature_cache": "fastctc only: the reference runs the frozen conv stack at every step and evaluation",
    "model.train_only, model.adapter_language, model.target_language": (
        "fastctc only: the reference trains every parameter, so train_only = 'adapters' is refused (MMS's "
        "adapter recipe is another script, run_speech_recognition_ctc_adapter.py)"
    ),
}
# Set by the recipe whatever CONFIG says (the script's own choices and defaults).
REFERENCE_FIXED = (
    "args.train_sampling_strategy = group_by_length, args.length_column_name = input_length, "
    "args.optim = adamw_torch_fused, config.ctc_loss_reduction = mean, config.ctc_zero_infinity = false, "
    "vocabulary from train + eval transcripts with <s>/</s> added, "
    "args.report_to = none, args.disable_tqdm = true"
)

SIDES = ("reference", "fastctc")


class RecipeBenchError(RuntimeError):
    """A side failed or the setup is unusable; the message names the side, the log and the fix."""


def show_mapping(out=print) -> None:
    width = max(map(len, MAPPING))
    out(f"{'CONFIG key':<{width}}  reference (run_speech_recognition_ctc.py's Trainer setup)")
    for key, target in MAPPING.items():
        out(f"{key:<{width}}  {target}")
    out(f"{'(fixed)':<{width}}  {REFERENCE_FIXED}")


def _run_process(cmd: list[str], log_path: Path, threads: int) -> tuple[int, float, float, int]:
    """(exit code, launch time, wall seconds, peak RSS bytes of the process and its reaped children)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
    }
    with open(log_path, "w") as log:
        launch = time.time()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not the other side's
        wall = time.time() - launch
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, launch, wall, usage.ru_maxrss * 1024


def _tail(path: Path, n: int = 15) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "\n".join("    " + line for line in lines[-n:])


def score(
    model_dir: Path, config: str, overrides: list[str], batch_size: int, threads: int, device: str, log_path: Path
) -> dict:
    """fastctc's evaluation of a final model on CONFIG's eval split ({"wer", "cer", ...} or {"error"}), from
    the result file `fastctc eval --json` writes beside its log."""
    result_file = log_path.with_suffix(".json")
    cmd = [sys.executable, "-m", "fastctc", "eval", str(model_dir), "--data", config]
    cmd += ["--batch-size", str(batch_size), "--device", device, "--json", str(result_file)]
    cmd += [a for s in overrides for a in ("--set", s)]
    code, _, wall, _ = _run_process(cmd, log_path, threads)
    if code != 0 or not result_file.is_file():
        return {"error": f"fastctc eval exited {code}: {_tail(log_path, 1).strip() or 'no output'} (log {log_path})"}
    return {**json.loads(result_file.read_text()), "score_s": wall}


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_reference(config: str, overrides: list[str], out: Path, threads: int, device: str) -> dict:
    """The reference side in its own process; its result.json, with times from our launch."""
    log = out.parent / f"{out.name}.log"
    t0 = time.time()
    cmd = [
        sys.executable,
        "-m",
        "fastctc.bench.recipe_reference",
        config,
        "--out",
        str(out),
        "--threads",
        str(threads),
        "--device",
        device,
        "--t0",
        repr(t0),
    ] + [a for s in overrides for a in ("--set", s)]
    code, _, wall, rss = _run_process(cmd, log, threads)
    result_file = out / "result.json"
    if code != 0 or not result_file.is_file():
        raise RecipeBenchError(f"reference side exited {code}; its log {log} ends:\n{_tail(log)}")
    r = json.loads(result_file.read_text())
    t = r["times"]
    final = r["evals"][-1] if r["evals"] else {}
    return {
        "side": "reference",
        "wall_s": wall,
        "startup_s": t["startup"],
        "startup_parts": {
            "imports": t["imports"],
            "listing": t["listing"],
            "preprocessing": t["preprocessing"],
            "model_load": t["model_load"],
        },
        "train_s": t["train"],
        "eval_s": t["eval"],
        "compile_s": 0.0,
        "steps": r["steps"],
        "losses": r["losses"],
        "evals": [{"step": e["step"], "wer": e["wer"], "elapsed_s": e["elapsed_s"]} for e in r["evals"]],
        "own_wer": r["recipe_wer"],
        "own_cer": r["recipe_cer"],
        "final_loss": final.get("loss"),
        "peak_rss_bytes": max(rss, r.get("peak_rss_bytes") or 0),
        "cuda_peak_bytes": r.get("cuda_peak_bytes"),
        "model_dir": str(out),
        "log": str(log),
        "vocab_size": r["vocab_size"],
        "utterances": [r["train_utterances"], r["eval_utterances"]],
        "versions": r.get("versions", {}),
    }


def run_fastctc(config: str, overrides: list[str], out: Path, threads: int, device: str) -> dict:
    """`fastctc train` in its own process; its result from the run's metrics.jsonl: the `final` event (times,
    scores, peak memory), the train events (the loss curve) and the eval events (WER over time)."""
    log = out.parent / f"{out.name}.log"
    cmd = [sys.executable, "-m", "fastctc", "train", config, "--out", str(out)] + [
        a for s in overrides + [f"train.device={device}"] for a in ("--set", s)
    ]
    code, launch, wall, rss = _run_process(cmd, log, threads)
    events = _jsonl(out / "metrics.jsonl")
    final = next((e for e in events if e["event"] == "final"), None)
    if code != 0 or final is None:
        raise RecipeBenchError(f"fastctc side exited {code}; its log {log} ends:\n{_tail(log)}")
    # the final event's clock starts inside train(): the interpreter's start-up and imports come before it
    before_clock = final["time"] - final["total_s"] - launch
    return {
        "side": "fastctc",
        "wall_s": wall,
        "startup_s": final["startup_s"] + before_clock,
        "startup_parts": {},
        "train_s": final["train_s"],
        "eval_s": final["eval_s"],
        "compile_s": final["compile_s"],
        "steps": final["step"],
        "losses": [[e["step"], e["loss"]] for e in events if e["event"] == "train"],
        "evals": [
            {"step": e["step"], "wer": e["wer"], "elapsed_s": e["time"] - launch}
            for e in events
            if e["event"] == "eval"
        ],
        "own_wer": final["wer"],
        "own_cer": final["cer"],
        "final_loss": final["loss"],
        "peak_rss_bytes": rss,
        "cuda_peak_bytes": final["cuda_peak_bytes"],
        "model_dir": str(out / "model"),
        "log": str(log),
    }


def time_to_wer(evals: list[dict], target: float | None) -> float | None:
    """The first elapsed time at which an eval's WER <= target (None: never, or no target)."""
    if target is None:
        return None
    return next((e["elapsed_s"] for e in evals if e["wer"] is not None and e["wer"] <= target), None)


def _mean_spread(values: list) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.4g}"
    return f"{statistics.mean(v):.4g} ± {statistics.stdev(v):.2g} ({min(v):.4g}-{max(v):.4g})"


def _mean(values: list):
    v = [x for x in values if x is not None]
    return statistics.mean(v) if v else None


def _ratio(a, b):
    return a / b if a is not None and b else None


def report_seed(seed: int, runs: dict[str, dict], say=print) -> None:
    say(f"\nseed {seed}")
    say(
        f"  {'side':<10} {'start-up s':>10} {'train s':>9} {'eval s':>8} {'total s':>9} {'steps':>6} {'WER':>7} {'CER':>7}"
        f" {'own WER':>8} {'peak RSS MiB':>12}{'  CUDA peak MiB' if any(r.get('cuda_peak_bytes') for r in runs.values()) else ''}"
    )
    for side, r in runs.items():
        s = r["score"]
        wer_s = f"{s['wer']:.4f}" if "wer" in s else "n/a"
        cer_s = f"{s['cer']:.4f}" if "cer" in s else "n/a"
        cuda = f"  {r['cuda_peak_bytes'] / 2**20:>14.0f}" if r.get("cuda_peak_bytes") else ""
        say(
            f"  {side:<10} {r['startup_s']:>10.1f} {r['train_s']:>9.1f} {r['eval_s']:>8.1f} {r['wall_s']:>9.1f} "
            f"{r['steps']:>6} {wer_s:>7} {cer_s:>7} {r['own_wer']:>8.4f} {r['peak_rss_bytes'] / 2**20:>12.0f}{cuda}"
        )
        if r["startup_parts"]:
            say("  " + " " * 10 + " start-up: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["startup_parts"].items()))
        if "error" in s:
            say(f"  {side}: not scored: {s['error']}")
    if "reference" in runs and "fastctc" in runs:
        ref_loss, fc_loss = dict(runs["reference"]["losses"]), dict(runs["fastctc"]["losses"])
        common = sorted(set(ref_loss) & set(fc_loss))
        shown = common[:: max(1, len(common) // 10)][:10] + common[-1:] if common else []
        say(
            "  train loss at matching steps: "
            + ", ".join(f"{k}: {ref_loss[k]:.3f} / {fc_loss[k]:.3f}" for k in dict.fromkeys(shown))
            + "  (reference / fastctc)"
        )
        ref_wer = runs["reference"]["score"].get("wer")
        ttw = runs["fastctc"].get("time_to_recipe_wer_s")
        if ref_wer is None:
            say("  time to the recipe's WER: n/a (the reference's model was not scored by fastctc)")
        elif ref_wer >= 1.0:
            say(
                f"  time to the recipe's WER: not meaningful, the recipe's model did not learn (WER {ref_wer:.4f}); "
                "train longer (train.epochs)"
            )
        elif ttw is None:
            say(f"  time to the recipe's WER ({ref_wer:.4f}): fastctc never reached it at its evaluations")
        else:
            say(
                f"  time to the recipe's WER ({ref_wer:.4f}): fastctc {ttw:.1f} s vs the reference's total "
                f"{runs['reference']['wall_s']:.1f} s: {runs['reference']['wall_s'] / ttw:.2f}x"
            )


def same_distribution_agreement(n: int, draws: int = 20_000) -> float:
    """P(|mean_a - mean_b| <= max(sd_a, sd_b)) for two samples of n from one normal distribution (simulated,
    fixed seed): how often curve_overlap's per-step test holds when the two sides differ only by seed noise."""
    import numpy as np

    x = np.random.default_rng(0).standard_normal((draws, 2, n))
    m, sd = x.mean(-1), x.std(-1, ddof=1)
    return float(np.mean(np.abs(m[:, 0] - m[:, 1]) <= sd.max(-1)))


def curve_overlap(
    seeds: list[int], runs: dict[int, dict[str, dict]], parts: int = 4, slack: float = 0.20
) -> dict | None:
    """Do the two sides' train-loss curves overlap within seed noise (>= 2 seeds)?

    At each step that every run logged: the mean and sd over seeds of log(loss) per side. The step agrees when
    |mean_fastctc - mean_reference| <= max(sd_fastctc, sd_reference). Two sides that differ only by seed noise
    agree at a share `null` of steps (same_distribution_agreement); the curves overlap when each of `parts`
    equal stretches of the logged steps agrees at >= null - slack (slack ~2.5 binomial sd at 25 steps). Also:
    the share of fastctc's per-seed points inside the reference's min-max band, and the mean gap (fastctc -
    reference, in log loss; < 0: fastctc lower)."""
    import numpy as np

    if len(seeds) < 2 or not all({"reference", "fastctc"} <= set(runs[s]) for s in seeds):
        return None
    curves = {side: [dict(runs[s][side]["losses"]) for s in seeds] for side in SIDES}
    steps = sorted(set.intersection(*(set(c) for cs in curves.values() for c in cs)))
    if len(steps) < parts:
        return None
    logs = {side: np.log([[c[k] for k in steps] for c in cs]) for side, cs in curves.items()}  # (seeds, steps)
    r, f = logs["reference"], logs["fastctc"]
    gap = f.mean(0) - r.mean(0)  # (steps,)
    sd = np.maximum(r.std(0, ddof=1), f.std(0, ddof=1))  # (steps,)
    agree = np.abs(gap) <= sd
    in_band = ((f >= r.min(0)) & (f <= r.max(0))).mean(0)  # (steps,) share of fastctc's seeds in the band
    null = same_distribution_agreement(len(seeds))
    segments = [
        {
            "steps": [steps[sel[0]], steps[sel[-1]]],
            "points": len(sel),
            "agree": float(agree[sel].mean()),
            "in_band": float(in_band[sel].mean()),
            "gap": float(gap[sel].mean()),
            "sd": float(sd[sel].mean()),
        }
        for sel in np.array_split(np.arange(len(steps)), parts)
    ]
    return {
        "points": len(steps),
        "agree": float(agree.mean()),
        "in_band": float(in_band.mean()),
        "null_agree": null,
        "segments": segments,
        "overlap": all(s["agree"] >= null - slack for s in segments),
        "criterion": f"per logged step |mean gap| <= max seed sd of log loss; overlap = each {len(segments)}th of "
        f"the run agrees at >= {null:.2f} (one distribution, {len(seeds)} seeds each) - {slack:.2f}",
    }


def report_overlap(o: dict, say=print) -> None:
    say(
        f"\ntrain-loss curves, {o['points']} logged steps x seeds (log loss; gap = fastctc - reference): steps within "
        f"seed noise {o['agree']:.0%} (one distribution would give {o['null_agree']:.0%}), fastctc's points in the "
        f"reference's min-max band {o['in_band']:.0%}"
    )
    for s in o["segments"]:
        say(
            f"  steps {s['steps'][0]:>5}-{s['steps'][1]:<5} within noise {s['agree']:>4.0%} | in band {s['in_band']:>4.0%} "
            f"| mean gap {s['gap']:+.3f} (x{math.exp(s['gap']):.2f}) | seed sd {s['sd']:.3f}"
        )
    say(f"  {'overlap' if o['overlap'] else 'no overlap'} ({o['criterion']})")


OWN_WER_NOTE = (
    "own WER = what each side reports itself: fastctc's final evaluation; the recipe's compute_metrics, "
    "inflated in transformers 5 (argmax ids padded across eval batches with -100 decode as a trailing "
    "[UNK] word on every utterance shorter than the longest; RECIPE.md). WER/CER = fastctc eval of each "
    "side's final model on the same eval split: the comparable figures."
)


def summarise(config: str, device: str, threads: int, seeds: list[int], runs: dict[int, dict[str, dict]]) -> dict:
    sides = [s for s in SIDES if all(s in per for per in runs.values())]
    per_side = {}
    for side in sides:
        rs = [runs[seed][side] for seed in seeds]
        per_side[side] = {
            "wer": [r["score"].get("wer") for r in rs],
            "cer": [r["score"].get("cer") for r in rs],
            "own_wer": [r["own_wer"] for r in rs],
            "wer_mean": _mean([r["score"].get("wer") for r in rs]),
            "wer_sd": statistics.stdev([r["score"]["wer"] for r in rs])
            if len(rs) > 1 and all("wer" in r["score"] for r in rs)
            else None,
            "total_s": [r["wall_s"] for r in rs],
            "train_s": [r["train_s"] for r in rs],
            "startup_s": [r["startup_s"] for r in rs],
            "eval_s": [r["eval_s"] for r in rs],
            "steps": [r["steps"] for r in rs],
            "peak_rss_mib": max(r["peak_rss_bytes"] for r in rs) / 2**20,
            "cuda_peak_mib": max((r.get("cuda_peak_bytes") or 0) for r in rs) / 2**20 or None,
        }
    out = {"bench": "recipe", "config": config, "device": device, "threads": threads, "seeds": seeds, "sides": per_side}
    if len(sides) == 2:
        ref, fc = per_side["reference"], per_side["fastctc"]
        out["ratios"] = {k: _ratio(_mean(ref[k]), _mean(fc[k])) for k in ("total_s", "train_s", "startup_s", "eval_s")}
        ttw = [runs[s]["fastctc"].get("time_to_recipe_wer_s") for s in seeds]
        learned = all(w is not None and w < 1.0 for w in ref["wer"])  # WER 1 is reached by any untrained model
        out["time_to_recipe_wer"] = {
            "fastctc_s": ttw,
            "reference_total_s": ref["total_s"],
            "ratio": _ratio(_mean(ref["total_s"]), _mean(ttw)) if learned and all(t is not None for t in ttw) else None,
        }
    return out


def plot(
    path: Path, seeds: list[int], runs: dict[int, dict[str, dict]], title: str = "fastctc vs the Transformers recipe"
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    wer_ax = ax.twinx()
    colors = {"reference": "tab:orange", "fastctc": "tab:blue"}
    labelled = set()  # one legend entry per side and kind of mark, however many seeds
    for seed in seeds:
        for side, r in runs[seed].items():
            c = colors[side]

            def label(kind: str, side=side) -> str | None:
                if (side, kind) in labelled:
                    return None
                labelled.add((side, kind))
                return f"{side}: {kind}" + (f" ({len(seeds)} seeds)" if len(seeds) > 1 else "")

            if r["losses"]:
                steps, losses = zip(*r["losses"])
                ax.plot(steps, losses, color=c, alpha=0.8, linewidth=0.8, label=label("train loss"))
            pts = [(e["step"], e["wer"]) for e in r["evals"] if e["wer"] is not None]
            if pts:
                own = "recipe's own WER (inflated)" if side == "reference" else "WER"
                wer_ax.plot(*zip(*pts), "o:", color=c, alpha=0.6, label=label(own))
            if "wer" in r["score"]:
                wer_ax.plot(
                    [r["steps"]],
                    [r["score"]["wer"]],
                    "*",
                    color=c,
                    markersize=14,
                    label=label("final WER (fastctc eval)"),
                )
    for side, c in colors.items():  # each side's min-max band over seeds, at the steps every seed logged
        curves = [dict(runs[s][side]["losses"]) for s in seeds if side in runs[s] and runs[s][side]["losses"]]
        if len(curves) > 1:
            common = sorted(set.intersection(*(set(x) for x in curves)))
            ax.fill_between(
                common,
                [min(x[k] for x in curves) for k in common],
                [max(x[k] for x in curves) for k in common],
                color=c,
                alpha=0.15,
                linewidth=0,
                label=f"{side}: min-max over seeds",
            )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train loss (CTC, mean over target lengths)")
    ax.set_yscale("log")
    wer_ax.set_ylabel("WER")
    wer_ax.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    more = wer_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _warn_min_masks(cfg, say) -> None:
    config_file = Path(cfg.model.checkpoint) / "config.json"
    ckpt = json.loads(config_file.read_text()).get("mask_time_min_masks", 2)  # Wav2Vec2Config's default
    ours = cfg.model.encoder.get("mask_time_min_masks", ckpt)  # unset: the checkpoint's on both sides
    if ckpt != ours:
        say(
            f"fastctc bench recipe: warning: model.mask_time_min_masks={ours} but {config_file} "
            f"says {ckpt}; the recipe script has no flag for it, so the reference uses {ckpt} and the two sides mask differently"
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastctc bench recipe",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  fastctc bench recipe configs/mini-fsdd-scratch.toml --make-checkpoint --sizes configs/tiny-scratch.toml\n"
        "  fastctc bench recipe configs/mini-fsdd-finetune.toml --make-checkpoint --pretrain-on "
        "configs/mini-timit-pretrain.toml\n"
        "  fastctc bench recipe configs/mini-fsdd-scratch.toml --seeds 42,43,44 --plot recipe.png\n"
        "  fastctc bench recipe configs/wav2vec2-base-timit.toml --set model.checkpoint=/ckpt/wav2vec2-base "
        "--set data.root=/data/TIMIT --device cuda\n"
        "  fastctc bench recipe --show-mapping",
    )
    p.add_argument("config", nargs="?", help="a fastctc TOML config; both sides read it")
    p.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key (both sides)"
    )
    p.add_argument("--out", help="folder for both sides' runs (default runs/bench-recipe-CONFIG-TIMESTAMP)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for each side (default 2)")
    p.add_argument(
        "--seeds", default="", help="comma-separated seeds, each side run once per seed (default: CONFIG's train.seed)"
    )
    p.add_argument("--sides", default="reference,fastctc", help="which sides to run (default both)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--recipe-exact",
        action="store_true",
        help="train both sides with the recipe's conventions where fastctc's defaults depart from them: "
        + " ".join(f"--set {o}" for o in RECIPE_EXACT)
        + " (the reference ignores them but for the "
        "screen; a later --set overrides one)",
    )
    p.add_argument("--plot", metavar="PNG", help="draw both sides' loss curves and WER points in one PNG")
    p.add_argument(
        "--show-mapping", action="store_true", help="print how each CONFIG key reaches the reference and exit"
    )
    p.add_argument(
        "--make-checkpoint",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="write a random-init Transformers wav2vec2 checkpoint at the --sizes config's [model] sizes to DIR "
        "and exit; without DIR, write CONFIG's model.checkpoint when it does not exist yet, then run",
    )
    p.add_argument(
        "--sizes",
        metavar="TOML",
        help="a from-scratch config whose [model] sizes --make-checkpoint uses (e.g. configs/tiny-scratch.toml)",
    )
    p.add_argument(
        "--pretrain-on",
        metavar="TOML",
        help="instead of a random init, --make-checkpoint trains this from-scratch config with fastctc (its own "
        "corpus and [model] sizes) and writes the trained encoder, head and tokenizer removed, as "
        "Wav2Vec2ForPreTraining (e.g. configs/mini-timit-pretrain.toml)",
    )
    p.add_argument("--seed", type=int, default=0, help="--make-checkpoint's init and pretraining seed (default 0)")
    return p


def main(argv: list[str] | None = None) -> dict | None:
    args = build_parser().parse_args(argv)
    say = lambda *a: print(*a, flush=True)  # noqa: E731
    if args.show_mapping:
        show_mapping(say)
        return None
    if not args.config and not args.make_checkpoint:
        raise SystemExit("fastctc bench recipe: name a CONFIG (a fastctc TOML file), or --show-mapping")
    if args.make_checkpoint:
        make_checkpoint(args, args.make_checkpoint, say)
        return None
    if args.recipe_exact:  # first, so that a --set after them flips one back (one departure alone)
        args.set = [*RECIPE_EXACT, *args.set]
    plan = make_plan(args, say)
    runs = {seed: run_seed(plan, seed, say) for seed in plan.seeds}
    say("\n" + OWN_WER_NOTE)
    result = summarise(args.config, plan.device, args.threads, plan.seeds, runs)
    report_summary(result, plan.seeds, say)
    result["recipe_exact"] = args.recipe_exact
    result["curve_overlap"] = curve_overlap(plan.seeds, runs)
    if result["curve_overlap"] is not None:
        report_overlap(result["curve_overlap"], say)
    if args.plot:
        title = f"fastctc{' (recipe-exact)' if args.recipe_exact else ''} vs the Transformers recipe"
        plot(Path(args.plot), plan.seeds, runs, title=title)
        say(f"plot: {args.plot}")
    result["runs"] = run_records(runs)
    print(json.dumps(result), flush=True)
    return result


def _sizes(args):
    """The encoder sizes for --make-checkpoint: the [model] section of the from-scratch config --sizes names."""
    if not args.sizes:
        raise SystemExit(
            "fastctc bench recipe: --make-checkpoint needs --sizes TOML, a from-scratch config whose "
            "[model] gives the encoder's sizes, e.g. --sizes configs/tiny-scratch.toml"
        )
    try:
        return load_config(args.sizes, ["model.checkpoint="]).model
    except ConfigError as e:
        raise SystemExit(f"fastctc bench recipe: --sizes {args.sizes}: config error: {e}") from None


@dataclass
class Plan:
    """What one `bench recipe` invocation runs: CONFIG with its overrides, from one checkpoint, per seed and side."""

    config: str
    overrides: list[str]  # --set, with the resolved model.checkpoint last
    cfg: RunConfig
    checkpoint: str
    sides: list[str]
    seeds: list[int]
    device: str
    threads: int
    out: Path


def make_plan(args, say) -> Plan:
    """Check the arguments and the config (writing the checkpoint first when --make-checkpoint asks), then say
    what will run."""
    checkpoint = prepare_checkpoint(args, say)
    overrides = args.set + [f"model.checkpoint={checkpoint}"]
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        raise SystemExit(f"fastctc bench recipe: config error: {e}") from None
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not sides or any(s not in SIDES for s in sides):
        raise SystemExit(f"fastctc bench recipe: --sides takes {','.join(SIDES)} or one of them, got {args.sides!r}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()] or [cfg.train.seed]
    except ValueError:
        raise SystemExit(f"fastctc bench recipe: --seeds takes comma-separated integers, got {args.seeds!r}") from None
    device = _device(args.device)
    out = Path(args.out or f"runs/bench-recipe-{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    _warn_min_masks(cfg, say)
    say(
        f"fastctc bench recipe: {args.config} | checkpoint {checkpoint} | {device}, {args.threads} threads each, "
        f"{cfg.data.num_workers} loader workers | seeds {seeds} | sides {', '.join(sides)} | runs in {out}"
        + (f" | fastctc recipe-exact ({', '.join(RECIPE_EXACT)})" if args.recipe_exact else "")
    )
    return Plan(args.config, overrides, cfg, checkpoint, sides, seeds, device, args.threads, out)


def prepare_checkpoint(args, say) -> str:
    """CONFIG's model.checkpoint, resolved; written first (random init) when it does not exist and
    --make-checkpoint asks for it."""
    try:  # the folder may not exist yet: --make-checkpoint writes it, and make_plan then checks the config
        cfg = load_config(args.config, args.set, check_paths=False)
    except ConfigError as e:
        raise SystemExit(f"fastctc bench recipe: config error: {e}") from None
    _refuse_adapters_only(cfg)
    checkpoint = cfg.model.checkpoint
    if not checkpoint:
        raise SystemExit(
            "fastctc bench recipe: CONFIG has no model.checkpoint; both sides start from one "
            "(set it with --set model.checkpoint=DIR, or add --make-checkpoint to write a random-init one)"
        )
    if not (Path(checkpoint) / "config.json").is_file():
        if args.make_checkpoint is None:
            raise SystemExit(
                f"fastctc bench recipe: model.checkpoint {checkpoint!r} holds no config.json; point it at a "
                "Transformers-format checkpoint, or add --make-checkpoint --sizes SIZES.toml to write a "
                "random-init one there (or --make-checkpoint --pretrain-on PRETRAIN.toml: one fastctc trains)"
            )
        make_checkpoint(args, checkpoint, say)
    return str(Path(checkpoint).resolve())


def _refuse_adapters_only(cfg: RunConfig) -> None:
    """The reference is run_speech_recognition_ctc.py, which trains every parameter: against a fastctc side
    that trains only the adapters and the head, the comparison would measure two different recipes."""
    if cfg.model.train_only == "adapters":
        raise SystemExit(
            "fastctc bench recipe: model.train_only = 'adapters' trains only the MMS adapters and the CTC head, "
            "but the reference (run_speech_recognition_ctc.py) trains every parameter, so the two sides would "
            "not run the same recipe; compare with --set model.train_only=all, or train the adapters with "
            "`fastctc train` alone"
        )


def _device(name: str) -> str:
    import torch

    return name if name != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")


def make_checkpoint(args, target: str | Path, say) -> Path:
    """--make-checkpoint: a random init at the --sizes config's [model] sizes, or with --pretrain-on the
    encoder fastctc trains on that config's corpus."""
    if args.pretrain_on and args.sizes:
        raise SystemExit(
            "fastctc bench recipe: --pretrain-on trains at its own config's [model] sizes; drop --sizes (or --pretrain-on)"
        )
    if args.pretrain_on:
        return pretrain_checkpoint(args, Path(target), say)
    from .recipe_checkpoint import write_checkpoint

    path = write_checkpoint(_sizes(args), target, args.seed)
    say(f"wrote {path}: random init at the [model] sizes of {args.sizes} (seed {args.seed})")
    return path


def pretrain_checkpoint(args, target: Path, say) -> Path:
    """`fastctc train` on the --pretrain-on config (from scratch, its own corpus), in its own process beside
    `target` (TARGET.pretrain-run/), then its final model written to `target` as Wav2Vec2ForPreTraining."""
    from .recipe_checkpoint import write_pretrained_checkpoint

    try:
        cfg = load_config(args.pretrain_on, [])
    except ConfigError as e:
        raise SystemExit(f"fastctc bench recipe: --pretrain-on {args.pretrain_on}: config error: {e}") from None
    if cfg.model.checkpoint:
        raise SystemExit(
            f"fastctc bench recipe: --pretrain-on {args.pretrain_on} names model.checkpoint "
            f'{cfg.model.checkpoint!r}; it must train from scratch (model.checkpoint = "")'
        )
    run = target.parent / f"{target.name}.pretrain-run"
    run.parent.mkdir(parents=True, exist_ok=True)
    say(f"pretraining: fastctc train {args.pretrain_on} (seed {args.seed}; log {run}.log) ...")
    overrides = [f"train.seed={args.seed}", f"train.threads={args.threads}"]
    try:
        r = run_fastctc(args.pretrain_on, overrides, run, args.threads, _device(args.device))
    except RecipeBenchError as e:
        raise SystemExit(f"fastctc bench recipe: pretraining: {e}") from None
    note = {"pretrained_on": args.pretrain_on, "steps": r["steps"], "train_s": r["train_s"], "wer": r["own_wer"]}
    write_pretrained_checkpoint(r["model_dir"], target, args.seed, note)
    say(
        f"wrote {target}: the encoder of {r['model_dir']} ({r['steps']} steps in {r['train_s']:.0f} s, WER "
        f"{r['own_wer']:.3f} on its own eval split), CTC head and tokenizer removed, as Wav2Vec2ForPreTraining"
    )
    return target


def run_seed(plan: Plan, seed: int, say) -> dict[str, dict]:
    """Each side of one seed, one after the other, each scored by fastctc eval; then that seed's table."""
    overrides = plan.overrides + [f"train.seed={seed}", f"train.threads={plan.threads}"]
    runs: dict[str, dict] = {}
    for side in (s for s in SIDES if s in plan.sides):
        side_out = plan.out / f"seed{seed}" / side
        if side_out.exists() and any(side_out.iterdir()):
            raise SystemExit(f"fastctc bench recipe: {side_out} already holds a run; choose another --out")
        side_out.parent.mkdir(parents=True, exist_ok=True)
        say(f"seed {seed}: running {side} (log {side_out.parent / (side + '.log')}) ...")
        runner = run_reference if side == "reference" else run_fastctc
        try:
            r = runner(plan.config, overrides, side_out, plan.threads, plan.device)
        except RecipeBenchError as e:
            raise SystemExit(f"fastctc bench recipe: {e}") from None
        eval_log = side_out.parent / f"{side}.eval.log"
        batch = plan.cfg.train.eval_batch_size
        r["score"] = score(Path(r["model_dir"]), plan.config, overrides, batch, plan.threads, plan.device, eval_log)
        say(
            f"seed {seed}: {side} done in {r['wall_s']:.1f} s; fastctc eval of its model: "
            + (f"WER {r['score']['wer']:.4f}" if "wer" in r["score"] else r["score"]["error"])
        )
        runs[side] = r
    if "reference" in runs and "fastctc" in runs:
        target = runs["reference"]["score"].get("wer")
        runs["fastctc"]["time_to_recipe_wer_s"] = time_to_wer(runs["fastctc"]["evals"], target)
    report_seed(seed, runs, say)
    return runs


def report_summary(result: dict, seeds: list[int], say) -> None:
    """The spread over seeds and the reference / fastctc ratios."""
    if len(seeds) > 1:
        say("\nover seeds " + ", ".join(map(str, seeds)) + ": mean ± sd (min-max)")
        for side, s in result["sides"].items():
            say(
                f"  {side:<10} WER {_mean_spread(s['wer'])} | total {_mean_spread(s['total_s'])} s | "
                f"train {_mean_spread(s['train_s'])} s"
            )
    if "ratios" in result:
        r = result["ratios"]
        say("\nreference / fastctc: " + ", ".join(f"{k[:-2]} {v:.2f}x" for k, v in r.items() if v is not None))
        t = result["time_to_recipe_wer"]
        if t["ratio"] is not None:
            say(
                f"time to the recipe's WER: {t['ratio']:.2f}x (reference total {_mean(t['reference_total_s']):.1f} s, "
                f"fastctc {_mean(t['fastctc_s']):.1f} s)"
            )


def run_records(runs: dict[int, dict[str, dict]]) -> dict:
    """The per-run figures the JSON line keeps."""
    keep = ("wall_s", "startup_s", "train_s", "eval_s", "steps", "own_wer", "peak_rss_bytes", "model_dir")
    return {
        str(seed): {
            side: {k: r[k] for k in keep} | {"score": r["score"], "time_to_recipe_wer_s": r.get("time_to_recipe_wer_s")}
            for side, r in per.items()
        }
        for seed, per in runs.items()
    }


if __name__ == "__main__":
    main()
