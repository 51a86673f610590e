"""Microbenchmark: fused Triton CTC (fastctc) vs log_softmax + torch's native ctc_loss (+ cuDNN).

    fastctc bench ctc                        # all shapes, bf16 logits, forward / backward / both
    fastctc bench ctc --dtype float32 --cards librispeech      (or python bench/ctc.py ...)

On CUDA it prints, per shape, mode and provider: median and p20/p80 ms, peak extra memory and
the effective GB/s of the bytes-moved model below. Without CUDA it prints the bytes model, runs a
correctness pass of the kernel under Triton's interpreter (a subprocess with TRITON_INTERPRET=1),
and says that timing needs a GPU. The last line is always one JSON document.

Bytes-moved model (minimum each provider must read and write; N = B*T*V logits of e bytes,
A = B*T*(2*L_max+1)*4 bytes of log-alpha; small (B, T) and (B,) vectors included, labels not):
  fastctc   forward   read logits twice (row log-sum-exp pass, then the label gather of the
                      recursion), write lse and log-alpha:            2*N*e + 4*B*T + A
            backward  read logits, lse and log-alpha, write the gradient in e bytes:
                                                                      2*N*e + 4*B*T + A
  torch     forward   cast to fp32 (read N*e, write 4N; skipped for fp32), log_softmax (read 4N,
                      write 4N), ctc forward (read 4N log-probs, write A)
            backward  ctc backward (read 4N log-probs and A, write A of log-beta, read it back,
                      write the 4N gradient), log_softmax backward (read 8N, write 4N), cast
                      backward (read 4N, write N*e; skipped for fp32)
  cudnn     as torch, its ctc being cuDNN's (torch picks it only for blank=0, fp32, int32
            concatenated CPU targets, every input length = T and L <= 256).
"""

import argparse
import json
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

from fastctc.kernels import ctc_loss_reference
from fastctc.kernels import ctc_tolerance as tolerance

# Shapes from the model cards: (card, B, T, L_max, V).
SHAPES = [
    ("timit", 32, 100, 20, 30),
    ("timit", 32, 250, 50, 30),
    ("timit", 32, 400, 80, 30),
    ("librispeech", 8, 500, 150, 32),
    ("librispeech", 8, 1000, 300, 32),
    ("librispeech", 4, 1750, 550, 32),
    ("librispeech", 8, 1750, 550, 32),
]
MODES = ("forward", "backward", "forward+backward")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def bytes_model(provider: str, mode: str, B: int, T: int, L: int, V: int, e: int) -> int:
    N, A, bt = B * T * V, B * T * (2 * L + 1) * 4, 4 * B * T
    cast = 0 if e == 4 else 1
    if provider == "fastctc":
        fwd = 2 * N * e + bt + A
        bwd = 2 * N * e + bt + A
    else:  # torch and cudnn share the model
        fwd = cast * (N * e + 4 * N) + 8 * N + 4 * N + A
        bwd = (4 * N + 3 * A + 4 * N) + 12 * N + cast * (4 * N + N * e)
    return {"forward": fwd, "backward": bwd, "forward+backward": fwd + bwd}[mode]


