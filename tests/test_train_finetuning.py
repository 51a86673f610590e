"""fairseq's and icefall's fine-tuning options: the tri-stage schedule against fairseq's TriStageLRSchedule
re-enacted, the frozen encoder held bit-exactly, the weight average against its formulas in float64,
and best/ taking whichever of the model and the average scores better."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fastctc.config import OptimConfig, load_config
from fastctc.train import loop as loop_module
from fastctc.train.average import WeightAverage
from fastctc.train.optim import build_optimizer, build_schedule
from fastctc.train.progress import Window
from fastctc.train.run import prepare_run
from fastctc.train.steps import forward_backward, optimizer_step, steps

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.toml"
TINY = [
    "model.hidden_size=32",
    "model.num_attention_heads=2",
    "model.intermediate_size=64",
    "model.num_hidden_layers=2",
    "model.conv_dim=[16, 16, 16, 16, 16, 16, 16]",
    "model.num_conv_pos_embedding_groups=2",
    "model.mask_time_prob=0.2",
    "model.mask_time_length=2",
    "model.hidden_dropout=0.1",
    "data.synthetic_train_size=16",
    "data.synthetic_eval_size=4",
    "train.batch_size=4",
    "train.threads=1",
    "train.eval_every=0",
    "train.checkpoint_every=0",
    "train.compile=off",
    "train.device=cpu",
    "train.precision=fp32",
    "optim.warmup_steps=0",  # the first step moves the weights
]


class FairseqTriStage:
    """fairseq's TriStageLRSchedule as its source runs it (lr units, stage decided per update), for
    phase_ratio given: the lr after `num_updates` updates (the one the next update uses)."""

    def __init__(self, lr, max_update, phase_ratio, init_lr_scale, final_lr_scale):
        self.peak_lr, self.init_lr, self.final_lr = lr, init_lr_scale * lr, final_lr_scale * lr
        self.warmup_steps, self.hold_steps, self.decay_steps = (int(max_update * r) for r in phase_ratio)
        self.warmup_rate = (self.peak_lr - self.init_lr) / self.warmup_steps if self.warmup_steps else 0
        self.decay_factor = -math.log(final_lr_scale) / self.decay_steps

    def step_update(self, num_updates):
        if num_updates < self.warmup_steps:
            return self.init_lr + self.warmup_rate * num_updates
        offset = self.warmup_steps
        if num_updates < offset + self.hold_steps:
            return self.peak_lr
        offset += self.hold_steps
        if num_updates <= offset + self.decay_steps:
            return self.peak_lr * math.exp(-self.decay_factor * (num_updates - offset))
        return self.final_lr


@pytest.mark.parametrize(
    "total, ratio, init, final",
    [
        (97, [0.1, 0.4, 0.5], 0.01, 0.05),  # fairseq's base_* configs, an odd step count
        (50, [0.0, 0.3, 0.7], 0.0, 0.01),  # no warmup, from lr 0
        (41, [0.25, 0.0, 0.75], 0.5, 0.2),  # no hold
    ],
)
def test_tri_stage_lr_is_fairseqs_at_every_step(total, ratio, init, final):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))  # two parameter groups
    cfg = OptimConfig(lr=3e-4, schedule="tri_stage", phase_ratio=ratio, init_lr_scale=init, final_lr_scale=final)
    optimizer = build_optimizer(model, cfg, torch.device("cpu"))
    schedule = build_schedule(optimizer, cfg, total)
    fairseq = FairseqTriStage(cfg.lr, total, ratio, init, final)
    seen = set()
    for done in range(total + 3):  # past the end: fairseq holds final_lr
        lrs = {group["lr"] for group in optimizer.param_groups}
        assert len(lrs) == 1
        expected = fairseq.step_update(done)
        assert lrs.pop() == pytest.approx(expected, rel=1e-12, abs=1e-18), done
        seen.add(round(expected / cfg.lr, 9))
        optimizer.step()
        schedule.step()
    assert {1.0, round(final, 9)} <= seen  # the hold (or the warmup's end) and the final stage were reached
    assert (round(init, 9) in seen) == (int(total * ratio[0]) > 0)  # the warmup starts at init_lr_scale


def test_the_default_schedule_is_the_recipes_linear_one():
    cfg = load_config(DEMO)
    assert cfg.optim.schedule == "linear" and cfg.train.freeze_finetune_steps == 0
    assert cfg.train.weight_average == "off"


def _step(run):
    micro_batches = next(iter(steps(run)))
    loss_sum = forward_backward(run, micro_batches)
    grad_norm, skipped = optimizer_step(run)
    run.state.step += 1
    assert math.isfinite(float(loss_sum)) and not bool(skipped)


def test_the_frozen_encoder_and_its_optimizer_state_are_untouched_until_the_freeze_ends(tmp_path):
    freeze = 3
    cfg = load_config(DEMO, TINY + [f"train.freeze_finetune_steps={freeze}", "optim.weight_decay=0.1"])
    run = prepare_run(cfg, tmp_path / "run")
    run.model.train()
    params = dict(run.model.named_parameters())
    head = {n for n in params if n.startswith("lm_head.")}
    encoder = {n for n, p in params.items() if p.requires_grad} - head
    assert "masked_spec_embed" in encoder and any(n.startswith("feature_extractor.") for n in encoder)
    start = {n: p.detach().clone() for n, p in params.items()}
    previous = start
    for step in range(1, freeze + 3):
        _step(run)
        now = {n: p.detach().clone() for n, p in params.items()}
        state = run.optimizer.state
        if step <= freeze:  # only the head learns: the rest bit-exact, with no moments or step count
            assert all(torch.equal(now[n], start[n]) for n in params if n not in head), step
            assert all(len(state[params[n]]) == 0 for n in encoder), step
        else:  # every trained parameter moves, and its state counts the steps since the freeze ended
            assert all(not torch.equal(now[n], previous[n]) for n in encoder), step
            assert all(float(state[params[n]]["step"]) == step - freeze for n in encoder), step
        assert all(not torch.equal(now[n], previous[n]) for n in head), step
        assert all(float(state[params[n]]["step"]) == step for n in head), step
        previous = now


def _float64_reference(kind, decay, period, snapshots):
    """The average after each step in float64: snapshots[0] the initial weights, snapshots[k] after step k."""
    avg, out = snapshots[0].double(), []
    taken = []
    for step, w in enumerate(snapshots[1:], start=1):
        if kind == "ema":
            avg = decay * avg + (1 - decay) * w.double()
        elif step % period == 0:
            taken.append(w.double())
            avg = torch.stack(taken).mean(0)  # icefall: the mean of the weights every period steps
        out.append(avg)
    return out


@pytest.mark.parametrize("kind", ["ema", "mean"])
def test_the_weight_average_follows_its_formula(kind):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 3))
    model[0].bias.requires_grad_(False)  # frozen: never averaged, stays the model's
    average = WeightAverage(model, kind, decay=0.9, period=3)
    trained = [p for p in model.parameters() if p.requires_grad]
    snapshots = [torch.cat([p.detach().flatten() for p in trained])]
    for step in range(1, 11):
        with torch.no_grad():
            for p in trained:
                p.add_(torch.randn_like(p))  # an optimizer update
        average.update(step)
        snapshots.append(torch.cat([p.detach().flatten() for p in trained]))
    expected = _float64_reference(kind, 0.9, 3, snapshots)[-1]
    got = torch.cat([average.state_dict()[n].flatten() for n in average.names])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(average.model[0].bias, model[0].bias)
    assert "0.bias" not in average.state_dict()
    assert all(not p.requires_grad for p in average.model.parameters())


def test_best_takes_the_average_when_it_scores_better_and_the_summary_says_so(tmp_path, monkeypatch, capsys):
    cfg = load_config(DEMO, TINY + ["train.weight_average=ema", "train.max_steps=2"])
    run = prepare_run(cfg, tmp_path / "run")
    run.model.train()
    _step(run)
    wer = {}  # the WER the stand-in evaluation gives each model

    def scored(model, *args, **kwargs):
        return {"loss": 1.0, "wer": wer[model is run.model], "cer": 0.1, "examples": [("a", "b")]}

    monkeypatch.setattr(loop_module, "evaluate", scored)
    wer.update({True: 0.5, False: 0.4})  # the average scores better
    result = loop_module.evaluate_and_export(run)
    assert result["average"]["wer"] == 0.4 and (run.state.best_source, run.state.best_step) == ("average", 1)
    exported = load_file(str(tmp_path / "run" / "best" / "model.safetensors"))
    averaged = run.average.model.state_dict()
    torch.testing.assert_close(exported["lm_head.weight"], averaged["lm_head.weight"], rtol=0, atol=0)
    assert not torch.equal(exported["lm_head.weight"], run.model.lm_head.weight.detach())

    _step(run)
    wer.update({True: 0.3, False: 0.35})  # now the model does, and beats the best so far
    loop_module.finish(run, Window(t0=0.0))
    out = capsys.readouterr().out
    assert run.state.best_source == "model" and run.state.best_step == 2
    assert "fastctc: weight average (EMA 0.999): final WER 0.3500 (the model's 0.3000) | best/ holds the model" in out
    exported = load_file(str(tmp_path / "run" / "best" / "model.safetensors"))
    torch.testing.assert_close(exported["lm_head.weight"], run.model.lm_head.weight.detach(), rtol=0, atol=0)
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = next(e for e in events if e["event"] == "final")
    assert final["average_wer"] == 0.35 and final["best_source"] == "model"
    assert [e["wer"] for e in events if e["event"] == "eval_average"] == [0.4, 0.35]
