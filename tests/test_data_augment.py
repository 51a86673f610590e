"""On-device augmentation (fastctc/data/augment.py) against independent references: speed perturbation
against soxr and the analytic sine, SNR against its definition computed in NumPy, reverberation against
numpy.convolve; lengths and CTC feasibility after a speed change; bounded shapes; bad files and keys."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from fastctc.config import AugmentConfig, load_config
from fastctc.data.audio import AudioError
from fastctc.data.augment import (
    Augmenter,
    ctc_needs,
    fft_length,
    mix_at_snr,
    prepare_rir,
    resample_speed,
    speed_filter,
    speed_length,
)
from fastctc.data.batching import Batch
from fastctc.data.corpora import ctc_min_frames
from fastctc.data.report import DataReport
from fastctc.errors import ConfigError
from fastctc.models import EncoderConfig
from fastctc.models.feature_encoder import frame_count

SR = 16_000
ENCODER = EncoderConfig()  # the cards' conv stack: 320 samples per frame, 400 for the first
CPU = torch.device("cpu")


def sine(n: int, hz: float, phase: float = 0.0) -> np.ndarray:
    return np.sin(2 * np.pi * hz * np.arange(n) / SR + phase).astype(np.float32)


def batch_of(rows: list[np.ndarray], labels: list[list[int]] | None = None) -> Batch:
    """A host Batch as the collator makes it: rows zero-padded to a whole frame, targets padded with 0."""
    n = -(-max(len(r) for r in rows) // ENCODER.frame_stride) * ENCODER.frame_stride
    waves = torch.zeros(len(rows), n)
    for i, r in enumerate(rows):
        waves[i, : len(r)] = torch.from_numpy(r)
    labels = labels or [[1] for _ in rows]
    targets = torch.zeros(len(rows), max(len(t) for t in labels), dtype=torch.long)
    for i, t in enumerate(labels):
        targets[i, : len(t)] = torch.tensor(t)
    return Batch(
        waves,
        torch.tensor([len(r) for r in rows]),
        targets,
        torch.tensor([len(t) for t in labels]),
        ["x"] * len(rows),
        ids=[f"utt{i}" for i in range(len(rows))],
    )


def augmenter(report: DataReport | None = None, do_normalize: bool = False, seed: int = 0, **kw) -> Augmenter:
    return Augmenter(AugmentConfig(**kw), ENCODER, SR, do_normalize, CPU, seed=seed, report=report)


def peak_hz(x: np.ndarray) -> float:
    """The sine's frequency from the Hann-windowed spectrum's peak, refined by a parabola through the
    log magnitudes of the three bins around it (zero-padded 8x)."""
    n = 8 * len(x)
    mag = np.log(np.abs(np.fft.rfft(x * np.hanning(len(x)), n)) + 1e-30)
    k = int(np.argmax(mag))
    a, b, c = mag[k - 1], mag[k], mag[k + 1]
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * SR / n


# ---- speed -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor, ratio", [(0.9, (9, 10)), (1.1, (11, 10)), (1.05, (21, 20))])
def test_speed_matches_soxr_on_a_sine_in_frequency_and_length(factor, ratio):
    rows = [sine(16_000, 440.0), sine(11_111, 3_000.0, phase=0.3)]  # unequal lengths: row 1 is padded
    aug = augmenter(speed_prob=1.0, speed_factors=[factor])
    waves, lengths = aug(batch_of(rows).waveforms, batch_of(rows))
    for row, hz, got, n in zip(rows, (440.0, 3_000.0), waves, lengths.tolist()):
        ref = soxr.resample(row, *ratio, quality="VHQ")  # soxr at rate a -> b plays it a / b as fast
        assert n == len(ref) == speed_length(len(row), *ratio)
        got = got.numpy()
        inner = slice(256, n - 256)  # both zero-pad at the ends; their edge transients (soxr: longer filter) differ
        np.testing.assert_allclose(got[inner], ref[inner], atol=2e-4)
        assert abs(peak_hz(got[:n]) - hz * factor) < 0.5 and abs(peak_hz(ref) - hz * factor) < 0.5
        assert not got[n:].any()  # padding stays zero
    assert waves.shape[1] % ENCODER.frame_stride == 0 and waves.shape[1] >= max(lengths.tolist())


def test_speed_filter_phases_reproduce_the_analytic_sine():
    """Independent of soxr: each output sample is the band-limited input at time m * a / b."""
    a, b = 11, 10
    weight, pad = speed_filter(a, b)
    x = torch.from_numpy(sine(8_000, 1_234.0))[None]
    y = resample_speed(x, a, b, weight, pad)[0].numpy()
    m = np.arange(len(y))
    expected = np.sin(2 * np.pi * 1_234.0 * m * a / b / SR)
    np.testing.assert_allclose(y[64:-64], expected[64:-64], atol=1e-4)


def test_padded_lengths_are_a_function_of_the_sampler_shape_and_the_factor():
    """Bounded shapes: every batch of padded length N leaves the speed change at the same N'."""
    aug = augmenter(speed_prob=1.0, speed_factors=[0.9])
    rng = np.random.default_rng(0)
    seen = {}
    for _ in range(6):
        rows = [rng.standard_normal(int(n)).astype(np.float32) for n in rng.integers(9_000, 9_600, 3)]
        batch = batch_of(rows)
        waves, _ = aug(batch.waveforms, batch)
        seen.setdefault(batch.waveforms.shape[1], set()).add(waves.shape[1])
    assert all(len(out) == 1 for out in seen.values()), seen
    for n, (out,) in seen.items():
        assert out == -(-speed_length(n, 9, 10) // 320) * 320


def test_a_speed_up_that_makes_an_utterance_ctc_infeasible_keeps_the_batch_at_speed_1(capsys):
    n = 16_000  # 49 frames; at 1.1x 14,545 samples make 45 frames
    assert frame_count(n, ENCODER) == 49 and frame_count(speed_length(n, 11, 10), ENCODER) == 45
    labels = [1, 2] * 23 + [3]  # 47 labels, no repeats: fits 49 frames, not 45
    assert ctc_min_frames(labels) == 47
    report = DataReport()
    aug = augmenter(report, speed_prob=1.0, speed_factors=[1.1])
    rows = [sine(n, 500.0), sine(8_000, 500.0)]
    batch = batch_of(rows, [labels, [1, 1, 2]])
    assert ctc_needs(batch.targets, batch.target_lengths).tolist() == [47, 4]  # the repeat needs a blank
    waves, lengths = aug(batch.waveforms, batch)
    assert lengths.tolist() == [n, 8_000] and torch.equal(waves, batch.waveforms)
    assert report.counts["train"]["speed_kept"] == 1 and "speed_kept" not in report.summary("train").split("skipped")[0]
    assert "utt0 at speed 11/10: 45 frames" in capsys.readouterr().err
    batch = batch_of(rows, [labels[:40], [1, 1, 2]])  # 40 labels fit 45 frames: this batch speeds up
    waves, lengths = aug(batch.waveforms, batch)
    assert lengths.tolist() == [speed_length(n, 11, 10), speed_length(8_000, 11, 10)]


# ---- noise -------------------------------------------------------------------------------------------


def snr_db(speech: np.ndarray, noise: np.ndarray) -> float:
    return 10 * np.log10(np.sum(speech.astype(np.float64) ** 2) / np.sum(noise.astype(np.float64) ** 2))


def test_mixed_signal_has_the_target_snr_over_its_own_samples():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.standard_normal((3, 4_000)).astype(np.float32))
    noise = torch.from_numpy(rng.standard_normal((3, 4_000)).astype(np.float32) * [[0.1], [3.0], [1.0]])
    lengths = [4_000, 2_500, 1_000]
    for i, n in enumerate(lengths):
        x[i, n:] = 0
    valid = torch.arange(4_000)[None, :] < torch.tensor(lengths)[:, None]
    target = torch.tensor([0.0, 7.5, -3.0])
    y = mix_at_snr(x, noise, valid, target, torch.tensor([1.0, 1.0, 0.0]))
    for i, n in enumerate(lengths[:2]):
        added = (y[i] - x[i]).numpy()
        assert abs(snr_db(x[i, :n].numpy(), added[:n]) - float(target[i])) < 0.1
        assert not added[n:].any()  # no noise in the padding
    assert torch.equal(y[2], x[2])  # not drawn: unchanged


