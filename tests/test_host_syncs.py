"""HostSyncChecker on small functions that do and do not synchronise, then over fastctc's own step,
evaluation and data hand-off (the goal: zero syncs on a step that does not log, one on a step that does).

Each case says what a CUDA run would do; the checker emulates it on CPU (fastctc.devtools.host_syncs).
"""

import dataclasses
import math
from pathlib import Path

import fastctc.kernels as K
import pytest
import torch
from child_pytest import run_child_pytest

from fastctc.config import load_config
from fastctc.devtools.host_syncs import HostSyncChecker, assert_no_host_syncs
from fastctc.train.precision import Precision
from fastctc.train.progress import Window
from fastctc.train.run import prepare_run
from fastctc.train.steps import forward_backward, optimizer_step, steps


def syncs_of(fn, *host_tensors):
    with HostSyncChecker() as c:
        c.host(*host_tensors)
        fn()
    return c


# ---- the checker itself --------------------------------------------------------------------------

SYNCING = {
    "item": lambda x: x.sum().item(),
    "float": lambda x: float(x.sum()),
    "bool branch": lambda x: 1 if x.sum() > 0 else 0,
    "mask index": lambda x: x[x > 0],
    "mask assign": lambda x: x.clone().__setitem__(x > 0, 0.0),
    "nonzero": lambda x: torch.nonzero(x > 0),
    "unique": lambda x: torch.unique((x * 3).long()),
    "masked_select": lambda x: x.masked_select(x > 0),
    "repeat_interleave": lambda x: torch.repeat_interleave(x, (x > 0).long()),
    "cpu": lambda x: x.cpu(),
    "tolist": lambda x: x.tolist(),
    "numpy": lambda x: x.detach().numpy(),
    "equal": lambda x: torch.equal(x, x),
    "blocking hand-off": None,  # below: a host tensor moved without non_blocking
}


@pytest.mark.parametrize("name", [n for n, f in SYNCING.items() if f is not None])
def test_each_syncing_op_is_recorded_once_with_its_line(name):
    x = torch.randn(16)
    c = syncs_of(lambda: SYNCING[name](x))
    assert c.count() == 1, c.report()
    assert "test_host_syncs.py" in c.events[0].where(), c.report()  # the stack names this file's line


NOT_SYNCING = {
    "arithmetic": lambda x: (x * 2 + 1).softmax(0),
    "where instead of mask": lambda x: torch.where(x > 0, x, torch.zeros_like(x)),
    "masked_fill": lambda x: x.masked_fill(x > 0, 0.0),
    "repeat_interleave with output_size": lambda x: torch.repeat_interleave(
        x, torch.full_like(x, 2).long(), output_size=32
    ),
    "topk and scatter": lambda x: torch.zeros(16, dtype=torch.bool).scatter(0, x.topk(3).indices, True),
    "integer index": lambda x: x[torch.arange(4, device=x.device)],
    "python scalar math": lambda x: x * 3.0 / len(x),
    "isfinite on device": lambda x: torch.isfinite(x).all(),
}


@pytest.mark.parametrize("name", list(NOT_SYNCING))
def test_sync_free_ops_record_nothing(name):
    x = torch.randn(16)
    c = syncs_of(lambda: NOT_SYNCING[name](x))
    assert c.count() == 0, c.report()


def test_host_tensors_are_free_to_read():
    """A CPU tensor on a GPU run (the loader's batch, torch.rand(()) without device=) syncs nothing."""
    lengths = torch.tensor([16000, 12000])
    c = syncs_of(lambda: (float(lengths.sum()), lengths.tolist(), bool(torch.rand(()) < 0.5)), lengths)
    assert c.count() == 0, c.report()
    # the same read of a device tensor (made with device=) is a sync
    c = syncs_of(lambda: float(torch.ones(3, device=lengths.device).sum()))
    assert c.count() == 1, c.report()


