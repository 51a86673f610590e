"""Lockstep: fastctc and the recipe's Trainer fed the same batches and the same initial head (a developer
diagnostic for `fastctc bench recipe --recipe-exact`; README, "The recipe's conventions as switches").

    python bench/recipe_lockstep.py fastctc OUT [--perturb EPS] [--order ORDER_JSON] --set ...   fastctc train on the mini card (recipe-exact),
        writing OUT/fastctc (the run), OUT/order.json (its batches, every epoch) and OUT/head.safetensors (its
        initial head); --perturb scales the initial head by (1 + EPS * N(0, 1)): the null, one system against itself;
        --order: batch in the order of another run's order.json (a `reference --own-order` run's Trainer, or a
        fastctc OUT's, e.g. `--order-only --set train.random_streams=own`) instead of its own
        With SpecAugment on (mask_time_prob > 0), every time mask fastctc draws goes to OUT/masks.safetensors;
        --order-only: write order.json and head.safetensors, no training (with the recipe-exact default
        train.random_streams = recipe, order.json is the Trainer's order for the seed)
    python bench/recipe_lockstep.py reference OUT --set ...   the recipe's Trainer (fastctc.bench.recipe_reference)
        fed OUT/order.json's batches through its own sampler slot and OUT/head.safetensors as its head, and
        OUT/masks.safetensors' masks, in order, in place of its own SpecAugment draws when that file exists
        (--own-masks: its own draws all the same; --own-order: its own sampler, whose indices go to the run's
        order.json; --decouple-numpy: its SpecAugment spans from a numpy stream reseeded apart from torch's);
        its logged losses go to OUT/reference[-own-order][-own-masks][-decoupled]/result.json
    python bench/recipe_lockstep.py compare OUT OTHER [SIDE]   per-half-epoch mean log-loss gap and correlation of
        OUT's fastctc run against OTHER's SIDE run (default: its reference, or its fastctc run when it has none;
        reference-own-masks: the --own-masks run)

    python bench/recipe_lockstep.py permutation SEED_DIR...   free-running bench recipe seed folders (each with
        fastctc/metrics.jsonl and reference/result.json): per quarter of the run, the two sides' mean log-loss gap
        against the gaps of every other split of the same curves into two equal groups
    python bench/recipe_lockstep.py selfnull SEED_DIR...   bench.recipe's overlap criterion for the two sides, and
        for each side against itself (its seed folders split in halves)
    python bench/recipe_lockstep.py late RUN_DIR:SIDE...   each run's second-half train loss (mean log of the 20-step
        mean losses past step 1,014; SIDE: fastctc, reference, reference-own-masks, ...)
    python bench/recipe_lockstep.py same A B   whether two runs drew the same: A's and B's order.json epoch by epoch,
        and their masks.safetensors mask by mask when both have one (a `fastctc` OUT, a `reference` OUT/reference-... folder)
    python bench/recipe_lockstep.py plot PNG SEED_DIR...   both sides' loss curves and WERs of the seed folders in one
        PNG (bench.recipe's plot; a folder's side.eval.json gives that side's final WER)

Use the same --set on both sides. With SpecAugment on, both sides then mask the same frames of the same batches:
what is left between them is the computation (masked_spec_embed's update included) and float rounding.
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
    if ORDER:  # another run's order.json (a Trainer's or a fastctc one), cut into this run's batches
        given = _flat_order(json.loads(Path(ORDER).read_text())["order"])
        size = cfg.train.batch_size
        cut = [[[o[i : i + size]] for i in range(0, len(o), size)] for o in given]
        if len(cut) < cfg.train.epochs:
            sys.exit(f"lockstep: {ORDER} holds {len(cut)} epochs, the run has {cfg.train.epochs}")
        run.sampler.epoch_batches = lambda epoch: cut[epoch]
    order = []
    for e in range(cfg.train.epochs):
        order.append([b for step in run.sampler.epoch_batches(e) for b in step])
    paths = [u.path for u in run.loader.loader.dataset.utterances]
    (out / "order.json").write_text(json.dumps({"order": order, "tokens": run.vocab.tokens, "paths": paths}))
    save_file(
        {"weight": run.model.lm_head.weight.detach().clone(), "bias": run.model.lm_head.bias.detach().clone()},
        str(out / "head.safetensors"),
    )
    if ORDER_ONLY:  # the batches only (e.g. the Trainer's order for a seed, for another run's --order)
        print(f"[lockstep] {out / 'order.json'}: {len(order)} epochs of batches, no training")
        return
    masks = _record_masks(cfg.train.random_streams == "recipe") if run.model.config.mask_time_prob > 0 else None
    with StopRequest().installed() as stop:
        print(loop(run, stop))
    run.log.close()
    if masks is not None:
        save_file({f"{i:06d}": m.to(torch.uint8) for i, m in enumerate(masks)}, str(out / "masks.safetensors"))
        print(f"[lockstep] {len(masks)} time masks written to {out / 'masks.safetensors'}")


def _record_calls(module, name: str, keep) -> list:
    """Wrap module.name so that keep(result) of every call is appended, in order, to the list returned."""
    drawn, draw = [], getattr(module, name)

    def recording(*args, **kwargs):
        result = draw(*args, **kwargs)
        drawn.append(keep(result))
        return result

    setattr(module, name, recording)
    return drawn


def _record_masks(recipe_streams: bool) -> list[torch.Tensor]:
    """Every time mask fastctc's training forwards draw, in order: its own (models/masking.py), or with
    train.random_streams = recipe the Trainer's that it replays on the host (train/recipe_streams.py)."""
    if recipe_streams:
        from fastctc.train import steps

        return _record_calls(steps, "recipe_masks", lambda m: m["mask_time_indices"].clone())
    from fastctc.models import masking

    return _record_calls(masking, "compute_span_mask", lambda m: m.detach().cpu().clone())


