"""`fastctc parity CHECKPOINT_DIR`: the native model against transformers on the same checkpoint.

Both run in float32, eval mode (no dropout, no SpecAugment), on random audio, once with every row full
length (no padding, no lengths / attention_mask) and once with unequal lengths (lengths / attention_mask).
Prints max absolute and relative (max |a - b| / max |b|) differences of the logits and of the gradients
of a CTC loss for every parameter tensor, and each side's forward+backward time. With --float64 it also
runs transformers in float64 and gives each float32 side's gradient error against it: where the two
float32 sides differ, this tells whose rounding it is. Transformers is imported only here, and only
when installed.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from safetensors import SafetensorError

from fastctc.kernels.ctc_reference import ctc_loss_reference

from ..errors import CheckpointError
from .hf_weights import load_pretrained, native_key


def _ctc_loss(logits: torch.Tensor, logit_lengths: torch.Tensor, targets: torch.Tensor, blank: int) -> torch.Tensor:
    target_lengths = torch.full((targets.shape[0],), targets.shape[1], dtype=torch.long)
    return ctc_loss_reference(logits, targets, logit_lengths, target_lengths, blank=blank)


def _diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a.float() - b.float()).abs().max().item()
    return d, d / max(b.abs().max().item(), 1e-30)


def _step(run, repeats: int):
    """run() -> (logits, grads dict); returns the last result and the median seconds after one warmup."""
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def _load_both(path, vocab_size, log) -> tuple:
    """(native model, transformers' model or None when transformers is not installed), the same head."""
    try:
        native = load_pretrained(path, vocab_size=vocab_size)
    except CheckpointError:
        raise
    except (KeyError, ValueError, OSError, SafetensorError) as e:  # not a model folder, or not one fastctc reads
        raise CheckpointError(e.args[0] if e.args else str(e)) from None
    try:
        import transformers
    except ImportError:
        log("transformers is not installed: running the native model only")
        return native, None
    hf = transformers.AutoModelForCTC.from_pretrained(path, vocab_size=native.config.vocab_size, dtype=torch.float32)
    with torch.no_grad():  # a checkpoint without a CTC head: both sides get the native fresh head
        hf.lm_head.weight.copy_(native.lm_head.weight)
        hf.lm_head.bias.copy_(native.lm_head.bias)
    return native, hf.eval()


def _run_native(native, x, lengths, targets, blank):
    """One forward+backward of the native model: (logits, {parameter: gradient})."""
    native.zero_grad(set_to_none=True)
    logits, logit_lengths = native(x, lengths)
    _ctc_loss(logits, logit_lengths, targets, blank).backward()
    return logits.detach(), {n: p.grad for n, p in native.named_parameters() if p.grad is not None}


def _hf_inputs(native, x: torch.Tensor, lengths: torch.Tensor | None, mask: torch.Tensor | None) -> tuple:
    """What transformers' model is fed: the waveforms and their sample mask, or, for w2v-BERT, the native
    front end's fbank features (B, T, 160) and their frame mask, so that the comparison is the encoder's
    (the front end is compared with SeamlessM4TFeatureExtractor on its own, in the tests)."""
    if not native.fbank:
        return x, mask
    with torch.no_grad():
        feats = native.feature_extractor(x, lengths)  # exactly what the native encoder reads
    if lengths is None:
        return feats, None
    frames = native.feature_extractor.output_lengths(lengths)
    return feats, (torch.arange(feats.shape[1])[None, :] < frames[:, None]).long()


def _run_hf(model, x, mask, targets, blank):
    """One forward+backward of a transformers model in its own dtype: (logits, {parameter: gradient})."""
    model.zero_grad(set_to_none=True)
    dtype = next(model.parameters()).dtype
    logits = model(x.to(dtype), attention_mask=mask).logits
    samples = mask.sum(-1) if mask is not None else torch.full((x.shape[0],), x.shape[1])
    in_lengths = model._get_feat_extract_output_lengths(samples)
    _ctc_loss(logits.to(dtype), in_lengths, targets, blank).backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def _compare_grads(grads, ref_grads, grads64, model_type: str, per_tensor: bool, log) -> dict:
    """The worst gradient differences, native against transformers (and each against float64 if given)."""
    worst_abs = worst_rel = worst64_native = worst64_hf = 0.0
    worst_name = ""
    for name, g_ref in ref_grads.items():
        target, known = native_key(name, model_type)
        if not known or target not in grads:
            raise KeyError(f"parity: transformers parameter {name} has no native gradient ({target})")
        a, r = _diff(grads[target], g_ref)
        # a key bias shifts every score of a query alike, which softmax cancels: its gradient is
        # zero in exact arithmetic and both sides hold rounding noise, so no relative figure
        noise = name.endswith(("attention.k_proj.bias", "self_attn.linear_k.bias"))
        line = f"  grad {name:<72} abs {a:.3e}  rel {'(exact gradient is 0)' if noise else f'{r:.3e}'}"
        worst_abs = max(worst_abs, a)
        if not noise and r > worst_rel:
            worst_rel, worst_name = r, name
        if grads64 is not None and not noise:
            r_native, r_hf = _diff(grads[target], grads64[name])[1], _diff(g_ref, grads64[name])[1]
            worst64_native, worst64_hf = max(worst64_native, r_native), max(worst64_hf, r_hf)
            line += f"  vs float64: native rel {r_native:.3e}, transformers rel {r_hf:.3e}"
        if per_tensor:
            log(line)
    result = dict(grad_abs=worst_abs, grad_rel=worst_rel, grad_worst=worst_name, grad_tensors=len(ref_grads))
    log(
        f"gradients ({len(ref_grads)} tensors): max abs diff {worst_abs:.3e}, max rel diff {worst_rel:.3e} ({worst_name})"
    )
    if grads64 is not None:
        result.update(grad_rel_f64_native=worst64_native, grad_rel_f64_transformers=worst64_hf)
        log(
            f"gradients against transformers in float64: native max rel {worst64_native:.3e}, "
            f"transformers float32 max rel {worst64_hf:.3e}"
        )
    return result


def compare(
    path,
    vocab_size=None,
    seconds: float = 2.0,
    batch: int = 2,
    repeats: int = 1,
    seed: int = 0,
    per_tensor: bool = True,
    float64: bool = False,
    log=print,
) -> dict:
    native, hf = _load_both(path, vocab_size, log)
    cfg = native.config
    hf64 = copy.deepcopy(hf).double() if float64 and hf is not None else None

    g = torch.Generator().manual_seed(seed)
    N = int(seconds * 16000)
    audio = torch.randn(batch, N, generator=g)
    lengths = torch.linspace(N, N * 0.6, batch).long()
    blank = cfg.vocab_size - 1
    summary = {"checkpoint": str(path), "model_type": cfg.model_type, "batch": batch, "samples": N, "cases": {}}
    for case, use_lengths in (("no padding", False), ("padding", True)):
        x = audio * (torch.arange(N)[None, :] < lengths[:, None]) if use_lengths else audio
        mask = (torch.arange(N)[None, :] < lengths[:, None]).long() if use_lengths else None
        T = int(native.output_lengths(torch.tensor(N)))
        targets = torch.randint(0, blank, (batch, max(1, T // 8)), generator=g)

        run_lengths = lengths if use_lengths else None
        (logits, grads), t_native = _step(lambda: _run_native(native, x, run_lengths, targets, blank), repeats)
        result = {"native_s": round(t_native, 4)}
        log(f"== {case}: batch {batch} x {N} samples ({N / 16000:.2f} s), {logits.shape[1]} frames")
        log(f"native forward+backward {t_native:.3f} s")
        if hf is not None:
            x_hf, mask_hf = _hf_inputs(native, x, run_lengths, mask)
            (ref_logits, ref_grads), t_hf = _step(lambda: _run_hf(hf, x_hf, mask_hf, targets, blank), repeats)
            grads64 = _run_hf(hf64, x_hf, mask_hf, targets, blank)[1] if hf64 is not None else None
            result["transformers_s"] = round(t_hf, 4)
            log(f"transformers forward+backward {t_hf:.3f} s  (native speedup {t_hf / t_native:.2f}x)")
            result["logits_abs"], result["logits_rel"] = _diff(logits, ref_logits)
            log(f"logits: max abs diff {result['logits_abs']:.3e}, max rel diff {result['logits_rel']:.3e}")
            result.update(_compare_grads(grads, ref_grads, grads64, cfg.model_type, per_tensor, log))
        summary["cases"][case] = result
    return summary