def test_hand_off_must_be_non_blocking_and_yields_a_device_tensor():
    host = torch.randn(2, 8)
    c = syncs_of(lambda: host.to("cpu"), host)
    assert c.count() == 1 and "non_blocking" in c.events[0].kind, c.report()
    with HostSyncChecker() as c:
        c.host(host)
        dev = host.to("cpu", non_blocking=True)
        assert dev is not host  # the emulated device copy
        dev.sum().item()  # now a device read
    assert c.count() == 1 and c.events[0].kind.startswith("scalar read"), c.report()


def test_backward_and_optimizer_are_seen():
    """Syncs inside autograd's backward (index_put with a bool mask) are recorded too."""
    w = torch.randn(8, requires_grad=True)
    mask = torch.rand(8, device=w.device) > 0.5

    def fwd_bwd():
        w[mask].sum().backward()  # forward: index with a bool mask; backward: index_put with it

    c = syncs_of(fwd_bwd)
    assert [e.op for e in c.events] == ["aten.index.Tensor", "aten.index_put.default"], c.report()

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    x = torch.randn(5, 4)

    def step():
        model(x).square().mean().backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return norm

    c = syncs_of(step, x)
    assert c.count() == 0, c.report()


def test_assert_no_host_syncs_lists_the_stacks():
    x = torch.randn(4)
    c = syncs_of(lambda: x.sum().item())
    with pytest.raises(AssertionError, match="scalar read"):
        assert_no_host_syncs(c, what="demo")
    assert_no_host_syncs(c, allowed=1)


def test_host_tensors_inside_the_region_are_listed_apart():
    """Not syncs, but they keep a region out of a CUDA graph: a factory without device= and a host
    tensor fed to a device op."""
    x = torch.randn(8)
    c = syncs_of(lambda: x + torch.arange(8))
    assert c.count() == 0, c.report()
    assert [e.kind.split(" (")[0] for e in c.host_tensors] == ["tensor made on the host", "host tensor"], c.host_tensors
    c = syncs_of(lambda: x + torch.arange(8, device=x.device))
    assert c.count() == 0 and not c.host_tensors


# ---- fastctc's own step, evaluation and hand-off -----------------------------------------------------

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.toml"
# a tiny encoder with every source of syncs on: SpecAugment, layerdrop, padding (synthetic utterances of
# different lengths, attention mask on), gradient accumulation, clipping, the non-finite check, the EMA
STEP = [
    "model.hidden_size=32",
    "model.num_attention_heads=2",
    "model.intermediate_size=64",
    "model.num_hidden_layers=3",
    "model.conv_dim=[16, 16, 16, 16, 16, 16, 16]",
    "model.num_conv_pos_embedding_groups=2",
    "model.mask_time_prob=0.2",
    "model.mask_time_length=2",
    "model.layerdrop=0.3",
    "model.hidden_dropout=0.1",
    "data.synthetic_train_size=16",
    "data.synthetic_eval_size=6",
    "train.batch_size=4",
    "train.grad_accum=2",
    "train.eval_batch_size=3",
    "train.threads=1",
    "train.log_every=1",
    "train.eval_every=0",
    "train.checkpoint_every=0",
    "train.compile=off",
    "train.device=cpu",
    "train.weight_average=ema",
]


# the other families' own modules, each in the step (padding_invariant: their exact-padding path too;
# w2v-BERT: the fbank front end and conformer blocks; MMS: attention adapters in every pre-LN layer, trained
# alone with the head as model.train_only = "adapters" trains them, the rest frozen and out of the optimizer)
FAMILY_STEPS = {
    "data2vec-audio": [
        "model.model_type=data2vec-audio",
        "model.feat_extract_norm=layer",
        "model.do_stable_layer_norm=false",
        "model.num_conv_pos_embeddings=2",
        "model.conv_pos_kernel_size=5",
        "train.padding_invariant=true",
    ],
    **{
        f"wav2vec2-conformer ({positions})": [
            "model.model_type=wav2vec2-conformer",
            "model.do_stable_layer_norm=false",
            f"model.position_embeddings_type={positions}",
            "model.conv_depthwise_kernel_size=5",
            "model.conformer_conv_dropout=0.1",
            "train.padding_invariant=true",
        ]
        for positions in ("relative", "rotary")
    },
    "wav2vec2-bert": [
        "model.model_type=wav2vec2-bert",
        "model.position_embeddings_type=relative_key",
        "model.left_max_position_embeddings=4",
        "model.right_max_position_embeddings=2",
        "model.conv_depthwise_kernel_size=5",
        "model.conformer_conv_dropout=0.1",
    ],
    "wav2vec2 (MMS adapters)": [
        "model.do_stable_layer_norm=true",
        "model.adapter_attn_dim=4",
        "model.train_only=adapters",
        "model.target_language=tst",
    ],
}


