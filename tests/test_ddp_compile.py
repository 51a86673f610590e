"""DDP + torch.compile + gradient checkpointing on gloo (2 processes): the combination PyTorch's DDPOptimizer
refused in past releases (the checkpointed layers are higher-order ops in the graph that it splits at
gradient-bucket boundaries). It must run, and learn as the uncompiled run does.

The smallest run that exercises it: one 16-wide layer, 2 utterances of 1 s per rank, 2 steps (step 2's loss
follows step 1's all-reduced, checkpointed, compiled gradients). CI compiles with backend aot_eager: dynamo,
DDPOptimizer's graph split and AOT autograd over the checkpoint op are what the combination risks; inductor's
code generation (about 3 CPU-minutes here, cold) runs in the slow variant and in test_train_loop's compiled run.
"""

import functools
import json
import math

import pytest
import torch
from test_train_loop import TINY, _ddp_worker, _free_port, _losses, _write_equal_length_manifest

SMALLEST = TINY + [
    "model.hidden_size=16",
    "model.intermediate_size=16",
    "model.num_hidden_layers=1",
    "model.conv_dim=[8, 8, 8, 8, 8, 8, 8]",
]


def _worker(rank: int, backend: str, *args) -> None:
    """test_train_loop's DDP worker, the run's torch.compile(model) given `backend`."""
    import fastctc.train.run as run_module

    run_module.torch.compile = functools.partial(torch.compile, backend=backend)
    _ddp_worker(rank, *args)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_ddp_compiled_with_gradient_checkpointing_learns_as_the_uncompiled_run(tmp_path, backend):
    manifest = _write_equal_length_manifest(tmp_path, 4)
    common = SMALLEST + [
        "data.corpus=manifest",
        f"data.train={manifest}",
        f"data.eval={manifest}",
        "data.num_workers=0",
        "train.device=cpu",
        "data.max_duration_s=0",
        "train.batch_size=2",
        "train.max_steps=2",
        "optim.warmup_steps=1",
        "model.gradient_checkpointing=true",
    ]
    losses = {}
    for name, compile_ in (("compiled", "on"), ("eager", "off")):
        out = str(tmp_path / name)
        args = (backend, 2, _free_port(), common + [f"train.compile={compile_}"], out)
        torch.multiprocessing.spawn(_worker, args=args, nprocs=2, join=True)
        losses[name] = _losses(tmp_path / name)
    compiled, eager = losses["compiled"], losses["eager"]
    assert sorted(compiled) == sorted(eager) == [1, 2], losses
    events = [json.loads(line) for line in (tmp_path / "compiled" / "metrics.jsonl").read_text().splitlines()]
    assert events[0]["compile_s"] > 0, events[0]  # dynamo compiled a graph in step 1 (it did not fall back)
    # fp32 on both sides; the compiled graph may reorder float sums (inductor fuses them): test_train_loop's 1e-3
    for step in eager:
        assert math.isfinite(compiled[step])
        assert abs(compiled[step] - eager[step]) <= 1e-3 * max(1.0, abs(eager[step])), (step, losses)