def write_wavs(folder, signals: dict[str, np.ndarray]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, x in signals.items():
        sf.write(folder / name, x, SR, subtype="FLOAT")
    return folder


def test_noise_from_a_folder_at_the_drawn_snr_looped_when_short(tmp_path):
    rng = np.random.default_rng(2)
    folder = write_wavs(tmp_path / "noise", {"a.wav": rng.standard_normal(3_000).astype(np.float32) * 0.2})
    aug = augmenter(noise_prob=1.0, noise_dir=str(folder), snr_db=[6.0, 6.0])
    rows = [sine(9_000, 300.0), sine(5_000, 800.0)]
    batch = batch_of(rows)
    waves, lengths = aug(batch.waveforms, batch)
    bank = sf.read(folder / "a.wav", dtype="float32")[0]
    for i, n in enumerate(lengths.tolist()):
        added = (waves[i] - batch.waveforms[i]).numpy()
        assert abs(snr_db(rows[i], added[:n]) - 6.0) < 0.1
        assert not added[n:].any()
        # a stretch of the file, looped: every sample is the bank's, 3,000 samples on
        gain = np.abs(added[:n]).max() / np.abs(bank).max()
        np.testing.assert_allclose(added[3_000:n], added[: n - 3_000], atol=1e-5 * gain + 1e-7)


# ---- reverberation -----------------------------------------------------------------------------------


def test_rir_is_cropped_at_its_direct_path_and_has_unit_energy():
    h = np.array([0.01, -0.02, 0.0, 0.9, -0.3, 0.2, 0.1], dtype=np.float32)
    got = prepare_rir(h, max_samples=3)
    expected = h[3:6] / np.sqrt(np.sum(h[3:6].astype(np.float64) ** 2))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_reverberation_matches_numpy_convolve(tmp_path):
    rng = np.random.default_rng(3)
    decay = np.exp(-np.arange(2_000) / 300.0)
    rirs = {f"r{i}.wav": (rng.standard_normal(2_000) * decay * 0.5).astype(np.float32) for i in range(2)}
    folder = write_wavs(tmp_path / "rir", rirs)
    aug = augmenter(rir_prob=1.0, rir_dir=str(folder), rir_max_s=0.1)  # 1,600 taps of each
    prepared = [prepare_rir(sf.read(folder / name, dtype="float32")[0], 1_600) for name in sorted(rirs)]
    rows = [rng.standard_normal(7_000).astype(np.float32), rng.standard_normal(4_321).astype(np.float32)]
    batch = batch_of(rows)
    waves, lengths = aug(batch.waveforms, batch)
    assert lengths.tolist() == [7_000, 4_321]
    for i, n in enumerate(lengths.tolist()):
        got = waves[i].numpy()
        matches = [np.abs(got[:n] - np.convolve(rows[i], h)[:n]).max() for h in prepared]
        assert min(matches) < 1e-4 * np.abs(got).max(), matches  # one of the folder's responses, exactly
        assert not got[n:].any()  # the tail past the utterance is cut


def test_fft_length_is_the_next_5_smooth_size():
    def smooth(n):
        for p in (2, 3, 5):
            while n % p == 0:
                n //= p
        return n == 1

    for n in (1, 7, 17, 1_000, 16_001, 99_991):
        m = fft_length(n)
        assert m >= n and smooth(m) and not any(smooth(k) for k in range(n, m))


# ---- the whole augmenter -----------------------------------------------------------------------------


def all_on(tmp_path, **kw) -> dict:
    rng = np.random.default_rng(4)
    noise = write_wavs(tmp_path / "noise", {"n.wav": rng.standard_normal(5_000).astype(np.float32)})
    rir = write_wavs(
        tmp_path / "rir", {"h.wav": (rng.standard_normal(800) * np.exp(-np.arange(800) / 100)).astype(np.float32)}
    )
    return dict(speed_prob=0.7, rir_prob=0.5, rir_dir=str(rir), noise_prob=0.5, noise_dir=str(noise), **kw)


def test_normalised_rows_deterministic_for_a_seed_and_restored_from_its_generators(tmp_path):
    rng = np.random.default_rng(5)
    batches = [batch_of([rng.standard_normal(int(n)).astype(np.float32) for n in (9_000, 6_000)]) for _ in range(4)]
    a, b = (augmenter(do_normalize=True, seed=7, **all_on(tmp_path)) for _ in range(2))
    outs = [a(x.waveforms, x) for x in batches[:2]]
    for w, n in outs:
        for row, length in zip(w, n.tolist()):
            assert abs(float(row[:length].mean())) < 1e-4 and abs(float(row[:length].std(unbiased=False)) - 1) < 1e-3
            assert not row[length:].any()
    assert all(torch.equal(w1, w2) for (w1, _), (w2, _) in zip(outs, [b(x.waveforms, x) for x in batches[:2]]))
    states = {k: g.get_state() for k, g in a.generators().items()}
    later = [a(x.waveforms, x) for x in batches[2:]]
    c = augmenter(do_normalize=True, seed=99, **all_on(tmp_path))
    for k, g in c.generators().items():
        g.set_state(states[k])
    for (w1, n1), (w2, n2) in zip(later, [c(x.waveforms, x) for x in batches[2:]]):
        assert torch.equal(w1, w2) and torch.equal(n1, n2)
    other = augmenter(do_normalize=True, seed=8, **all_on(tmp_path))
    assert not all(torch.equal(w, other(x.waveforms, x)[0]) for (w, _), x in zip(outs, batches))


# ---- bad files and keys ------------------------------------------------------------------------------


def test_bad_noise_files_are_one_line_errors_naming_the_file(tmp_path):
    folder = tmp_path / "noise"
    write_wavs(folder, {"ok.wav": sine(1_000, 100.0), "silent.wav": np.zeros(800, np.float32)})
    with pytest.raises(AudioError, match=r"silent.wav: silent \(every sample 0\).*\(augment.noise_dir\)$"):
        augmenter(noise_prob=1.0, noise_dir=str(folder))
    (folder / "silent.wav").unlink()
    (folder / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match=r"junk.wav: not audio soundfile can read.*\(augment.noise_dir\)$"):
        augmenter(noise_prob=1.0, noise_dir=str(folder))
    (folder / "junk.wav").unlink()
    write_wavs(folder, {"nan.wav": np.array([0.1, np.nan, 0.2] * 100, np.float32)})
    with pytest.raises(AudioError, match=r"nan.wav: 100 non-finite samples"):
        augmenter(noise_prob=1.0, noise_dir=str(folder))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio")
    with pytest.raises(ConfigError, match=r"augment.rir_dir: no audio files \(.wav, .flac, .sph, .ogg\) under"):
        augmenter(rir_prob=1.0, rir_dir=str(empty))


@pytest.mark.parametrize(
    "override, message",
    [
        ("augment.speed_prob=1.5", r"augment.speed_prob: must be in \[0, 1\]"),
        ("augment.speed_factors=[0.9, 1.123457]", r"augment.speed_factors\[1\]: 1.123457 is not a ratio of integers"),
        ("augment.speed_factors=[3.0]", r"augment.speed_factors\[0\]: must be in \[0.5, 2\]"),
        ("augment.speed_factors=[]", r"augment.speed_factors: must list at least one factor"),
        ("augment.noise_prob=0.5", r"augment.noise_dir: augment.noise_prob=0.5 needs a folder of audio files"),
        ("augment.rir_dir=/nonexistent/rirs", r"augment.rir_dir: '/nonexistent/rirs' is not a directory"),
        ("augment.snr_db=[20.0, 5.0]", r"augment.snr_db: must be \[low, high\] in dB with low <= high"),
        ("augment.rir_max_s=0", r"augment.rir_max_s: must be > 0 seconds"),
        ("augment.noise_porb=0.5", r"unknown key augment.noise_porb; did you mean 'noise_prob'\?"),
    ],
)
def test_bad_augment_keys_are_one_line_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_augmentation_is_off_by_default_and_its_section_round_trips(tmp_path):
    from fastctc.config import dump_config

    cfg = load_config(None, ["augment.speed_prob=0.5", "augment.speed_factors=[0.95, 1.0, 1.05]"])
    assert not load_config(None).augment.enabled and cfg.augment.enabled
    (tmp_path / "run.toml").write_text(dump_config(cfg))
    assert "[augment]" in dump_config(cfg) and load_config(tmp_path / "run.toml") == cfg