def prepared_run(tmp_path, precision: str, extra: list[str] = ()):
    cfg = load_config(DEMO, STEP + list(extra) + [f"train.precision={'fp32' if precision == 'fp16' else precision}"])
    run = prepare_run(cfg, tmp_path / precision)
    if precision == "fp16":  # emulated on CPU: fp16 autocast and an enabled GradScaler (fastctc allows it on CUDA)
        run = dataclasses.replace(run, precision=Precision("fp16", "cpu"), scaler=torch.amp.GradScaler("cpu"))
    return run


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_training_step_syncs_zero_times_and_a_logging_step_once(tmp_path, precision):
    run = prepared_run(tmp_path, precision)
    assert run.model.config.layerdrop > 0 and run.model.config.mask_time_prob > 0 and run.use_mask
    run.model.train()
    window = Window(t0=0.0)
    for i, micro_batches in zip(range(2), steps(run)):  # the first step creates the optimizer state
        assert len({b.waveforms.shape[1] for b in micro_batches} | {int(b.lengths.min()) for b in micro_batches}) > 1
        with HostSyncChecker() as syncs:
            syncs.host(*micro_batches)  # the loader's batches are host tensors
            loss_sum = forward_backward(run, micro_batches)
            grad_norm, skipped = optimizer_step(run)
            run.state.step += 1
            window.add(
                run.state.step,
                loss_sum,
                len(micro_batches),
                sum(len(b.texts) for b in micro_batches),
                sum(float(b.lengths.sum()) for b in micro_batches) / 16000,
                grad_norm,
                skipped,
            )
        assert_no_host_syncs(syncs, 0, f"{precision} step {i + 1}")
    with HostSyncChecker() as syncs:
        loss, norm, skipped_steps = window.fetch()  # what the progress line reads
    assert_no_host_syncs(syncs, 1, f"{precision} logging step")
    assert syncs.count() == 1 and math.isfinite(loss)
    if precision != "fp16":  # fp16: GradScaler's first scale (2^16) may overflow, and that step is skipped
        assert math.isfinite(norm) and skipped_steps == []
    assert set(skipped_steps) <= {1, 2}


