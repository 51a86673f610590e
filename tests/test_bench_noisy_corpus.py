"""bench noisy_corpus on a tiny synthetic FSDD: the test copy against a NumPy rebuild (np.convolve, the SNR),
held-out noise, coloured-noise slopes, RIR decay times (Schroeder), determinism, and fastctc's manifest reader."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fastctc.bench import noisy_corpus as nc
from fastctc.data.audio import load_audio
from fastctc.data.manifest import read_manifest
from fastctc.data.report import DataReport

SPEAKERS = {"ann": 2500.0, "bob": 3100.0, "cy": 3700.0}  # each speaker's test recordings: a tone of its own
TRAIN_HZ = 400.0  # every train recording: tones near this, far below every test tone
FSDD_SR = 8000


def write_fsdd(root: Path, rng: np.random.Generator) -> None:
    folder = root / "recordings"
    folder.mkdir(parents=True)
    t = np.arange(int(0.3 * FSDD_SR)) / FSDD_SR
    for speaker, test_hz in SPEAKERS.items():
        for digit in (1, 7):
            for index in (0, 1, 5, 6):  # 0-4: test, 5-49: train
                hz = test_hz if index < 5 else TRAIN_HZ * rng.uniform(0.8, 1.2)
                x = 0.3 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 6)) * np.hanning(len(t))
                sf.write(folder / f"{digit}_{speaker}_{index}.wav", x.astype(np.float32), FSDD_SR, subtype="PCM_16")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdd")
    write_fsdd(root, np.random.default_rng(0))
    out = root.parent / f"{root.name}-corpus"
    summary = nc.build(str(root), out, seed=3, babble_files=2, rirs=(2, 2), noise_seconds=2.0)
    return root, out, summary


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()]


def test_noisy_copy_is_the_clean_test_reverberated_then_mixed_at_the_stated_snr(corpus):
    root, out, _ = corpus
    listed = rows(out)
    assert len(listed) == len(SPEAKERS) * 2 * 2  # every test recording once
    assert {r["snr_db"] for r in listed} == set(nc.TEST_SNRS)
    for r in listed:
        clean = load_audio(str(root / "recordings" / f"{r['id']}.wav"), nc.SR).astype(np.float64)
        h = sf.read(out / r["rir"], dtype="float64")[0]
        h = h[np.argmax(np.abs(h)) :]
        h /= np.sqrt(np.sum(h**2))
        wet = np.convolve(clean, h)[: len(clean)]
        noisy = sf.read(out / r["audio"], dtype="float64")[0]
        added = noisy - wet
        source = sf.read(out / r["noise"], dtype="float64")[0]
        stretch = np.resize(np.roll(source, -r["noise_start"]), len(clean))
        gain = np.dot(added, stretch) / np.dot(stretch, stretch)
        np.testing.assert_allclose(added, gain * stretch, atol=1e-5)  # the noise is that stretch, scaled
        snr = 10 * math.log10(np.sum(wet**2) / np.sum(added**2))
        assert abs(snr - r["snr_db"]) < 0.1, (r["id"], snr)
        assert r["duration"] == pytest.approx(len(clean) / nc.SR)


def band_power(x: np.ndarray, lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / nc.SR)
    return float(spectrum[(f >= lo) & (f < hi)].sum())


def test_test_noise_is_held_out_and_babble_leaves_out_the_speaker(corpus):
    _, out, _ = corpus
    for r in rows(out):
        assert r["noise"].startswith("noise/test/") and r["rir"].startswith("rir/test/")
        if "babble" in r["noise"]:  # the babble file named for the speaker is the one that leaves it out
            assert r["noise"] == f"noise/test/babble_{r['speaker']}.wav"
    for path in sorted((out / "noise" / "train").glob("babble_*.wav")):
        x = sf.read(path)[0]
        assert band_power(x, 2000, 4000) < 1e-3 * band_power(x, 200, 700), path.name  # train recordings only
    for speaker, own_hz in SPEAKERS.items():
        x = sf.read(out / "noise" / "test" / f"babble_{speaker}.wav")[0]
        assert band_power(x, 200, 700) < 1e-3 * band_power(x, 2000, 4000)  # test recordings only
        own = band_power(x, own_hz - 100, own_hz + 100)
        for other, hz in SPEAKERS.items():
            if other != speaker:
                assert own < 1e-3 * band_power(x, hz - 100, hz + 100), (speaker, other)
    train = [sf.read(p)[0] for d in ("noise/train", "rir/train") for p in (out / d).iterdir()]
    for p in (p for d in ("noise/test", "rir/test") for p in (out / d).iterdir()):
        x = sf.read(p)[0]
        assert not any(len(x) == len(y) and np.allclose(x, y) for y in train), p  # no test file is a train file


@pytest.mark.parametrize("name", list(nc.COLOURS))
def test_coloured_noise_has_the_power_law_slope(name):
    alpha = nc.COLOURS[name]
    x = nc.coloured_noise(2**16, alpha, np.random.default_rng(1))
    assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-5)
    segments = x.reshape(16, -1).astype(np.float64)  # Bartlett's average of 16 periodograms
    psd = (np.abs(np.fft.rfft(segments, axis=1)) ** 2).mean(0)
    f = np.fft.rfftfreq(segments.shape[1], 1 / nc.SR)
    band = (f >= 50) & (f <= 5000)
    slope = np.polyfit(np.log10(f[band]), np.log10(psd[band]), 1)[0]
    assert slope == pytest.approx(-alpha, abs=0.1)


@pytest.mark.parametrize("rt60", [0.3, 0.7])
def test_synthetic_rir_decays_60_db_in_rt60(rt60):
    h = nc.synthetic_rir(rt60, np.random.default_rng(2)).astype(np.float64)
    assert np.argmax(np.abs(h)) == 0  # the direct path leads
    edc = np.cumsum((h**2)[::-1])[::-1]  # Schroeder's backward integral
    db = 10 * np.log10(edc / edc[0])
    t = np.arange(len(h)) / nc.SR
    fit = (db <= -5) & (db >= -25)  # T20, extrapolated to 60 dB
    slope = np.polyfit(t[fit], db[fit], 1)[0]
    assert -60 / slope == pytest.approx(rt60, rel=0.1)


def test_rt60s_are_drawn_in_the_stated_range_and_listed(corpus):
    _, out, summary = corpus
    stored = json.loads((out / "corpus.json").read_text())
    assert stored == json.loads(json.dumps(summary))
    for split in ("train", "test"):
        assert len(stored["rt60_s"][split]) == len(list((out / "rir" / split).iterdir())) == 2
        assert all(nc.RT60_RANGE[0] <= r <= nc.RT60_RANGE[1] for r in stored["rt60_s"][split])


def test_same_seed_same_samples_other_seed_other_noise(corpus, tmp_path):
    root, out, _ = corpus
    again = nc.build(str(root), tmp_path / "again", seed=3, babble_files=2, rirs=(2, 2), noise_seconds=2.0)

    def listing(folder):
        return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and p.name != "corpus.json")

    files = listing(out)
    assert files == listing(tmp_path / "again") and len(files) > 20
    for rel in files:
        if rel.suffix == ".wav":  # the bytes differ only in the PEAK chunk's timestamp
            assert np.array_equal(sf.read(out / rel)[0], sf.read(tmp_path / "again" / rel)[0]), rel
        else:
            assert (out / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel
    assert again["rt60_s"] == json.loads((out / "corpus.json").read_text())["rt60_s"]
    other = nc.build(str(root), tmp_path / "other", seed=4, babble_files=2, rirs=(2, 2), noise_seconds=2.0)
    assert other["rt60_s"] != again["rt60_s"]
    assert not np.array_equal(
        sf.read(tmp_path / "other" / "noisy" / "1_ann_0.wav")[0], sf.read(out / "noisy" / "1_ann_0.wav")[0]
    )


def test_manifest_reads_through_fastctc_and_refuses_a_used_folder(corpus):
    _, out, _ = corpus
    listed = read_manifest(out, "test.jsonl", DataReport(), "eval")
    assert sorted(u.text for u in listed) == sorted(["one", "seven"] * 2 * len(SPEAKERS))
    assert all(Path(u.path).is_file() and u.duration > 0 for u in listed)
    with pytest.raises(ValueError, match="not empty"):
        nc.build(str(out), out)
