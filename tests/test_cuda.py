"""What only a GPU can check (marked `cuda`: skipped without one; `fastctc bench gpu` runs them):
the fused CTC kernel compiled for the device against float64, a bf16 step against fp32, the compiled
step against eager (and as a CUDA graph), and HostSyncChecker against CUDA's own sync detector."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from ctc_kernel_cases import (
    assert_fp32_no_worse_than_torch,
    assert_low_precision_grad,
    compiled_exp_allowance,
    loss_and_grad,
    make_grad_out,
    random_case,
    reference64,
)
from fastctc.kernels import ctc_loss

from fastctc.devtools.host_syncs import HostSyncChecker
from fastctc.models import CTCModel, EncoderConfig

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")


def torch32(x, targets, input_lengths, target_lengths, blank, reduction, zero_infinity):
    return F.ctc_loss(
        x.float().log_softmax(-1).transpose(0, 1),
        targets,
        input_lengths,
        target_lengths,
        blank=blank,
        reduction=reduction,
        zero_infinity=zero_infinity,
    )


def on_cuda(case):
    return type(case)(
        *(
            t.to(CUDA) if isinstance(t, torch.Tensor) else t
            for t in (case.logits, case.targets, case.input_lengths, case.target_lengths, case.blank)
        )
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_fused_ctc_on_device_fp32_vs_float64(seed, reduction):
    case = random_case(seed, B=3, T=37 + seed * 11, V=29, max_labels=12)
    grad_out = make_grad_out(case, reduction, seed)
    ref_loss, ref_grad = reference64(case, reduction, True, grad_out)
    t_loss, t_grad = loss_and_grad(torch32, case, reduction, True, grad_out)
    dev = on_cuda(case)
    loss, grad = loss_and_grad(ctc_loss, dev, reduction, True, grad_out.to(CUDA))
    assert_fp32_no_worse_than_torch("loss", loss.cpu(), t_loss, ref_loss)
    assert_fp32_no_worse_than_torch("grad", grad.cpu(), t_grad, ref_grad)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_ctc_on_device_low_precision_logits_vs_float64(seed, dtype):
    case = random_case(seed, B=4, T=120, V=32, max_labels=30, dtype=dtype, blank=31)
    grad_out = make_grad_out(case, "mean", seed)
    ref_loss, ref_grad = reference64(case, "mean", True, grad_out)
    t_loss, t_grad = loss_and_grad(torch32, case, "mean", True, grad_out, logits=case.logits.float())
    loss, grad = loss_and_grad(ctc_loss, on_cuda(case), "mean", True, grad_out.to(CUDA))
    assert grad.dtype == dtype
    assert_fp32_no_worse_than_torch("loss", loss.cpu(), t_loss, ref_loss)
    assert_low_precision_grad("grad", grad.cpu(), ref_grad, t_grad, dtype)


@pytest.mark.parametrize("V", [32, 100])
def test_fused_ctc_on_device_librispeech_shape_bf16(V):
    """LibriSpeech's longest batch: 1,101 states (BLOCK_S 2048, 8 warps), V 32 and 100 (BLOCK_V 128),
    bf16 logits; the tolerance adds the compiled tl.exp allowance (tests/ctc_kernel_cases.py)."""
    case = random_case(40 + V, B=8, T=1750, V=V, max_labels=550, dtype=torch.bfloat16, blank=V - 1)
    case.target_lengths[0] = 550
    grad_out = make_grad_out(case, "none", V)
    ref_loss, ref_grad = reference64(case, "none", True, grad_out)
    t_loss, t_grad = loss_and_grad(torch32, case, "none", True, grad_out, logits=case.logits.float())
    loss, grad = loss_and_grad(ctc_loss, on_cuda(case), "none", True, grad_out.to(CUDA))
    loss_extra, grad_extra = compiled_exp_allowance(case, "none", grad_out)
    assert_fp32_no_worse_than_torch("loss", loss.cpu(), t_loss, ref_loss, loss_extra)
    assert_low_precision_grad("grad", grad.cpu(), ref_grad, t_grad, torch.bfloat16, grad_extra)


@pytest.mark.parametrize("seed", range(3))
def test_fused_ctc_on_device_short_targets_wide_vocab(seed):
    """<= 15 labels (BLOCK_S 32) and V 256: the V-wide occupancy work spreads over every warp while
    the state reductions fit in one, where a wrongly ordered occupancy row shows (kernels/ctc.py)."""
    case = random_case(60 + seed, B=8, T=200, V=256, max_labels=15)
    grad_out = make_grad_out(case, "none", seed)
    ref_loss, ref_grad = reference64(case, "none", True, grad_out)
    t_loss, t_grad = loss_and_grad(torch32, case, "none", True, grad_out)
    loss, grad = loss_and_grad(ctc_loss, on_cuda(case), "none", True, grad_out.to(CUDA))
    loss_extra, grad_extra = compiled_exp_allowance(case, "none", grad_out)
    assert_fp32_no_worse_than_torch("loss", loss.cpu(), t_loss, ref_loss, loss_extra)
    assert_fp32_no_worse_than_torch("grad", grad.cpu(), t_grad, ref_grad, grad_extra)


@pytest.mark.parametrize("V", [32, 29])
def test_fused_ctc_compiles_once_per_block_size(V):
    """T, S_CAP and the strides T multiplies are not specialised: batches of other lengths with the
    same BLOCK_S and BLOCK_V reuse the compiled kernels. (With an odd V the row log-sum-exp kernel's
    specialised batch stride T * V may add one variant: its rows vectorise for V % 16 == 0.)"""
    import fastctc.kernels.ctc as ctc

    kernels = (ctc._ctc_alpha_kernel, ctc._ctc_beta_grad_kernel) + ((ctc._row_lse_kernel,) if V % 16 == 0 else ())
    dev = torch.cuda.current_device()

    def variants():
        return [len(k.device_caches[dev][0]) for k in kernels]

    before = None
    for i, (T, L) in enumerate([(96, 20), (97, 21), (112, 24), (129, 30)]):  # 41..61 states: BLOCK_S 64
        case = random_case(80 + i, B=3, T=T, V=V, max_labels=L, blank=0)
        case.target_lengths[0] = L
        loss_and_grad(ctc_loss, on_cuda(case), "sum", True, torch.tensor(1.0, device=CUDA))
        before = variants() if before is None else before
    assert variants() == before, f"compiled variants grew from {before} to {variants()}"


def test_concatenated_targets_with_host_lengths_make_no_sync():
    """1-D targets size BLOCK_S by the longest target: read from lengths on the host (pinned, so the
    copy to the device is asynchronous), no sync; lengths on the GPU would cost one, by design."""
    case = random_case(95, B=4, T=60, V=29, max_labels=12, concatenated=True)
    logits = case.logits.to(CUDA).requires_grad_()
    targets, input_lengths = case.targets.to(CUDA), case.input_lengths.to(CUDA)
    target_lengths = case.target_lengths.pin_memory()
    ctc_loss(logits, targets, input_lengths, target_lengths, blank=case.blank).backward()  # compiles
    with HostSyncChecker(CUDA) as checker:
        ctc_loss(logits, targets, input_lengths, target_lengths, blank=case.blank).backward()
    assert checker.count() == 0, checker.report()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_fused_ctc_launches_on_the_logits_device():
    """Logits on cuda:1 while cuda:0 is current: the kernels run on cuda:1 (not an illegal access)."""
    case = random_case(90, B=3, T=40, V=29, max_labels=10)
    grad_out = make_grad_out(case, "none", 90)
    ref_loss, ref_grad = reference64(case, "none", True, grad_out)
    t_loss, t_grad = loss_and_grad(torch32, case, "none", True, grad_out)
    dev1 = torch.device("cuda", 1)
    moved = type(case)(
        *(
            t.to(dev1) if isinstance(t, torch.Tensor) else t
            for t in (case.logits, case.targets, case.input_lengths, case.target_lengths, case.blank)
        )
    )
    with torch.cuda.device(0):
        loss, grad = loss_and_grad(ctc_loss, moved, "none", True, grad_out.to(dev1))
        torch.cuda.synchronize(dev1)
    assert grad.device == dev1
    loss_extra, grad_extra = compiled_exp_allowance(case, "none", grad_out)
    assert_fp32_no_worse_than_torch("loss", loss.cpu(), t_loss, ref_loss, loss_extra)
    assert_fp32_no_worse_than_torch("grad", grad.cpu(), t_grad, ref_grad, grad_extra)


def tiny_model(seed=0, **overrides) -> CTCModel:
    torch.manual_seed(seed)
    keys = dict(
        vocab_size=32,
        pad_token_id=31,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        conv_dim=(32, 32, 32),
        conv_kernel=(10, 3, 3),
        conv_stride=(5, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        mask_time_prob=0.0,
    )
    model = CTCModel(EncoderConfig(**{**keys, **overrides}))
    model.freeze_feature_encoder()
    return model.to(CUDA).train()


def batch(B=4, N=16000, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.linspace(N, N * 0.7, B).long()
    waves = torch.randn(B, N, generator=g) * (torch.arange(N)[None] < lengths[:, None])
    target_lengths = torch.full((B,), 12)
    targets = torch.randint(0, 31, (B, 12), generator=g)
    return [t.to(CUDA) for t in (waves, lengths, targets, target_lengths)]


def loss_and_grads(model, step_model, args, dtype=None):
    waves, lengths, targets, target_lengths = args
    with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        logits, logit_lengths = step_model(waves, lengths)
    loss = ctc_loss(logits, targets, logit_lengths, target_lengths, blank=31)
    params = [p for p in model.parameters() if p.requires_grad]
    return loss.detach().float(), [g.float() for g in torch.autograd.grad(loss, params)]


def test_bf16_step_tracks_fp32():
    model, args = tiny_model(), batch()
    l32, g32 = loss_and_grads(model, model, args)
    l16, g16 = loss_and_grads(model, model, args, torch.bfloat16)
    assert math.isclose(float(l16), float(l32), rel_tol=3e-2)
    flat32, flat16 = torch.cat([g.flatten() for g in g32]), torch.cat([g.flatten() for g in g16])
    assert F.cosine_similarity(flat32, flat16, dim=0) > 0.99


def test_compiled_step_equals_eager():
    torch._dynamo.reset()
    model, args = tiny_model(), batch()
    # both TF32 switches off: eager runs the layer-norm conv stack as a (1, k) conv2d and the
    # compiled step as conv1d, and cuDNN may pick TF32 for either
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        l0, g0 = loss_and_grads(model, model, args)
        l1, g1 = loss_and_grads(model, torch.compile(model), args)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    torch.testing.assert_close(l1, l0, rtol=1e-4, atol=1e-5)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_bounded_shape_step_runs_as_a_cuda_graph():
    """mode="reduce-overhead": same shapes every call; no cudagraph skip recorded by inductor."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model, args = tiny_model(), batch()
    compiled = torch.compile(model, mode="reduce-overhead", dynamic=False)
    for _ in range(4):
        loss, _ = loss_and_grads(model, compiled, args, torch.bfloat16)
        assert torch.isfinite(loss)
    assert dict(counters["inductor"]).get("cudagraph_skips", 0) == 0, dict(counters["inductor"])
    assert dict(counters["graph_break"]) == {}


