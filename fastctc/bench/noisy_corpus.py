"""The measured-effects corpus: noise, impulse responses and a noisy, reverberant test copy, built from FSDD.

    fastctc bench noisy_corpus --root ../shared/data/fsdd --out runs/noisy-fsdd [--seed 0]

Written under OUT, every file 16 kHz float WAV, the same samples for the same input and seed (the bytes
differ only in the timestamp of libsndfile's PEAK chunk):

  noise/train/  babble_NN.wav: each the sum of BABBLE_TALKERS streams, one per distinct speaker, of that
                speaker's *train*-split recordings end to end (each stream at unit power); and
                {white,pink,brown}_NN.wav, Gaussian noise with power spectrum ~ 1 / f^alpha (alpha 0, 1, 2);
  noise/test/   babble_SPEAKER.wav from the *test*-split recordings of every speaker but SPEAKER (so an
                utterance is never mixed with its own speaker), and one file of each colour;
  rir/train/, rir/test/  synthetic room impulse responses: a direct path, then Gaussian noise under an
                exponential decay of 60 dB over RT60 seconds, RT60 drawn uniformly in RT60_RANGE;
  test.jsonl    the test split, each utterance reverberated by a rir/test/ response (cut at its direct
                path and scaled to unit energy, as training's augmentation does), then mixed with a stretch
                of a noise/test/ file at an SNR taken in turn from TEST_SNRS (the SNR of the reverberant
                speech over its own samples, as training's augmentation measures it); each row also names
                its noise, noise_start, rir and snr_db. `fastctc eval MODEL --data OUT/test.jsonl` reads it;
  corpus.json   what was built, with the seed and the ranges.

Held out: training's augmentation reads noise/train and rir/train only. Their babble comes from train-split
recordings, the test copy's from test-split ones; the coloured noise and the impulse responses come from
separate random streams per split (numpy SeedSequence([seed, stream])), so no test file is a training file.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import soundfile as sf

from ..data.audio import load_audio
from ..data.fsdd import read_fsdd
from ..data.report import DataReport
from ..errors import ConfigError

SR = 16_000
COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectral density ~ 1 / f^alpha
BABBLE_TALKERS = 4  # babble of 3-7 talkers is the usual range (e.g. the NOISEX/SpeechBrain babble sets)
RT60_RANGE = (0.2, 0.8)  # seconds: small rooms to a lecture hall
DIRECT_GAIN = 3.0  # the direct path's amplitude, in units of the reverberant tail's peak
TEST_SNRS = (5.0, 10.0, 15.0)
NOISE_SECONDS = 10.0
STREAMS = {"train_babble": 1, "train_colour": 2, "train_rir": 3, "test_babble": 4, "test_colour": 5, "test_rir": 6}
STREAMS["test_mix"] = 7


def rng_for(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, STREAMS[stream]]))


def power(x: np.ndarray) -> float:
    """Mean square, exactly rounded (math.fsum): the same value whatever numpy's summation order, so the
    corpus is the same samples for a seed."""
    return math.fsum(np.square(x, dtype=np.float64)) / len(x)


def coloured_noise(n: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) Gaussian noise whose power spectrum falls as 1 / f^alpha (DC gets the lowest bin's gain), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spectrum / f ** (alpha / 2), n)
    return (x / math.sqrt(power(x))).astype(np.float32)


def synthetic_rir(rt60: float, rng: np.random.Generator) -> np.ndarray:
    """(round(rt60 * SR),) an impulse response: a direct path, then noise decaying 60 dB over rt60 seconds
    (amplitude exp(-3 ln(10) t / rt60)); peak 1."""
    t = np.arange(max(2, round(rt60 * SR))) / SR
    h = rng.standard_normal(len(t)) * np.exp(-3 * math.log(10) * t / rt60)
    h[0] = DIRECT_GAIN * np.abs(h[1:]).max()
    return (h / np.abs(h).max()).astype(np.float32)


def babble(streams: list[list[np.ndarray]], n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) the sum of one stream per talker: that talker's recordings in random order, end to end (looped
    to n samples), each stream scaled to unit power; the sum scaled to unit RMS."""
    total = np.zeros(n, dtype=np.float64)
    for utterances in streams:
        order = rng.permutation(len(utterances))
        stream = np.concatenate([utterances[i] for i in order]).astype(np.float64)
        stream = np.resize(stream, n)  # loops a stream shorter than n
        total += stream / math.sqrt(power(stream))
    return (total / math.sqrt(power(total))).astype(np.float32)