def _decouple_numpy(seed: int):
    """Reseed numpy's global RNG (the Trainer's SpecAugment draws) at the first mask draw of training.

    transformers.set_seed seeds torch's and numpy's global generators with the same integer, and both are
    MT19937 seeded alike: their raw streams are identical. The Trainer's batch order (torch.randperm) and
    its SpecAugment spans (numpy) then read the same numbers at different offsets. This draws the spans from
    an unrelated stream instead."""
    import numpy as np
    from transformers.models.wav2vec2 import modeling_wav2vec2

    draw, state = modeling_wav2vec2._compute_mask_indices, {"seeded": False}

    def decoupled(*args, **kwargs):
        if not state["seeded"]:
            np.random.seed(seed)
            state["seeded"] = True
        return draw(*args, **kwargs)

    modeling_wav2vec2._compute_mask_indices = decoupled


def _record_reference_masks() -> list:
    """Every time mask the Trainer's forwards draw (transformers' Wav2Vec2 span sampler), in order."""
    from transformers.models.wav2vec2 import modeling_wav2vec2

    return _record_calls(modeling_wav2vec2, "_compute_mask_indices", lambda m: m.copy())


def _replay_masks(path: Path):
    """Make transformers' Wav2Vec2 draw path hand out path's masks, in order, instead of its own draws."""
    import numpy as np
    from transformers.models.wav2vec2 import modeling_wav2vec2

    masks = load_file(str(path))
    queue = [masks[k].bool().numpy() for k in sorted(masks)]
    state = {"next": 0}

    def replay(shape, mask_prob, mask_length, attention_mask=None, min_masks=0):
        i = state["next"]
        if i >= len(queue):
            raise RuntimeError(f"lockstep: the reference asked for mask {i + 1}, fastctc drew {len(queue)}")
        # fastctc pads a batch to whole frames of samples, the Trainer's collator to the longest row: a batch
        # may have a frame more on fastctc's side. It is padding in every row (a span-less row's dummy may fall
        # there, as the Trainer's falls on its own last padded frame), so dropping it changes no output
        mask, (rows, frames) = queue[i], shape
        if mask.shape[0] != rows or mask.shape[1] < frames:
            raise RuntimeError(f"lockstep: mask {i} is {mask.shape}, the reference's batch is {tuple(shape)}")
        state["next"] = i + 1
        return np.array(mask[:, :frames])

    modeling_wav2vec2._compute_mask_indices = replay
    print(f"[lockstep] replaying {len(queue)} fastctc time masks", flush=True)
    return state, len(queue)


class FixedSampler(torch.utils.data.Sampler):
    """Each epoch's indices of `order` (epochs of indices), in order."""

    def __init__(self, order):
        self.order, self.epoch = order, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.order[0])

    def __iter__(self):
        e = self.epoch
        self.epoch += 1
        print(f"[lockstep] epoch {e} first indices {self.order[e][:4]}", flush=True)
        return iter(self.order[e])


class RecordingSampler(torch.utils.data.Sampler):
    """Another sampler's indices, passed through and written to `path` per epoch ({"order": [[...], ...]})."""

    def __init__(self, inner, path: Path):
        self.inner, self.path, self.drawn = inner, path, []

    def set_epoch(self, epoch):
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __len__(self):
        return len(self.inner)

    def __iter__(self):
        self.drawn.append([int(i) for i in self.inner])
        self.path.write_text(json.dumps({"order": self.drawn}))
        return iter(self.drawn[-1])


