"""Augmentation benchmark: what [augment] adds to a training step, against the step itself.

    fastctc bench augment                         # CPU: wav2vec2-base layout at base width, batch 4 x 1.5 s
    fastctc bench augment --batch 32 --seconds 3  # the TIMIT cards' batch
    fastctc bench augment --size tiny             # a 2-layer encoder (the cost is then a larger share)

Providers, timed side by side in alternating order on one batch in memory:
  step        one fastctc training step without augmentation (as `fastctc bench step` times it: forward,
              fastctc.kernels.ctc_loss, backward, clip, fused AdamW, schedule);
  speed       fastctc.data.augment.Augmenter with speed perturbation alone (a factor of 0.9 or 1.1 drawn
              for every batch: the resampling always runs), then the rows normalised again;
  reverb      reverberation alone on every utterance (FFT convolution with one of 8 generated
              impulse responses of 0.5 s), normalised again;
  noise       noise alone on every utterance (a stretch of 60 s of generated coloured noise at 5-20 dB);
  all         the three together.
Each augmentation row gives its median as a share of the step's median. The noise and impulse responses
are generated into a temporary folder and read the way a run reads them. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..config import AugmentConfig
from ..data.augment import Augmenter
from ..data.batching import Batch
from ..models import CTCModel, EncoderConfig
from ..train.precision import resolve_precision
from .pairs import BASE, GROUP_POST_LN, RECIPE, TINY, VOCAB, audio_batch, targets_for
from .step import fastctc_step
from .timing import alternate, environment, setup_device

SR = 16_000


def write_files(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """noise/: 60 s of pink-ish noise in 6 files; rir/: 8 impulse responses of 0.5 s (exponential decays,
    RT60 0.2-0.8 s)."""
    rng = np.random.default_rng(seed)
    noise, rir = folder / "noise", folder / "rir"
    noise.mkdir()
    rir.mkdir()
    for i in range(6):
        white = rng.standard_normal(10 * SR)
        spectrum = np.fft.rfft(white) / np.sqrt(np.arange(1, 5 * SR + 2))  # 1/f power
        sf.write(noise / f"n{i}.wav", (np.fft.irfft(spectrum, 10 * SR) * 30).astype(np.float32), SR, subtype="FLOAT")
    t = np.arange(SR // 2) / SR
    for i, rt60 in enumerate(np.linspace(0.2, 0.8, 8)):
        h = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
        h[0] = 3 * np.abs(h).max()  # the direct path
        sf.write(rir / f"r{i}.wav", (h / np.abs(h).max()).astype(np.float32), SR, subtype="FLOAT")
    return noise, rir


def augmenters(encoder: EncoderConfig, noise: Path, rir: Path, device: torch.device) -> dict[str, Augmenter]:
    speed = dict(speed_prob=1.0, speed_factors=[0.9, 1.1])
    reverb = dict(rir_prob=1.0, rir_dir=str(rir), rir_max_s=0.5)
    add = dict(noise_prob=1.0, noise_dir=str(noise), snr_db=[5.0, 20.0])
    settings = {"speed": speed, "reverb": reverb, "noise": add, "all": {**speed, **reverb, **add}}
    return {name: Augmenter(AugmentConfig(**kw), encoder, SR, True, device, seed=0) for name, kw in settings.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        prog="fastctc bench augment",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[1:]),
    )
    ap.add_argument("--size", choices=("tiny", "base"), default="base", help="encoder width (wav2vec2-base layout)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=1.5, help="audio per row (rows from it down to 90%%)")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per provider (default 7)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs per provider first (default 1)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = ap.parse_args(argv)
    device = setup_device(args)

    torch.manual_seed(0)
    width = TINY if args.size == "tiny" else BASE
    keys = {k: v for k, v in RECIPE.items() if not k.startswith("ctc_")}
    encoder = EncoderConfig(**width, **GROUP_POST_LN, **keys, vocab_size=VOCAB, pad_token_id=VOCAB - 1)
    model = CTCModel(encoder).to(device).train()
    model.freeze_feature_encoder()
    waves, lengths = audio_batch(args.batch, args.seconds)
    targets, target_lengths = targets_for(model, lengths)
    host = Batch(waves, lengths, targets, target_lengths, ["x"] * args.batch)
    on_device = [t.to(device) for t in (waves, lengths, targets, target_lengths)]
    precision = resolve_precision("fp32", device)
    print(f"== augment: wav2vec2-base layout ({args.size}), batch {args.batch} x {args.seconds:g} s, fp32, {device}")
    with tempfile.TemporaryDirectory() as tmp:
        noise, rir = write_files(Path(tmp))
        augs = augmenters(encoder, noise, rir, device)
    providers = {"step": fastctc_step(model, model, *on_device, False, precision, device)}
    for name, aug in augs.items():
        providers[name] = lambda aug=aug: aug(host.waveforms.to(device, non_blocking=True), host)
    timings = alternate(providers, args.repeats, args.warmup, device)
    step_ms = timings["step"]["median_ms"]
    rows = []
    for name, t in timings.items():
        share = t["median_ms"] / step_ms
        rows.append(dict(provider=name, share_of_step=share, **t))
        print(
            f"  {name:8s} median {t['median_ms']:9.1f} ms  p20 {t['p20_ms']:9.1f}  p80 {t['p80_ms']:9.1f}"
            + ("" if name == "step" else f"  {100 * share:5.1f}% of the step")
        )
    report = {"bench": "augment", **environment(device), "size": args.size, "batch": args.batch}
    report.update(seconds=args.seconds, repeats=args.repeats, results=rows)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