def reverberate(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """(len(x),) x convolved with h (FFT), the tail past x's end cut, as training's augmentation does."""
    n = len(x) + len(h) - 1
    return np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(h, n), n)[: len(x)].astype(np.float32)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """speech + g noise with 10 log10(sum speech^2 / sum (g noise)^2) = snr_db (noise as long as speech)."""
    gain = math.sqrt(power(speech) / (power(noise) * 10 ** (snr_db / 10)))
    return (speech + gain * noise).astype(np.float32)


def read_split(root: str, part: str) -> dict[str, list[tuple[str, str, np.ndarray]]]:
    """FSDD split `part` at 16 kHz, by speaker: {speaker: [(id, text, audio), ...]} (ids sorted)."""
    by_speaker: dict[str, list] = {}
    for u in read_fsdd(root, part, DataReport(), part):
        by_speaker.setdefault(u.speaker, []).append((u.id, u.text, load_audio(u.path, SR)))
    return by_speaker


def write(path: Path, audio: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, SR, subtype="FLOAT")
    return str(path)


def write_noise(out: Path, train: dict, test: dict, seed: int, train_files: int, seconds: float) -> dict[str, Path]:
    """noise/train and noise/test, files of `seconds`; returns the test noise files by name (babble_SPEAKER, white, ...)."""
    n = int(seconds * SR)
    speakers = sorted(train)
    rng = rng_for(seed, "train_babble")
    talkers = min(BABBLE_TALKERS, len(speakers))
    for i in range(train_files):
        chosen = rng.choice(len(speakers), talkers, replace=False)
        streams = [[a for _, _, a in train[speakers[k]]] for k in sorted(chosen)]
        write(out / "noise" / "train" / f"babble_{i:02d}.wav", babble(streams, n, rng))
    rng = rng_for(seed, "train_colour")
    for i in range(2):
        for name, alpha in COLOURS.items():
            write(out / "noise" / "train" / f"{name}_{i:02d}.wav", coloured_noise(n, alpha, rng))
    test_noise, rng = {}, rng_for(seed, "test_babble")
    for speaker in sorted(test):
        others = [[a for _, _, a in test[s]] for s in sorted(test) if s != speaker][:BABBLE_TALKERS]
        test_noise[f"babble_{speaker}"] = out / "noise" / "test" / f"babble_{speaker}.wav"
        write(test_noise[f"babble_{speaker}"], babble(others, n, rng))
    rng = rng_for(seed, "test_colour")
    for name, alpha in COLOURS.items():
        test_noise[name] = out / "noise" / "test" / f"{name}.wav"
        write(test_noise[name], coloured_noise(n, alpha, rng))
    return test_noise


def write_rirs(out: Path, seed: int, counts: dict[str, int]) -> dict[str, list[tuple[Path, float]]]:
    """rir/train and rir/test: {split: [(path, rt60), ...]}."""
    written = {}
    for split, count in counts.items():
        rng = rng_for(seed, f"{split}_rir")
        rt60s = rng.uniform(*RT60_RANGE, size=count)
        written[split] = [
            (Path(write(out / "rir" / split / f"rir_{i:02d}.wav", synthetic_rir(float(rt60), rng))), float(rt60))
            for i, rt60 in enumerate(rt60s)
        ]
    return written


