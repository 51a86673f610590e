"""The built-in synthetic corpus: deterministic, held-out, and speech-like in the ways the demo relies on."""

import numpy as np

from fastctc.data import synthetic
from fastctc.data.synthetic import ALPHABET, SAMPLE_RATE, make_utterance


def test_utterances_are_pure_functions_of_their_arguments():
    a, b = make_utterance(7, "train", 3), make_utterance(7, "train", 3)
    assert a.text == b.text and np.array_equal(a.audio, b.audio)
    assert a.audio.dtype == np.float32 and np.isfinite(a.audio).all()
    assert make_utterance(8, "train", 3).text != a.text or not np.array_equal(
        make_utterance(8, "train", 3).audio, a.audio
    )


def test_held_out_split_shares_no_utterance_with_train():
    train = synthetic.make_split(0, "train", 100)
    held = synthetic.make_split(0, "eval", 100)
    assert not {tuple(u.audio[:64]) for u in train} & {tuple(u.audio[:64]) for u in held}
    assert len({u.text for u in train + held}) > 190  # texts are random, not a small fixed set
    assert set("".join(u.text for u in train)) == set(ALPHABET) | {" "}


def test_letters_have_distinct_spectra_and_durations_vary():
    rng = np.random.default_rng(0)
    spk = synthetic._Speaker(f0=120.0, scale=1.0, tempo=1.0, gain=0.3, snr_db=30.0)

    def centroid(ch):
        x = synthetic._render_letter(ch, spk, rng)
        spec = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
        return float((spec * freqs).sum() / spec.sum())

    assert centroid("s") > 3500 > centroid("i") and centroid("u") < 1200 < centroid("i")
    durations = [len(make_utterance(1, "train", i).audio) / SAMPLE_RATE for i in range(50)]
    assert 0.4 < min(durations) < max(durations) < 4.0 and np.std(durations) > 0.2


def test_audio_carries_background_noise():
    u = make_utterance(0, "eval", 0)
    head = u.audio[: int(0.04 * SAMPLE_RATE)]  # the leading pause is silence + noise only
    assert 0 < np.sqrt(np.mean(head**2)) < 0.2 * np.sqrt(np.mean(u.audio**2))
