"""ONNX benchmark: inference throughput of the exported graph in onnxruntime against fastctc eager and
transformers, on the same weights and the same padded batch.

    fastctc bench onnx                                  # wav2vec2-base layout at base width, CPU
    fastctc bench onnx --families wav2vec2-base wavlm-large --batch 4 --seconds 2 --threads 1

Per family, float32, forward only (eval mode, no gradient), three providers timed side by side in
alternating order:
  onnxruntime   the graph `fastctc export --onnx` writes (inference/onnx_export.py), CPUExecutionProvider
                with as many intra-op threads as torch uses
  fastctc       models.ctc_model.exact_logits, eager: what fastctc eval and transcribe run
  transformers  *ForCTC with the checkpoint's convention (a mask for layer-norm models, none for group-norm)
Prints median and p20/p80 per provider, audio seconds per second and the speed over transformers; the
last line is one JSON document. Needs fastctc[onnx] and transformers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..inference.onnx_export import INPUTS, require_onnx, trace_to_onnx
from ..models.ctc_model import exact_logits
from .pairs import FAMILIES, audio_batch, build_pair, uses_attention_mask
from .timing import alternate, environment


def onnx_session(native, directory: Path, onnxruntime):
    """The exported graph of `native` in an onnxruntime session with torch's thread count."""
    path = directory / "model.onnx"
    trace_to_onnx(native, path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def bench_family(family: str, size: str, batch: int, seconds: float, repeats: int, warmup: int, log=print) -> list:
    _, onnxruntime = require_onnx()
    hf, native = build_pair(family, size)
    hf, native = hf.eval(), native.eval()
    waves, lengths = audio_batch(batch, seconds)
    mask = (torch.arange(waves.shape[1])[None, :] < lengths[:, None]).long() if uses_attention_mask(native) else None
    feed = {INPUTS[0]: waves.numpy(), INPUTS[1]: lengths.numpy()}
    with tempfile.TemporaryDirectory() as tmp:
        session = onnx_session(native, Path(tmp), onnxruntime)
        with torch.no_grad():
            ref, frames = exact_logits(native, waves, lengths)
        got = session.run(None, feed)[0]
        diff = max(float(np.abs(got[i, :t] - ref[i, :t].numpy()).max()) for i, t in enumerate(frames.tolist()))
        log(
            f"== {family} ({size}: {native.config.hidden_size} wide, {native.config.num_hidden_layers} layers), "
            f"batch {batch} x {seconds:g} s, forward; onnxruntime vs fastctc max |logit difference| {diff:.2g}"
        )

        def no_grad(fn):
            def run():
                with torch.no_grad():
                    fn()

            return run

        providers = {
            "onnxruntime": lambda: session.run(None, feed),
            "fastctc": no_grad(lambda: exact_logits(native, waves, lengths)),
            "transformers": no_grad(lambda: hf(waves, attention_mask=mask).logits),
        }
        timings = alternate(providers, repeats, warmup, "cpu", log)
    audio_s = float(lengths.sum()) / 16_000
    ref_ms = timings["transformers"]["median_ms"]
    rows = []
    for name, t in timings.items():
        rows.append(
            dict(
                family=family,
                size=size,
                batch=batch,
                seconds=seconds,
                provider=name,
                audio_s_per_s=audio_s / (t["median_ms"] / 1e3),
                speedup_vs_transformers=ref_ms / t["median_ms"],
                max_abs_diff_vs_fastctc=diff if name == "onnxruntime" else None,
                **t,
            )
        )
        log(
            f"  {name:13s} median {t['median_ms']:9.1f} ms  p20 {t['p20_ms']:9.1f}  p80 {t['p80_ms']:9.1f}  "
            f"{rows[-1]['audio_s_per_s']:7.1f} audio-s/s  {rows[-1]['speedup_vs_transformers']:5.2f}x transformers"
        )
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        prog="fastctc bench onnx",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[1:]),
    )
    ap.add_argument("--families", nargs="+", choices=list(FAMILIES), default=["wav2vec2-base"])
    ap.add_argument("--size", choices=("tiny", "base"), default="base", help="tiny (smoke test) or base width")
    ap.add_argument("--batch", type=int, default=4, help="rows, from the longest down to 90%% of it (default 4)")
    ap.add_argument("--seconds", type=float, default=2.0, help="audio of the longest row (default 2.0)")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per provider (default 7)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per provider first (default 2)")
    ap.add_argument("--threads", type=int, default=0, help="torch and onnxruntime threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    _, onnxruntime = require_onnx()
    report = {
        "bench": "onnx",
        **environment("cpu"),
        "onnxruntime": onnxruntime.__version__,
        "size": args.size,
        "repeats": args.repeats,
        "results": [],
    }
    for family in args.families:
        report["results"] += bench_family(family, args.size, args.batch, args.seconds, args.repeats, args.warmup)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