def reference_side(out: Path, sets: list[str]):
    from fastctc.bench import recipe_reference as rr
    from fastctc.config import RECIPE_EXACT, load_config, resolve_encoder
    from fastctc.models.hf_weights import read_encoder_config

    cfg = load_config(CONFIG, list(RECIPE_EXACT) + sets)
    import transformers

    torch.set_num_threads(1)
    transformers.set_seed(cfg.train.seed)
    ref = out / ("reference" + "-own-order" * OWN_ORDER + "-own-masks" * OWN_MASKS + "-decoupled" * DECOUPLE)
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
    # the Trainer's own sampler with its indices kept per epoch, or fastctc's batches
    sampler = (
        RecordingSampler(trainer._get_train_sampler(), ref / "order.json")
        if OWN_ORDER
        else FixedSampler(_flat_order(plan["order"]))
    )
    trainer._get_train_sampler = lambda *a, **k: sampler
    masks = out / "masks.safetensors"
    replayed = _replay_masks(masks) if masks.exists() and not OWN_MASKS else None
    if DECOUPLE:
        _decouple_numpy(cfg.train.seed + 1_000_003)
    drawn = _record_reference_masks() if OWN_MASKS else None
    trainer.train()
    if drawn:
        save_file(
            {f"{i:06d}": torch.from_numpy(m).to(torch.uint8) for i, m in enumerate(drawn)},
            str(ref / "masks.safetensors"),
        )
        print(f"[lockstep] the reference's {len(drawn)} own time masks written to {ref / 'masks.safetensors'}")
    if replayed is not None:
        state, total = replayed
        print(f"[lockstep] the reference used {state['next']} of fastctc's {total} masks", flush=True)
    (ref / "result.json").write_text(json.dumps({"losses": log["losses"], "evals": log["evals"]}))


def _losses(run_dir: Path, side: str) -> dict[int, float]:
    if side == "fastctc":
        events = map(json.loads, open(run_dir / "fastctc" / "metrics.jsonl"))
        return {e["step"]: e["loss"] for e in events if e["event"] == "train"}
    return {int(s): float(v) for s, v in json.loads((run_dir / side / "result.json").read_text())["losses"]}


def compare(out: Path, other: Path, side: str | None = None, window: int = 169):
    import numpy as np

    a = _losses(out, "fastctc")
    side = side or ("reference" if (other / "reference" / "result.json").exists() else "fastctc")
    b = _losses(other, side)
    steps = sorted(set(a) & set(b))
    print(f"{out}/fastctc against {other}/{side}: {len(steps)} common steps")
    for i in range(0, len(steps), window):
        w = steps[i : i + window]
        la, lb = np.log([a[k] for k in w]), np.log([b[k] for k in w])
        corr = np.corrcoef(la, lb)[0, 1] if len(w) > 2 else float("nan")
        print(f"steps {w[0]:>5}-{w[-1]:<5} mean log-loss gap {np.mean(la - lb):+.3f}  correlation {corr:.3f}")


def _flat_order(order: list) -> list[list[int]]:
    """Each epoch's utterance indices in order from an order.json's "order": fastctc's (epochs of batches)
    or a RecordingSampler's (epochs of indices)."""
    return [[i for b in epoch for i in b] if epoch and isinstance(epoch[0], list) else epoch for epoch in order]


def same(a: Path, b: Path):
    """Print how many epochs of order and how many time masks two runs share. A mask drawn over fewer frames
    (the Trainer draws over the longest row's, fastctc pads to its own frame count) is equal when the common
    frames are equal and the rest is unmasked."""
    oa, ob = (_flat_order(json.loads((d / "order.json").read_text())["order"]) for d in (a, b))
    equal = [x == y for x, y in zip(oa, ob)]
    first = equal.index(False) if False in equal else None
    print(
        f"order: {sum(equal)} of {min(len(oa), len(ob))} common epochs equal ({len(oa)} and {len(ob)} epochs)"
        + ("" if first is None else f"; the first that differs: epoch {first}")
    )
    if not ((a / "masks.safetensors").exists() and (b / "masks.safetensors").exists()):
        print("masks: not both recorded")
        return
    ma, mb = load_file(str(a / "masks.safetensors")), load_file(str(b / "masks.safetensors"))
    ka, kb = sorted(ma), sorted(mb)
    n, first = 0, None
    for i, (x, y) in enumerate(zip((ma[k].bool() for k in ka), (mb[k].bool() for k in kb))):
        t = min(x.shape[-1], y.shape[-1])
        ok = x.shape[:-1] == y.shape[:-1] and torch.equal(x[..., :t], y[..., :t])
        ok = ok and not x[..., t:].any() and not y[..., t:].any()
        n += ok
        if not ok and first is None:
            first = i
    print(
        f"masks: {n} of {min(len(ka), len(kb))} equal ({len(ka)} and {len(kb)} drawn)"
        + ("" if first is None else f"; the first that differs: mask {first}")
    )


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
        n = min(len(v) for v, _ in sides.values())
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