def make_case(B, T, L, V, dtype, device, blank, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, T, V, generator=g) * 3).to(dtype).to(device)
    input_lengths = torch.full((B,), T, dtype=torch.int64)
    input_lengths[1::2] = T - T // 8  # a ragged batch, as the length-bucketed sampler gives
    target_lengths = torch.randint(L // 2, L + 1, (B,), generator=g)
    target_lengths[0] = L
    labels = torch.randint(0, V - 1, (B, L), generator=g)
    labels += (labels >= blank).long()
    return logits, labels, input_lengths, target_lengths


def providers(blank: int):
    from fastctc.kernels import ctc_loss_triton

    def fastctc(x, tg, il, tl, red="mean"):
        return ctc_loss_triton(x, tg, il, tl, blank=blank, reduction=red, zero_infinity=True)

    def native(x, tg, il, tl, red="mean"):
        with torch.backends.cudnn.flags(enabled=False):
            return ctc_loss_reference(x, tg, il, tl, blank, red, True)

    return {"fastctc": fastctc, "torch": native}


class KernelCheckError(RuntimeError):
    """The fused kernel missed the float64 tolerance rule (fastctc.kernels.ctc_tolerance)."""


def cudnn_case(logits, labels, target_lengths, L, blank):
    """cuDNN's inputs (blank 0, int32 CPU concatenated targets, full lengths), or None."""
    if L > 256:
        return None
    B, T, V = logits.shape
    # cuDNN's blank is 0: rotate the ids so the case's blank becomes 0 and no label is 0
    relabelled = (labels - blank) % V
    flat = torch.cat([relabelled[b, : target_lengths[b]] for b in range(B)]).int()
    return flat, torch.full((B,), T, dtype=torch.int32), target_lengths.int()


def check_vs_float64(logits, labels, il, tl, blank, compiled: bool) -> dict:
    """The fused kernel's loss and gradient ("mean") against float64 on the same logits, by the
    tests' rule: no worse than torch's float32 path + floor (+ the compiled-exp allowance on a GPU).
    ``ok`` is False when either misses."""
    from fastctc.kernels import ctc_loss_triton

    def run(fn, x):
        x = x.detach().clone().requires_grad_()
        loss = fn(x)
        return loss.detach().double().cpu(), torch.autograd.grad(loss, x)[0].double().cpu()

    with torch.backends.cudnn.flags(enabled=False):
        ours = run(lambda x: ctc_loss_triton(x, labels, il, tl, blank=blank, zero_infinity=True), logits)
        t32 = run(lambda x: ctc_loss_reference(x, labels, il, tl, blank, "mean", True), logits.float())
        ref = run(
            lambda x: F.ctc_loss(x.log_softmax(-1).transpose(0, 1), labels, il, tl, blank=blank, zero_infinity=True),
            logits.double(),
        )
    T, V = logits.shape[1:]
    loss_extra, grad_extra = (
        tolerance.compiled_exp_allowance(T, V, il, tl, "mean", torch.tensor(1.0)) if compiled else (0.0, 0.0)
    )
    loss_err, loss_err_torch, scale = tolerance.fp32_errors(ours[0], t32[0], ref[0])
    loss_bound = tolerance.fp32_bound(loss_err_torch, scale, loss_extra)
    if logits.dtype == torch.float32:
        grad_err, grad_err_torch, scale = tolerance.fp32_errors(ours[1], t32[1], ref[1])
        grad_excess = grad_err - tolerance.fp32_bound(grad_err_torch, scale, grad_extra)
    else:
        grad_err = float((ours[1] - ref[1]).abs().max())
        excess, _ = tolerance.low_precision_grad_excess(ours[1], ref[1], t32[1], logits.dtype, grad_extra)
        grad_excess = float(excess.max())
    return {
        "loss_err": loss_err,
        "loss_bound": loss_bound,
        "grad_max_err": grad_err,
        "grad_worst_excess": grad_excess,
        "ok": loss_err <= loss_bound and grad_excess <= 0,
    }


def time_cuda(B, T, L, V, dtype, blank, device="cuda"):
    import triton.testing

    logits, labels, il, tl = make_case(B, T, L, V, dtype, device, blank)
    il, tl, labels = il.to(device), tl.to(device), labels.to(device)
    fns = providers(blank)
    rows = []
    calls = {name: (fn, labels, il, tl) for name, fn in fns.items()}
    cud = cudnn_case(logits, labels.cpu(), tl.cpu(), L, blank)
    if cud is not None:  # cuDNN's path: its own blank-0 labels; the cost does not depend on ids
        calls["cudnn"] = (
            lambda x, tg, a, b: F.ctc_loss(
                x.float().log_softmax(-1).transpose(0, 1), tg, a, b, blank=0, zero_infinity=True
            ),
            *cud,
        )

    check = check_vs_float64(logits, labels, il, tl, blank, compiled=True)  # at the real shape

    for name, (fn, tg, a, b) in calls.items():
        x = logits.clone().requires_grad_()
        for mode in MODES:
            if mode == "forward":
                run = lambda: fn(x, tg, a, b)  # noqa: E731
            elif mode == "backward":
                loss = fn(x, tg, a, b)
                run = lambda: loss.backward(retain_graph=True)  # noqa: E731
            else:
                run = lambda: fn(x, tg, a, b).backward()  # noqa: E731
            quantiles = [0.5, 0.2, 0.8]
            med, p20, p80 = triton.testing.do_bench(run, quantiles=quantiles, grad_to_none=[x])
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            run()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
            moved = bytes_model(name, mode, B, T, L, V, logits.element_size())
            rows.append(
                dict(
                    provider=name,
                    mode=mode,
                    median_ms=med,
                    p20_ms=p20,
                    p80_ms=p80,
                    peak_extra_mb=peak / 2**20,
                    model_mb=moved / 2**20,
                    gb_per_s=moved / (med * 1e-3) / 1e9,
                )
            )
            x.grad = None
            if mode == "backward":
                del loss
    return rows, check


def correctness(device: str, B=2, T=60, L=20, V=32) -> dict:
    """check_vs_float64 on one small case, fp32 and bf16 logits."""
    result = {}
    for dtype in (torch.float32, torch.bfloat16):
        logits, tg, il, tl = make_case(B, T, L, V, dtype, device, blank=V - 1)
        args = (tg.to(device), il.to(device), tl.to(device))
        result[str(dtype)] = check_vs_float64(logits, *args, blank=V - 1, compiled=device != "cpu")
    return result


def failed_checks(report: dict) -> list[str]:
    """Which correctness checks of a report missed (an interpreted run that crashed counts)."""
    failed = [
        f"small case {k}"
        for k, v in report.get("correctness", {}).items()
        if not isinstance(v, dict) or not v.get("ok")
    ]
    failed += [
        f"{e['card']} B={e['B']} T={e['T']} L={e['L']}"
        for e in report["shapes"]
        if "vs_float64" in e and not e["vs_float64"]["ok"]
    ]
    return failed


def interpreted_correctness() -> dict:
    """``correctness`` under Triton's interpreter: a subprocess with TRITON_INTERPRET=1."""
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    # as a module, not a file path: a path would put fastctc/bench/ first on the child's sys.path
    cmd = [sys.executable, "-W", "ignore::RuntimeWarning", "-m", "fastctc.bench.ctc", "--interpreted-check"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.splitlines()[-1])


def bytes_entries(shapes: list[tuple], dtype_name: str, element_size: int) -> list[dict]:
    """Each shape's report entry with its bytes-moved model per provider and mode, printed as a table."""
    print(f"bytes-moved model, {dtype_name} logits (MB; see the docstring)")
    print(
        f"{'card':12s} {'B':>3s} {'T':>5s} {'L':>4s} {'V':>4s} {'provider':>8s} {'fwd':>8s} {'bwd':>8s} {'fwd+bwd':>8s}"
    )
    entries = []
    for card, B, T, L, V in shapes:
        entry = {"card": card, "B": B, "T": T, "L": L, "V": V, "bytes_model": {}}
        for p in ("fastctc", "torch"):
            mb = {m: bytes_model(p, m, B, T, L, V, element_size) for m in MODES}
            entry["bytes_model"][p] = mb
            print(f"{card:12s} {B:3d} {T:5d} {L:4d} {V:4d} {p:>8s} " + " ".join(f"{mb[m] / 2**20:8.2f}" for m in MODES))
        entries.append(entry)
    return entries


def time_shapes(entries: list[dict], dtype: torch.dtype) -> None:
    """On the GPU: each entry's timings, check against float64 and speedup, printed, one JSON line per shape."""
    print(
        f"\n{'card':12s} {'B':>3s} {'T':>5s} {'L':>4s} {'mode':>16s} {'provider':>8s} "
        f"{'median':>8s} {'p20':>8s} {'p80':>8s} {'peak MB':>8s} {'GB/s':>7s}"
    )
    for entry in entries:
        B, T, L, V = entry["B"], entry["T"], entry["L"], entry["V"]
        rows, check = time_cuda(B, T, L, V, dtype, blank=V - 1)  # the recipe's blank: last id
        entry["timings"], entry["vs_float64"] = rows, check
        for r in rows:
            print(
                f"{entry['card']:12s} {B:3d} {T:5d} {L:4d} {r['mode']:>16s} {r['provider']:>8s} "
                f"{r['median_ms']:8.3f} {r['p20_ms']:8.3f} {r['p80_ms']:8.3f} "
                f"{r['peak_extra_mb']:8.1f} {r['gb_per_s']:7.1f}"
            )
        fb = {r["provider"]: r["median_ms"] for r in rows if r["mode"] == "forward+backward"}
        entry["speedup_fwd_bwd_vs_torch"] = fb["torch"] / fb["fastctc"]
        print(f"  fwd+bwd speedup vs torch: {entry['speedup_fwd_bwd_vs_torch']:.2f}x; check vs float64: {check}")
        print(json.dumps({"bench": "ctc", "shape": entry}), flush=True)  # kept if a later shape times out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="fastctc bench ctc", description=__doc__.split("\n")[0])
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    ap.add_argument("--cards", nargs="*", default=["timit", "librispeech"])
    ap.add_argument("--interpreted-check", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.interpreted_check:  # child of interpreted_correctness()
        print(json.dumps(correctness("cpu")))
        return
    dtype = DTYPES[args.dtype]
    cuda = torch.cuda.is_available()
    shapes = [s for s in SHAPES if s[0] in args.cards]
    report = {
        "bench": "ctc",
        "dtype": args.dtype,
        "cuda": cuda,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "shapes": bytes_entries(shapes, args.dtype, torch.tensor([], dtype=dtype).element_size()),
    }
    if not cuda:
        print("\ncorrectness: the kernel, interpreted, vs float64 (B=2, T=60, L=20, V=32)")
        report["correctness"] = interpreted_correctness()
        for k, v in report["correctness"].items():
            print(f"  {k}: {v}")
        print("\ntiming needs a CUDA GPU: none here, so no times are reported")
        finish(report)
        return
    report["correctness"] = correctness("cuda")
    print(f"\ncorrectness vs float64 (B=2, T=60, L=20, V=32): {report['correctness']}")
    time_shapes(report["shapes"], dtype)
    finish(report)


def finish(report: dict) -> None:
    """The final JSON line; then a failed correctness check fails the command (after the figures)."""
    report["failed_checks"] = failed_checks(report)
    print(json.dumps(report), flush=True)
    if report["failed_checks"]:
        raise KernelCheckError(
            f"fastctc bench ctc: the fused kernel missed the float64 tolerance at "
            f"{', '.join(report['failed_checks'])} (see the check lines above)"
        )


if __name__ == "__main__":
    main()
