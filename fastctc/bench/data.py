"""Data benchmark: how much padding each batching wastes, and how fast the loader feeds a step.

    fastctc bench data                         # both parts; real recordings from ../shared/data if present
    fastctc bench data --part padding --seeds 20
    fastctc bench data --part loader --audio generated --files 32

Padding: the padded fraction (padding / padded audio) of fastctc's LengthBucketSampler, transformers'
group_by_length (Trainer's LengthGroupedSampler: megabatches of min(N / 4B, 50) x B indices, each
sorted by length; fastctc.data.stats.group_by_length_batches) and random batching, at batch 32 and at
a seconds budget (fastctc fills 32 x the mean duration of padded audio per batch; the others get the
batch size that gives the same number of batches). Median and p20/p80 over --seeds epochs. Durations:
  timit-like        4,620 utterances (TIMIT train, SA included): log-normal, median 2.95 s, sigma 0.3,
                    clipped to 0.9-7.8 s (TIMIT's range; the NLTK sample's 160 recordings: mean 3.06 s,
                    sd 0.78 s);
  librispeech-like  28,539 utterances (train-clean-100: 100.6 h, mean 12.69 s, 1.3-24.5 s): 75% around
                    the segmenter's ~15 s cut (normal 14.35 s, sd 1.6 s), 25% uniform 1.5-14 s, clipped,
                    then the recipe's 20 s cap; an approximation of the published statistics;
  <corpus> recordings  the real recordings' header durations, resampled to the corpus size
                    (when --data-root holds timit-sample/ or librispeech-mini/).

Loader: audio seconds delivered per wall second (real-time factor) by make_loader over LibriSpeech
FLAC and TIMIT WAV (the recordings, or generated speech-like files of the same durations), one torch
thread; fastctc in process (0 workers: exactly one core's work) and with 1 worker process (one core
plus the hand-over), against the collation transformers' recipe does (soundfile decode, then
Wav2Vec2FeatureExtractor: per-utterance normalisation and padding), in process. Goal:
>= 200x real time per worker core; padded fraction <= half of group_by_length's at batch 32.
The last line is one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..config import DataConfig
from ..data import synthetic
from ..data.audio import probe
from ..data.batching import LengthBucketSampler, make_loader, padded_length
from ..data.dataset import SpeechDataset, UtteranceInfo
from ..data.librispeech import read_librispeech
from ..data.report import DataReport
from ..data.stats import group_by_length_batches, padded_fraction, random_batches
from ..data.text import CharVocab
from ..data.timit import read_timit
from .timing import alternate, environment, quantile

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # ../shared/data of a checkout
SIZES = {"timit": 4620, "librispeech": 28539}
LOADER_GOAL = 200.0  # x real time per worker core
PADDING_GOAL = 0.5  # fastctc's padded fraction / group_by_length's, at batch 32


def timit_like(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.lognormal(np.log(2.95), 0.3, n), 0.9, 7.8)


def librispeech_like(n: int, rng: np.random.Generator) -> np.ndarray:
    body = rng.random(n) < 0.75
    d = np.where(body, rng.normal(14.35, 1.6, n), rng.uniform(1.5, 14.0, n))
    d = np.clip(d, 1.3, 24.5)
    return d[d <= 20.0]  # max_duration_in_seconds


def recordings(root: Path) -> dict[str, list[UtteranceInfo]]:
    """The real corpora under `root` that the readers recognise: {corpus: utterances}."""
    found = {}
    report = DataReport()
    if (root / "timit-sample").is_dir():
        found["timit"] = read_timit(root / "timit-sample", "all", report, "train")
    if (root / "librispeech-mini").is_dir():
        ls = root / "librispeech-mini"
        subsets = "+".join(p.name for p in sorted(ls.iterdir()) if p.is_dir())
        found["librispeech"] = read_librispeech(ls, subsets, report, "train")
    return found


# ---- padding -------------------------------------------------------------------------------------


def spread(values) -> dict:
    v = list(map(float, values))
    return {"median": statistics.median(v), "p20": quantile(v, 0.2), "p80": quantile(v, 0.8)}


def padding_rows(name: str, durations: np.ndarray, seeds: int, batch: int = 32) -> list[dict]:
    """Padded fractions of the three batchings, at `batch` utterances and at a seconds budget."""
    rows = []
    budget = batch * float(np.mean(durations))
    for label, b, seconds in ((f"batch {batch}", batch, 0.0), (f"{budget:.0f} s budget", batch, budget)):
        sampler = LengthBucketSampler(durations, 0, b, seconds)
        L = sampler.lengths
        ours = [
            padded_fraction([x for step in sampler.epoch_batches(e) for x in step], L, padded_length)
            for e in range(seeds)
        ]
        b_equal = max(1, round(len(L) / len(sampler))) if seconds else b  # same number of batches
        gbl = [padded_fraction(group_by_length_batches(L, b_equal, s), L) for s in range(seeds)]
        rnd = [padded_fraction(random_batches(len(L), b_equal, s), L) for s in range(seeds)]
        row = {
            "durations": name,
            "utterances": len(L),
            "batching": label,
            "batches": len(sampler),
            "other_batch_size": b_equal,
            "fastctc": spread(ours),
            "group_by_length": spread(gbl),
            "random": spread(rnd),
        }
        row["ratio_to_group_by_length"] = row["fastctc"]["median"] / row["group_by_length"]["median"]
        rows.append(row)
    return rows


def bench_padding(root: Path | None, seeds: int, scale: float, log=print) -> list[dict]:
    rng = np.random.default_rng(0)
    sets = {
        "timit-like": timit_like(int(SIZES["timit"] * scale), rng),
        "librispeech-like": librispeech_like(int(SIZES["librispeech"] * scale), rng),
    }
    for corpus, utts in (recordings(root) if root else {}).items():
        real = np.array([probe(u.path).duration for u in utts])
        sets[f"{corpus} recordings ({len(real)})"] = rng.choice(real, int(SIZES[corpus] * scale))
    rows = []
    log(
        f"{'durations':28s} {'N':>6s} {'batching':>14s} {'fastctc':>22s} {'group_by_length':>22s} "
        f"{'random':>22s} {'ratio':>6s}"
    )
    for name, d in sets.items():
        for row in padding_rows(name, d, seeds):
            rows.append(row)
            cells = " ".join(
                f"{row[k]['median']:7.2%} ({row[k]['p20']:5.2%}-{row[k]['p80']:5.2%})"
                for k in ("fastctc", "group_by_length", "random")
            )
            log(
                f"{name:28s} {row['utterances']:6d} {row['batching']:>14s} {cells} "
                f"{row['ratio_to_group_by_length']:6.2f}"
            )
    return rows


# ---- loader --------------------------------------------------------------------------------------


def generated_files(folder: Path, fmt: str, durations: list[float]) -> list[UtteranceInfo]:
    """Speech-like files (fastctc's synthetic corpus, words appended to reach each duration)."""
    utts = []
    for i, seconds in enumerate(durations):
        pieces, n, k = [], 0, 0
        while n < seconds * synthetic.SAMPLE_RATE:
            u = synthetic.make_utterance(0, "train", i * 100 + k)
            pieces.append(u.audio)
            n, k = n + len(u.audio), k + 1
        audio = np.concatenate(pieces)[: int(seconds * synthetic.SAMPLE_RATE)]
        path = folder / f"{fmt}-{i:04d}.{fmt}"
        sf.write(path, audio, synthetic.SAMPLE_RATE, subtype="PCM_16", format=fmt.upper())
        utts.append(UtteranceInfo(f"{fmt}-{i}", str(path), "a b c"))
    return utts


def dataset_of(utts: list[UtteranceInfo]) -> SpeechDataset:
    durations = [probe(u.path).duration for u in utts]
    return SpeechDataset(utts, [u.text.lower() for u in utts], durations, 16_000)


def transformers_collate(ds: SpeechDataset, batches: list[list[int]]):
    """The recipe's path: decode each file, Wav2Vec2FeatureExtractor normalises and pads the batch."""
    import transformers

    fe = transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    )

    def epoch():
        for b in batches:
            audios = [sf.read(ds.utterances[i].path, dtype="float32")[0] for i in b]
            fe(audios, sampling_rate=16_000, padding=True, return_tensors="pt")

    return epoch


