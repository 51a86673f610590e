"""Lockstep: fastctc and the recipe's Trainer fed the same batches and the same initial head (a developer
diagnostic for `fastctc bench recipe --recipe-exact`; README, "The recipe's conventions as switches").

    python bench/recipe_lockstep.py fastctc OUT [--perturb EPS] --set ...   fastctc train on the mini card (recipe-exact),
        writing OUT/fastctc (the run), OUT/order.json (its batches, every epoch) and OUT/head.safetensors (its
        initial head); --perturb scales the initial head by (1 + EPS * N(0, 1)): the null, one system against itself
    python bench/recipe_lockstep.py reference OUT --set ...   the recipe's Trainer (fastctc.bench.recipe_reference)
        fed OUT/order.json's batches through its own sampler slot and OUT/head.safetensors as its head;
        its logged losses go to OUT/reference/result.json
    python bench/recipe_lockstep.py compare OUT OTHER   per-epoch mean log-loss gap and correlation of OUT's fastctc
        run against OTHER's reference run (or OTHER's fastctc run when OTHER has no reference)

    python bench/recipe_lockstep.py permutation SEED_DIR...   free-running bench recipe seed folders (each with
        fastctc/metrics.jsonl and reference/result.json): per quarter of the run, the two sides' mean log-loss gap
        against the gaps of every other split of the same curves into two equal groups
    python bench/recipe_lockstep.py selfnull SEED_DIR...   bench.recipe's overlap criterion for the two sides, and
        for each side against itself (its seed folders split in halves)

Use the same --set on both sides; with SpecAugment on (mask_time_prob > 0) the two draw different masks.
"""

import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CONFIG = "configs/mini-fsdd-scratch.toml"


def fastctc_side(out: Path, sets: list[str]):
    from fastctc.config import RECIPE_EXACT, load_config
    from fastctc.train.loop import StopRequest, loop
    from fastctc.train.run import prepare_run

    cfg = load_config(CONFIG, list(RECIPE_EXACT) + sets)
    torch.set_num_threads(1)
    run = prepare_run(cfg, out / "fastctc")
    if PERTURB:  # the null: the same run but for a last-bit change of the initial head
        with torch.no_grad():
            g = torch.Generator().manual_seed(1)
            w = run.model.lm_head.weight
            w.mul_(1 + PERTURB * torch.randn(w.shape, generator=g))
    order = []
    for e in range(cfg.train.epochs):
        order.append([b for step in run.sampler.epoch_batches(e) for b in step])
    paths = [u.path for u in run.loader.loader.dataset.utterances]
    (out / "order.json").write_text(json.dumps({"order": order, "tokens": run.vocab.tokens, "paths": paths}))
    save_file(
        {"weight": run.model.lm_head.weight.detach().clone(), "bias": run.model.lm_head.bias.detach().clone()},
        str(out / "head.safetensors"),
    )
    with StopRequest().installed() as stop:
        print(loop(run, stop))
    run.log.close()


class FixedSampler(torch.utils.data.Sampler):
    def __init__(self, order):
        self.order, self.epoch = order, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return sum(len(b) for b in self.order[0])

    def __iter__(self):
        e = self.epoch
        self.epoch += 1
        print(f"[lockstep] epoch {e} first batch {self.order[e][0][:4]}", flush=True)
        return iter([i for b in self.order[e] for i in b])


def reference_side(out: Path, sets: list[str]):
    from fastctc.bench import recipe_reference as rr
    from fastctc.config import RECIPE_EXACT, load_config, resolve_encoder
    from fastctc.models.hf_weights import read_encoder_config

    cfg = load_config(CONFIG, list(RECIPE_EXACT) + sets)
    import transformers

    torch.set_num_threads(1)
    transformers.set_seed(cfg.train.seed)
    ref = out / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    plan = json.loads((out / "order.json").read_text())
    encoder = resolve_encoder(cfg.model, read_encoder_config(cfg.model.checkpoint))
    raw = rr.list_corpus(cfg, encoder)
    if plan["paths"]:
        assert list(raw["train"]["path"]) == plan["paths"], "utterance lists differ"
    tokenizer, fe, model = rr.build_model(cfg, encoder, raw, ref)
    vocab = tokenizer.get_vocab()
    ids = [vocab[t] for t in plan["tokens"]]
    print("[lockstep] token ids", ids, "head rows", model.lm_head.weight.shape[0], flush=True)
    head = load_file(str(out / "head.safetensors"))
    with torch.no_grad():
        model.lm_head.weight[ids] = head["weight"]
        model.lm_head.bias[ids] = head["bias"]
        assert len(ids) == model.lm_head.weight.shape[0]
    vec = rr.prepare_datasets(cfg, raw, fe, tokenizer)
    log = {"losses": [], "evals": []}
    trainer = rr.make_trainer(cfg, ref, "cpu", model, tokenizer, fe, vec, log, time.time())
    sampler = FixedSampler(plan["order"])
    trainer._get_train_sampler = lambda *a, **k: sampler
    trainer.train()
    (ref / "result.json").write_text(json.dumps({"losses": log["losses"], "evals": log["evals"]}))