def noisy_row(out: Path, u: tuple, speaker: str, noise: tuple[str, Path], rir: Path, snr_db: float, rng) -> dict:
    """One test utterance made reverberant and noisy, written to noisy/ID.wav: its manifest row."""
    uid, text, audio = u
    h = sf.read(rir, dtype="float64")[0]
    h = h[int(np.argmax(np.abs(h))) :]  # augment.prepare_rir's crop at the direct path and unit energy,
    wet = reverberate(audio, h / math.sqrt(power(h) * len(h)))  # with the sum exactly rounded
    source = sf.read(noise[1], dtype="float32")[0]
    start = int(rng.integers(0, max(1, len(source) - len(wet))))
    stretch = np.resize(np.roll(source, -start), len(wet)).astype(np.float64)  # looped when shorter
    audio_path = write(out / "noisy" / f"{uid}.wav", mix_at_snr(wet, stretch, snr_db))
    rel = {k: str(Path(p).relative_to(out)) for k, p in (("audio", audio_path), ("noise", noise[1]), ("rir", rir))}
    row = {"id": uid, "text": text, "speaker": speaker, "duration": round(len(wet) / SR, 6), **rel}
    return {**row, "noise_start": start, "snr_db": snr_db}


def write_test_copy(out: Path, test: dict, test_noise: dict[str, Path], rirs: list, seed: int) -> list[dict]:
    """test.jsonl: every test utterance reverberated and noisy; SNRs, noise kinds and RIRs taken in turn."""
    rng = rng_for(seed, "test_mix")
    kinds = ["babble", *COLOURS]
    rows = []
    utterances = sorted(((u, s) for s in test for u in test[s]), key=lambda us: us[0][0])  # by id
    for i, (u, speaker) in enumerate(utterances):
        kind = kinds[i % len(kinds)]
        name = f"babble_{speaker}" if kind == "babble" else kind
        rir, snr_db = rirs[(i // len(kinds)) % len(rirs)][0], TEST_SNRS[i % len(TEST_SNRS)]  # every pairing occurs
        rows.append(noisy_row(out, u, speaker, (name, test_noise[name]), rir, snr_db, rng))
    with open(out / "test.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


def build(
    root: str,
    out: str | Path,
    seed: int = 0,
    babble_files: int = 8,
    rirs: tuple[int, int] = (8, 4),
    noise_seconds: float = NOISE_SECONDS,
) -> dict:
    """Build the corpus under `out` (see the module doc): `babble_files` training babble files, `rirs`
    (train, test) impulse responses, noise files of `noise_seconds`; returns what corpus.json holds."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out: {out} is not empty; give a new folder (the corpus is rebuilt from scratch)")
    train, test = read_split(root, "train"), read_split(root, "test")
    if len(test) < 2:
        raise ConfigError(f"--root: {root}: the test split has {len(test)} speaker(s); babble needs 2 or more")
    test_noise = write_noise(out, train, test, seed, babble_files, noise_seconds)
    written = write_rirs(out, seed, {"train": rirs[0], "test": rirs[1]})
    rows = write_test_copy(out, test, test_noise, written["test"], seed)
    summary = {
        "seed": seed,
        "source": str(root),
        "sample_rate": SR,
        "rt60_range_s": list(RT60_RANGE),
        "rt60_s": {split: [round(r, 4) for _, r in w] for split, w in written.items()},
        "test_snrs_db": list(TEST_SNRS),
        "babble_talkers": BABBLE_TALKERS,
        "noise_seconds": noise_seconds,
        "noise_train": sorted(p.name for p in (out / "noise" / "train").iterdir()),
        "noise_test": sorted(p.name for p in (out / "noise" / "test").iterdir()),
        "test_utterances": len(rows),
        "train_augment": {
            "augment.noise_dir": str(out / "noise" / "train"),
            "augment.rir_dir": str(out / "rir" / "train"),
        },
    }
    (out / "corpus.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        prog="fastctc bench noisy_corpus",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[1:]),
    )
    ap.add_argument("--root", required=True, help="an FSDD folder (ROOT/recordings/*.wav)")
    ap.add_argument("--out", required=True, help="a new folder for the corpus")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    summary = build(args.root, args.out, args.seed)
    print(
        f"== noisy corpus: {len(summary['noise_train'])} training noise files, {len(summary['noise_test'])} test "
        f"noise files, RIRs {len(summary['rt60_s']['train'])} train / {len(summary['rt60_s']['test'])} test "
        f"(RT60 {RT60_RANGE[0]}-{RT60_RANGE[1]} s), {summary['test_utterances']} noisy test utterances at "
        f"{'/'.join(f'{s:g}' for s in TEST_SNRS)} dB -> {args.out}"
    )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