def bench_loader(sources: dict[str, SpeechDataset], repeats: int, batch: int, log=print) -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core's work
    rows = []
    try:
        for name, ds in sources.items():
            audio_s = sum(ds.durations)
            sampler = LengthBucketSampler(ds.durations, 0, batch)
            vocab = CharVocab.from_transcripts(ds.texts)
            providers = {}
            for workers in (0, 1):
                loader = make_loader(ds, sampler, vocab, DataConfig(num_workers=workers))
                loader.verbose = False

                def epoch(loader=loader):
                    for _ in loader:
                        pass

                providers[f"fastctc {workers} worker{'s' if workers != 1 else ''}"] = epoch
            try:
                import transformers  # noqa: F401

                providers["transformers feature extractor"] = transformers_collate(ds, list(sampler))
            except ImportError:
                log("transformers is not installed: no side-by-side loader")
            log(f"-- {name}: {len(ds)} files, {audio_s / 60:.1f} min of audio, batch {batch}")
            timings = alternate(providers, repeats, warmup=1, log=log)
            for provider, t in timings.items():
                rtf = audio_s / (t["median_ms"] / 1e3)
                rows.append(
                    dict(
                        source=name,
                        files=len(ds),
                        audio_s=audio_s,
                        provider=provider,
                        realtime_x=rtf,
                        realtime_x_p20=audio_s / (t["p80_ms"] / 1e3),
                        realtime_x_p80=audio_s / (t["p20_ms"] / 1e3),
                        **t,
                    )
                )
                log(
                    f"  {provider:32s} median {t['median_ms']:8.1f} ms per epoch  {rtf:8.0f}x real time "
                    f"(p20-p80 {rows[-1]['realtime_x_p20']:.0f}-{rows[-1]['realtime_x_p80']:.0f}x)"
                )
    finally:
        torch.set_num_threads(threads)
    return rows