def late(runs: list[str], every: int = 20, after: int = 1014):
    """Second-half train loss of each RUN_DIR:SIDE: the mean log of the `every`-step mean losses past step `after`
    (a run logged at every step is first averaged over windows of `every` steps, as the free-running runs log)."""
    import numpy as np

    for arg in runs:
        d, side = arg.rsplit(":", 1)
        losses = _losses(Path(d), side)
        ends = [k for k in range(every, max(losses) + 1, every) if k > after]
        if all(k in losses for k in range(1, every + 1)):  # every step logged: average each window
            means = [np.mean([losses[j] for j in range(k - every + 1, k + 1)]) for k in ends]
        else:
            means = [losses[k] for k in ends if k in losses]
        print(f"{arg:60} second-half mean log loss {np.mean(np.log(means)):.3f} ({len(means)} windows)")


def plot_dirs(png: Path, dirs: list[Path]):
    """bench.recipe's plot of seed folders written by separate `fastctc bench recipe` runs."""
    from fastctc.bench.recipe import plot

    def side_run(d: Path, side: str) -> dict:
        if side == "fastctc":
            events = [json.loads(x) for x in open(d / "fastctc" / "metrics.jsonl")]
            evals = [{"step": e["step"], "wer": e.get("wer")} for e in events if e["event"] == "eval"]
            losses = [(e["step"], e["loss"]) for e in events if e["event"] == "train"]
        else:
            result = json.loads((d / side / "result.json").read_text())
            evals, losses = result["evals"], [(int(k), float(v)) for k, v in result["losses"]]
        scored = d / f"{side}.eval.json"
        return {
            "losses": losses,
            "evals": evals,
            "steps": losses[-1][0],
            "score": json.loads(scored.read_text()) if scored.exists() else {},
        }

    name = lambda i, d: int(d.name[4:]) if d.name[4:].isdigit() else i  # noqa: E731  seedN -> N
    runs = {name(i, d): {side: side_run(d, side) for side in ("reference", "fastctc")} for i, d in enumerate(dirs)}
    plot(png, list(runs), runs, title=f"fastctc (recipe-exact) vs the Transformers recipe, {len(dirs)} seeds")
    print(f"plot: {png}")


PERTURB, OWN_MASKS, OWN_ORDER, ORDER, DECOUPLE = 0.0, False, False, None, False  # set from the flags below


def _flag(name: str) -> bool:
    """Take `name` out of sys.argv; whether it was there."""
    if name in sys.argv:
        sys.argv.remove(name)
        return True
    return False


def _option(name: str) -> str | None:
    """Take `name VALUE` out of sys.argv; VALUE, or None."""
    if name not in sys.argv:
        return None
    i = sys.argv.index(name)
    value = sys.argv[i + 1]
    del sys.argv[i : i + 2]
    return value


if __name__ == "__main__":
    DECOUPLE = _flag("--decouple-numpy")  # the reference's spans from a numpy stream unrelated to torch's
    ORDER = _option("--order")  # fastctc batches in the order of this file (a --own-order run's order.json)
    OWN_ORDER = _flag("--own-order")  # the reference batches with its own sampler (kept in its order.json)
    OWN_MASKS = _flag("--own-masks")  # the reference draws its own SpecAugment masks (only the batches shared)
    PERTURB = float(_option("--perturb") or 0.0)
    ORDER_ONLY = _flag("--order-only")  # fastctc: write order.json (and head.safetensors), then stop
    side, out, sets = sys.argv[1], Path(sys.argv[2]), [a for a in sys.argv[3:] if a != "--set"]
    if side in ("fastctc", "reference"):
        out.mkdir(parents=True, exist_ok=True)
    if side == "compare":
        compare(out, Path(sets[0]), *sets[1:2])
    elif side == "selfnull":
        selfnull([out, *map(Path, sets)])
    elif side == "late":
        late([sys.argv[2], *sys.argv[3:]])
    elif side == "same":
        same(out, Path(sets[0]))
    elif side == "plot":
        plot_dirs(out, list(map(Path, sets)))
    elif side == "permutation":
        permutation([out, *map(Path, sets)])
    else:
        (fastctc_side if side == "fastctc" else reference_side)(out, sets)