SYNCING = {
    "item": lambda x: x.sum().item(),
    "bool": lambda x: bool(x.sum() > 0),
    "mask index": lambda x: x[x > 0],
    "nonzero": lambda x: torch.nonzero(x),
    "cpu": lambda x: x.cpu(),
    "tolist": lambda x: x.tolist(),
}
NOT_SYNCING = {
    "where": lambda x: torch.where(x > 0, x, 0.0),
    "topk": lambda x: x.topk(3).indices,
    "isfinite": lambda x: torch.isfinite(x).all(),
}


def cuda_detects_sync(fn) -> bool:
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return any("synchronizing" in str(w.message) for w in caught)


@pytest.mark.parametrize("name", list(SYNCING) + list(NOT_SYNCING))
def test_host_sync_checker_agrees_with_cuda(name):
    fn = {**SYNCING, **NOT_SYNCING}[name]
    x = torch.randn(64, device=CUDA)
    with HostSyncChecker(CUDA) as checker:
        fn(x)
    assert cuda_detects_sync(lambda: fn(x)) == (name in SYNCING)
    assert (checker.count() > 0) == (name in SYNCING), checker.report()


def test_training_step_has_no_sync_on_the_device():
    """The model + fused CTC + clip + fused AdamW with a found_inf skip, as fastctc.train.steps runs it:
    neither CUDA's detector nor the checker sees a sync."""
    model, args = tiny_model(mask_time_prob=0.1, mask_time_length=2, layerdrop=0.0), batch()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)

    def step():
        waves, lengths, targets, target_lengths = args
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits, logit_lengths = model(waves, lengths)
        ctc_loss(logits, targets, logit_lengths, target_lengths, blank=31).backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.found_inf = (~torch.isfinite(norm)).float()
        opt.step()
        del opt.found_inf
        opt.zero_grad(set_to_none=True)

    step()  # the optimizer state
    with HostSyncChecker(CUDA) as checker:
        step()
    assert checker.count() == 0, checker.report()
    assert not cuda_detects_sync(step)