def _losses(run_dir: Path, side: str) -> dict[int, float]:
    if side == "fastctc":
        events = map(json.loads, open(run_dir / "fastctc" / "metrics.jsonl"))
        return {e["step"]: e["loss"] for e in events if e["event"] == "train"}
    return {int(s): float(v) for s, v in json.loads((run_dir / "reference" / "result.json").read_text())["losses"]}


def compare(out: Path, other: Path, window: int = 169):
    import numpy as np

    a = _losses(out, "fastctc")
    side = "reference" if (other / "reference" / "result.json").exists() else "fastctc"
    b = _losses(other, side)
    steps = sorted(set(a) & set(b))
    print(f"{out}/fastctc against {other}/{side}: {len(steps)} common steps")
    for i in range(0, len(steps), window):
        w = steps[i : i + window]
        la, lb = np.log([a[k] for k in w]), np.log([b[k] for k in w])
        corr = np.corrcoef(la, lb)[0, 1] if len(w) > 2 else float("nan")
        print(f"steps {w[0]:>5}-{w[-1]:<5} mean log-loss gap {np.mean(la - lb):+.3f}  correlation {corr:.3f}")


def permutation(dirs: list[Path]):
    import itertools

    import numpy as np

    curves = [_losses(d, "fastctc") for d in dirs] + [_losses(d, "reference") for d in dirs]
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    logs = np.log([[c[k] for k in steps] for c in curves])  # (2n, steps): fastctc's seeds, then the recipe's
    n, quarters = len(dirs), np.array_split(np.arange(len(steps)), 4)

    def gaps(group):
        rest = [i for i in range(2 * n) if i not in group]
        gap = logs[list(group)].mean(0) - logs[rest].mean(0)
        return np.array([gap[q].mean() for q in quarters])

    observed = gaps(range(n))
    mixed = np.array(
        [gaps(g) for g in itertools.combinations(range(2 * n), n) if set(g) not in ({*range(n)}, {*range(n, 2 * n)})]
    )
    for i, q in enumerate(quarters):
        share = np.mean(np.abs(mixed[:, i]) >= abs(observed[i]))
        print(
            f"steps {steps[q[0]]:>5}-{steps[q[-1]]:<5} gap {observed[i]:+.3f}; splits with |gap| >= it: {share:.2f} of {len(mixed)}"
        )


def selfnull(dirs: list[Path]):
    """bench.recipe's curve_overlap of the two sides over the seed folders, beside the same criterion applied to
    each system against itself (its seeds split in two halves): how often the per-step criterion passes when
    nothing but the seed differs."""
    from fastctc.bench.recipe import curve_overlap

    def runs(sides: dict[str, list[Path]]):
        n = min(len(v) for v in sides.values())
        return list(range(n)), {
            i: {s: {"losses": list(_losses(v[i], kind).items())} for s, (v, kind) in sides.items()} for i in range(n)
        }

    if len(dirs) < 4:
        sys.exit("selfnull: needs >= 4 seed folders (2 per half)")
    h = len(dirs) // 2
    cases = {
        "fastctc vs recipe": {"fastctc": (dirs, "fastctc"), "reference": (dirs, "reference")},
        "fastctc vs fastctc (seeds split)": {
            "fastctc": (dirs[:h], "fastctc"),
            "reference": (dirs[h : 2 * h], "fastctc"),
        },
        "recipe vs recipe (seeds split)": {
            "fastctc": (dirs[:h], "reference"),
            "reference": (dirs[h : 2 * h], "reference"),
        },
    }
    for name, sides in cases.items():
        seeds, r = runs(sides)
        o = curve_overlap(seeds, r)
        quarters = " | ".join(f"{q['agree']:.0%} gap {q['gap']:+.3f} sd {q['sd']:.3f}" for q in o["segments"])
        print(f"{name:34} ({len(seeds)} seeds each): {quarters} -> {'overlap' if o['overlap'] else 'no overlap'}")


PERTURB = 0.0
if __name__ == "__main__":
    if "--perturb" in sys.argv:
        i = sys.argv.index("--perturb")
        PERTURB = float(sys.argv[i + 1])
        del sys.argv[i : i + 2]
    side, out, sets = sys.argv[1], Path(sys.argv[2]), [a for a in sys.argv[3:] if a != "--set"]
    if side in ("fastctc", "reference"):
        out.mkdir(parents=True, exist_ok=True)
    if side == "compare":
        compare(out, Path(sets[0]))
    elif side == "selfnull":
        selfnull([out, *map(Path, sets)])
    elif side == "permutation":
        permutation([out, *map(Path, sets)])
    else:
        (fastctc_side if side == "fastctc" else reference_side)(out, sets)
