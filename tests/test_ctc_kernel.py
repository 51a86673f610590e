"""fastctc.kernels.ctc_loss: the CPU reference path in process, the Triton kernel in a subprocess.

The Triton kernel is checked under Triton's interpreter, which must be switched on before the
kernels are defined, so tests/ctc_kernel_interpreted.py runs in a child pytest with
TRITON_INTERPRET=1; this process keeps the fast PyTorch path.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import fastctc.kernels as K
import pytest
import torch
from child_pytest import run_child_pytest
from ctc_kernel_cases import loss_and_grad, make_grad_out, random_case, reference64

TESTS = Path(__file__).resolve().parent
HAS_TRITON = importlib.util.find_spec("triton") is not None


# ---- the reference path (CPU tensors, no interpreter) ----------------------------------------


@pytest.mark.skipif(K.TRITON_INTERPRETED, reason="CPU tensors go to the kernel in this process")
def test_cpu_tensors_take_the_reference_path():
    case = random_case(1, B=2, T=6, V=5, max_labels=2)
    x = case.logits.clone().requires_grad_()
    loss = K.ctc_loss(x, case.targets, case.input_lengths, case.target_lengths, blank=case.blank)
    assert "CTCLossFunction" not in type(loss.grad_fn).__name__


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("concatenated", [False, True])
def test_reference_path_matches_float64(reduction, concatenated):
    case = random_case(20, B=4, T=30, V=33, max_labels=10, blank=32, concatenated=concatenated)
    grad_out = make_grad_out(case, reduction, 20)
    loss, grad = loss_and_grad(K.ctc_loss, case, reduction, True, grad_out)
    loss64, grad64 = reference64(case, reduction, True, grad_out)
    # float32 log-softmax + recursion over <= 30 frames: a few hundred ulps at most
    torch.testing.assert_close(loss.double(), loss64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.double(), grad64, rtol=1e-4, atol=1e-5)


def test_reference_path_low_precision_logits_give_float32_loss():
    case = random_case(21, B=2, T=12, V=9, max_labels=4, dtype=torch.bfloat16)
    loss, grad = loss_and_grad(K.ctc_loss, case, "mean", True, torch.tensor(1.0))
    loss64, grad64 = reference64(case, "mean", True, torch.tensor(1.0))
    assert loss.dtype == torch.float32 and grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss.double(), loss64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.double(), grad64, rtol=2**-8, atol=1e-5)


def test_reference_path_zero_infinity():
    case = random_case(22, B=2, T=4, V=5, max_labels=1, blank=0, full_length=True)
    case.targets = torch.tensor([[1, 2, 3, 4, 1], [1, 0, 0, 0, 0]])
    case.target_lengths = torch.tensor([5, 1])  # row 0: 5 labels in 4 frames
    loss, grad = loss_and_grad(K.ctc_loss, case, "none", True, torch.ones(2))
    assert loss[0] == 0 and (grad[0] == 0).all() and torch.isfinite(loss[1])


@pytest.mark.parametrize(
    "kwargs, message", [(dict(reduction="avg"), "reduction must be one of"), (dict(blank=7), "outside the vocabulary")]
)
def test_argument_validation(kwargs, message):
    case = random_case(23, B=1, T=4, V=7, max_labels=1)
    with pytest.raises(ValueError, match=message):
        K.ctc_loss(case.logits, case.targets, case.input_lengths, case.target_lengths, **kwargs)
    with pytest.raises(ValueError, match="must be \\(B, T, V\\)"):
        K.ctc_loss(case.logits[0], case.targets, case.input_lengths, case.target_lengths)


def test_import_without_triton_falls_back_with_a_warning():
    code = """
import sys, types, warnings
sys.modules["triton"] = None  # import triton -> ImportError
import torch
import fastctc.kernels as K
assert K.ctc_loss_triton is None
x = torch.randn(2, 5, 4, requires_grad=True)
args = (torch.tensor([[1, 2], [3, 3]]), torch.tensor([5, 5]), torch.tensor([2, 2]))
with warnings.catch_warnings():
    warnings.simplefilter("error")  # the CPU path is the reference anyway: no warning
    K.ctc_loss(x, *args).backward()