def loader_sources(root: Path | None, audio: str, files: int, tmp: Path) -> dict[str, SpeechDataset]:
    found = recordings(root) if root and audio == "recordings" else {}
    rng = np.random.default_rng(1)
    sources = {}
    for corpus, fmt, draw in (("librispeech", "flac", librispeech_like), ("timit", "wav", timit_like)):
        if corpus in found:
            utts = found[corpus][:files] if files else found[corpus]
            sources[f"{corpus} recordings ({fmt})"] = dataset_of(utts)
        else:
            n = files or 24
            sources[f"generated {fmt} ({corpus}-like durations)"] = dataset_of(
                generated_files(tmp, fmt, [float(x) for x in draw(n * 2, rng)[:n]])
            )
    return sources


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="fastctc bench data",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[1:]),
    )
    ap.add_argument("--part", choices=("all", "padding", "loader"), default="all")
    ap.add_argument(
        "--data-root",
        default=str(DEFAULT_DATA_ROOT),
        help="folder holding timit-sample/ and librispeech-mini/ (optional; default ../shared/data)",
    )
    ap.add_argument(
        "--audio",
        choices=("recordings", "generated"),
        default="recordings",
        help="loader input: the recordings under --data-root when there, else generated files",
    )
    ap.add_argument("--files", type=int, default=0, help="loader: at most this many files per format (0 = all)")
    ap.add_argument("--batch", type=int, default=8, help="loader batch size (default 8)")
    ap.add_argument("--repeats", type=int, default=5, help="loader: timed epochs per provider (default 5)")
    ap.add_argument("--seeds", type=int, default=10, help="padding: epochs / seeds per batching (default 10)")
    ap.add_argument("--scale", type=float, default=1.0, help="padding: corpus sizes x this (default 1)")
    return ap


def padding_part(root: Path | None, args) -> tuple[list[dict], dict]:
    """(rows, goal): the padded fraction per batching, and the worst ratio to group_by_length at batch 32."""
    print("padded fraction: median (p20-p80) over seeds; ratio = fastctc / group_by_length")
    rows = bench_padding(root, args.seeds, args.scale)
    worst = max((r for r in rows if r["batching"] == "batch 32"), key=lambda r: r["ratio_to_group_by_length"])
    ratio = worst["ratio_to_group_by_length"]
    return rows, {"worst": ratio, "durations": worst["durations"], "target": PADDING_GOAL, "met": ratio <= PADDING_GOAL}


def loader_part(root: Path | None, args) -> tuple[list[dict], dict]:
    """(rows, goal): audio seconds per wall second per source and provider, and fastctc's slowest."""
    print("\nloader: audio seconds per wall second, one torch thread")
    with tempfile.TemporaryDirectory() as tmp:
        sources = loader_sources(root, args.audio, args.files, Path(tmp))
        rows = bench_loader(sources, args.repeats, args.batch)
    worst = min((r for r in rows if r["provider"].startswith("fastctc")), key=lambda r: r["realtime_x"])
    return rows, {
        "worst": worst["realtime_x"],
        "source": worst["source"],
        "provider": worst["provider"],
        "target": LOADER_GOAL,
        "met": worst["realtime_x"] >= LOADER_GOAL,
    }


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    root = Path(args.data_root) if args.data_root and Path(args.data_root).is_dir() else None
    report = {"bench": "data", **environment("cpu"), "data_root": str(root) if root else None}
    goals = {}
    t0 = time.time()
    if args.part in ("all", "padding"):
        report["padding"], goals["padding_vs_group_by_length_at_32"] = padding_part(root, args)
    if args.part in ("all", "loader"):
        report["loader"], goals["loader_realtime_per_core"] = loader_part(root, args)
    report["goals"] = goals
    report["wall_s"] = time.time() - t0
    print("\ngoals:")
    for name, g in goals.items():
        print(
            f"  {name}: {g['worst']:.3g} (target {'<=' if 'padding' in name else '>='} {g['target']:g}): "
            f"{'met' if g['met'] else 'MISSED'}"
        )
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