def augment_folders(tmp_path) -> list[str]:
    """--set overrides that turn every augmentation on (probability 1 or near it), with a noise and an
    impulse-response folder of generated files."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    for name, x in (
        ("noise", rng.standard_normal(7_000)),
        ("rir", rng.standard_normal(900) * np.exp(-np.arange(900) / 150)),
    ):
        (tmp_path / name).mkdir()
        sf.write(tmp_path / name / f"{name}.wav", x.astype(np.float32) * 0.3, 16_000, subtype="FLOAT")
    return [
        "augment.speed_prob=1.0",
        "augment.speed_factors=[0.9, 1.1]",
        "augment.rir_prob=0.8",
        f"augment.rir_dir={tmp_path / 'rir'}",
        "augment.noise_prob=0.8",
        f"augment.noise_dir={tmp_path / 'noise'}",
    ]


def test_a_step_with_every_augmentation_on_syncs_zero_times(tmp_path):
    """Speed (drawn on the host, its lengths computed there), reverberation and noise (drawn on the device)
    add no sync to the step; the speed change reaches the model (the batch's padded length changes)."""
    cfg = load_config(DEMO, STEP + ["train.precision=fp32"] + augment_folders(tmp_path))
    run = prepare_run(cfg, tmp_path / "run")
    assert run.augment is not None and run.augment.noise is not None and run.augment.rirs is not None
    run.model.train()
    seen = []
    real = run.augment.__call__

    def augment(waves, batch):
        out = real(waves, batch)
        seen.append((waves.shape[1], out[0].shape[1]))
        return out

    run = dataclasses.replace(run, augment=augment)
    micro_batches = next(iter(steps(run)))  # two micro-batches, each augmented
    with HostSyncChecker() as syncs:
        syncs.host(*micro_batches)
        forward_backward(run, micro_batches)
        optimizer_step(run)
    assert_no_host_syncs(syncs, 0, "augmented step")
    assert len(seen) == 2 and all(n != m for n, m in seen), seen


def test_steps_with_the_encoder_frozen_then_not_and_the_icefall_mean_sync_zero_times(tmp_path):
    """train.freeze_finetune_steps decides on the host; the mean's weight (period / step) is a host float."""
    extra = [
        "train.precision=fp32",
        "train.freeze_finetune_steps=1",
        "train.weight_average=mean",
        "train.average_period=2",
    ]
    run = prepare_run(load_config(DEMO, STEP + extra), tmp_path / "frozen")
    run.model.train()
    before = run.average.state_dict()["lm_head.weight"].clone()
    for i, micro_batches in zip(range(2), steps(run)):  # step 1 frozen, step 2 trains all and updates the mean
        with HostSyncChecker() as syncs:
            syncs.host(*micro_batches)
            forward_backward(run, micro_batches)
            optimizer_step(run)
            run.state.step += 1
        assert_no_host_syncs(syncs, 0, f"step {i + 1} (frozen: {i == 0})")
    assert torch.equal(run.average.state_dict()["lm_head.weight"], run.model.lm_head.weight)
    assert not torch.equal(before, run.model.lm_head.weight)


@pytest.mark.parametrize("family", list(FAMILY_STEPS))
def test_every_familys_training_step_syncs_zero_times(tmp_path, family):
    run = prepared_run(tmp_path, "fp32", FAMILY_STEPS[family])
    assert run.model.config.model_type == family.split()[0] and run.use_mask
    if "MMS" in family:
        assert run.model.encoder.layers[0].adapter_layer is not None
        assert not run.model.feature_projection.projection.weight.requires_grad  # frozen: only adapters and head
    run.model.train()
    for i, micro_batches in zip(range(2), steps(run)):
        with HostSyncChecker() as syncs:
            syncs.host(*micro_batches)
            forward_backward(run, micro_batches)
            optimizer_step(run)
            run.state.step += 1
        assert_no_host_syncs(syncs, 0, f"{family} step {i + 1}")


def test_a_non_finite_step_is_skipped_on_the_device_without_a_sync(tmp_path):
    run = prepared_run(tmp_path, "fp32")
    micro_batches = next(iter(steps(run)))
    with HostSyncChecker() as syncs:
        syncs.host(*micro_batches)
        forward_backward(run, micro_batches)
        before = [p.detach().clone() for p in run.model.parameters()]
        next(p for p in run.model.parameters() if p.grad is not None).grad[0] = float("nan")
        grad_norm, skipped = optimizer_step(run)
    assert_no_host_syncs(syncs, 0, "non-finite step")
    assert bool(skipped)
    assert all(torch.equal(a, b) for a, b in zip(before, run.model.parameters()))


def test_evaluation_fetches_once_per_batch(tmp_path):
    from fastctc.train.evaluate import evaluate

    run = prepared_run(tmp_path, "fp32")
    batches = -(-len(run.eval_ds) // run.cfg.train.eval_batch_size)
    with HostSyncChecker() as syncs:
        result = evaluate(
            run.model, run.eval_ds, run.vocab, run.cfg.train.eval_batch_size, run.device, data=run.cfg.data
        )
    assert math.isfinite(result["loss"])
    # one transfer per batch (its decoded ids and lengths) and one for the loss at the end
    assert_no_host_syncs(syncs, batches + 1, f"evaluation of {batches} batches")


@pytest.mark.skipif(
    not K.TRITON_INTERPRETED or K.ctc_loss_triton is None,
    reason="needs TRITON_INTERPRET=1 at import; run by test_the_fused_ctc_step_in_a_subprocess",
)
def test_fused_ctc_step_syncs_zero_times(tmp_path):
    """The step with the fused Triton CTC (interpreted here; the launcher's host code is what counts)."""
    run = prepared_run(tmp_path, "fp32")
    micro_batches = next(iter(steps(run)))
    with HostSyncChecker() as syncs:
        syncs.host(*micro_batches)
        forward_backward(run, micro_batches)
        optimizer_step(run)
    assert_no_host_syncs(syncs, 0, "fused CTC step")


@pytest.mark.skipif(K.TRITON_INTERPRETED or K.ctc_loss_triton is None, reason="needs triton; runs the interpreted test")
def test_the_fused_ctc_step_in_a_subprocess():
    out = run_child_pytest(__file__, "-k", "test_fused_ctc_step_syncs_zero_times")
    assert "1 passed" in out


def test_the_ddp_stop_check_makes_no_host_sync(tmp_path):
    """Under DDP every step asks all ranks whether to stop: the vote runs on the hosts (gloo), never as a
    device collective read back with .item(), so a step that does not log still syncs zero times."""
    import types

    import torch.distributed as dist

    from fastctc.train.distributed import DistInfo
    from fastctc.train.loop import StopRequest

    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    try:
        # a group of one stands in for the ranks (enabled: world_size > 1 takes the DDP path)
        run = types.SimpleNamespace(
            dist=DistInfo(rank=0, world_size=2, host_group=None), state=types.SimpleNamespace(step=3)
        )
        stop = StopRequest()
        with HostSyncChecker() as syncs:
            keep_going = stop.should_stop(run)
            stop.requested = True
            stopping = stop.should_stop(run)
        assert_no_host_syncs(syncs, 0, "DDP stop check")
        assert not keep_going and stopping
        assert StopRequest(at_step=3).should_stop(run)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("tier", ["device", "disk"])
def test_steps_with_frozen_features_cached_sync_zero_times(tmp_path, tier):
    """train.feature_cache: the steps that store each utterance's conv-stack output (epoch 1) and those
    that gather it (epoch 2) add no sync: the indices are built on the host from the batch's ids and
    lengths and handed to the device. Disk: its buffer is host memory (as host and disk are on a GPU)."""
    cfg = load_config(DEMO, STEP + ["model.freeze_feature_encoder=true", f"train.feature_cache={tier}"])
    run = prepare_run(cfg, tmp_path / tier)
    assert run.features is not None and run.features.train.tier == tier
    run.model.train()
    for i, micro_batches in zip(range(4), steps(run)):  # 2 steps per epoch: steps 3 and 4 gather
        gathering = run.features.train.filled.all()
        assert gathering == (i >= 2)
        with HostSyncChecker() as syncs:
            syncs.host(*micro_batches)
            if tier != "device":
                syncs.host(run.features.train.buffer)
            forward_backward(run, micro_batches)
            optimizer_step(run)
        assert_no_host_syncs(syncs, 0, f"{tier} step {i + 1} ({'gathering' if gathering else 'storing'})")


def test_evaluation_with_frozen_features_cached_fetches_once_per_batch(tmp_path):
    from fastctc.train.evaluate import evaluate

    run = prepare_run(load_config(DEMO, STEP + ["model.freeze_feature_encoder=true"]), tmp_path / "run")
    batches = -(-len(run.eval_ds) // run.cfg.train.eval_batch_size)
    for _ in range(2):  # the first evaluation stores, the second gathers
        with HostSyncChecker() as syncs:
            result = evaluate(
                run.model,
                run.eval_ds,
                run.vocab,
                run.cfg.train.eval_batch_size,
                run.device,
                data=run.cfg.data,
                features=run.features.eval,
            )
        assert math.isfinite(result["loss"])
        assert_no_host_syncs(syncs, batches + 1, f"cached evaluation of {batches} batches")
    assert run.features.eval.filled.all()