def test_the_loops_step_from_the_loader_has_no_sync(tmp_path):
    """fastctc.train.steps on CUDA, batches from the real loader (pinned, handed off non_blocking), bf16,
    SpecAugment and layerdrop on: the checker (pageable copies included) and CUDA's detector see none."""
    from pathlib import Path

    from fastctc.config import load_config
    from fastctc.train.run import prepare_run
    from fastctc.train.steps import forward_backward, optimizer_step, steps

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.toml"
    keys = [
        "model.hidden_size=64",
        "model.num_attention_heads=4",
        "model.intermediate_size=128",
        "model.mask_time_prob=0.2",
        "model.mask_time_length=2",
        "model.layerdrop=0.2",
        "data.synthetic_train_size=32",
        "data.synthetic_eval_size=4",
        "train.batch_size=4",
        "train.grad_accum=2",
        "train.device=cuda",
        "train.precision=bf16",
        "train.compile=off",
        "train.eval_every=0",
    ]
    run = prepare_run(load_config(demo, keys), tmp_path)
    run.model.train()
    it = iter(steps(run))
    forward_backward(run, next(it))
    optimizer_step(run)  # the optimizer state
    micro_batches = next(it)
    assert all(b.waveforms.is_pinned() for b in micro_batches)

    def step():
        forward_backward(run, micro_batches)
        optimizer_step(run)

    with HostSyncChecker(CUDA) as checker:
        step()
    assert checker.count() == 0, checker.report()
    assert not cuda_detects_sync(step)