fake_cuda = types.SimpleNamespace(is_cuda=True, device=torch.device("cpu"))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert K._use_triton(fake_cuda) is False
assert any("triton is unavailable" in str(w.message) for w in caught), caught
"""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


# ---- the Triton kernels compile for an H100 (sm_90) without a GPU ---------------------------


def _pointer_types(fn, logits: str) -> dict:
    types = {"logits_ptr": logits, "grad_ptr": logits, "targets_ptr": "*i64"}
    for name in fn.arg_names:
        if name.endswith("_ptr") and name not in types:
            types[name] = "*i64" if "lengths" in name or "offsets" in name else "*fp32"
    return types


@pytest.mark.skipif(not HAS_TRITON or K.TRITON_INTERPRETED, reason="needs triton, not interpreted")
@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION is unset")
@pytest.mark.parametrize("logits", ["*bf16", "*fp16", "*fp32"])
def test_kernels_compile_for_sm90(logits):
    """The interpreter accepts code the compiler rejects (e.g. non-constexpr globals): compile it,
    down to a cubin with the ptxas shipped in the triton wheel, at the sizes the cards need."""
    import fastctc.kernels.ctc as ctc
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    launches = [
        (ctc._row_lse_kernel, dict(ROWS=256, BLOCK_V=32), 4),
        (ctc._row_lse_kernel, dict(ROWS=8, BLOCK_V=1024), 4),
        (ctc._ctc_alpha_kernel, dict(BLOCK_S=16), 4),
        (ctc._ctc_alpha_kernel, dict(BLOCK_S=2048), 8),  # 600 labels: 1201 states
        (ctc._ctc_beta_grad_kernel, dict(BLOCK_S=16, BLOCK_V=32), 4),
        (ctc._ctc_beta_grad_kernel, dict(BLOCK_S=2048, BLOCK_V=1024), 8),
    ]
    for fn, constexprs, num_warps in launches:
        types = _pointer_types(fn, logits)
        signature = {n: types.get(n, "i32") for n in fn.arg_names}
        signature.update({n: "constexpr" for n in constexprs})
        src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
        try:
            target = GPUTarget("cuda", 90, 32)
            compiled = triton.compile(src, target=target, options={"num_warps": num_warps})
        except RuntimeError as err:
            if "ptxas" in str(err) and "not found" in str(err).lower():
                pytest.skip(f"no ptxas: {err}")
            raise
        assert "cubin" in compiled.asm, f"{fn.__name__} {constexprs}: no cubin"


@pytest.mark.skipif(not HAS_TRITON or K.TRITON_INTERPRETED, reason="needs triton, not interpreted")
def test_per_batch_sizes_are_not_specialised():
    """Triton ignores a do_not_specialize name that is not an argument: each must name one, and the
    sizes that change from batch to batch (T, S_CAP, what T multiplies) must be among them."""
    import fastctc.kernels.ctc as ctc

    wanted = {
        ctc._row_lse_kernel: {"n_rows", "T"},
        ctc._ctc_alpha_kernel: {"T", "S_CAP", "ALPHA_ROWS", "stride_lb", "stride_ab", "stride_at"},
        ctc._ctc_beta_grad_kernel: {"T", "S_CAP", "stride_lb", "stride_ab", "stride_at", "stride_gb"},
    }
    for fn, names in wanted.items():
        assert set(fn.do_not_specialize) <= set(fn.arg_names), (fn.__name__, fn.do_not_specialize)
        assert names <= set(fn.do_not_specialize), (fn.__name__, names - set(fn.do_not_specialize))


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_launches_are_guarded_by_the_logits_device():
    """Triton launches on the current CUDA device: the launchers enter the logits' device first."""
    import contextlib

    import fastctc.kernels.ctc as ctc

    guard = ctc._on_device(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert isinstance(ctc._on_device(torch.device("cpu")), contextlib.nullcontext)


# ---- the Triton kernel, interpreted, in a subprocess -----------------------------------------


def _run_interpreted(marker: str, timeout: int) -> None:
    run_child_pytest(str(TESTS / "ctc_kernel_interpreted.py"), "-m", marker, timeout=timeout)


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_triton_kernel_under_interpreter():
    _run_interpreted("not slow", timeout=600)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_triton_kernel_under_interpreter_large_shapes():
    _run_interpreted("slow", timeout=3600)
