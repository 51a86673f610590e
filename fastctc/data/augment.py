"""On-device waveform augmentation of the training split: speed perturbation, reverberation, additive noise.

The step hands a batch to the device, then `Augmenter` changes it there, before the model (steps.py):

1. speed (one factor per batch, SpeechBrain's SpeedPerturb): the whole (B, N) batch resampled by a
   polyphase windowed-sinc filter; factor f = a / b plays the audio f times as fast, so a row of L
   samples becomes round(L * b / a) (soxr's output length) and the batch is padded to N' = round(N * b / a)
   rounded up to a whole frame: a function of (N, f), so each of the sampler's shapes has at most one
   counterpart per factor (bounded shapes under torch.compile). The factor is drawn on the host (the
   shape depends on it); a batch in which it would leave an utterance fewer frames than CTC needs for
   its transcript keeps speed 1 (counted in the data report as speed_kept), so the loss sees no
   utterance the screen would have left out;
2. reverberation, per utterance: convolution (FFT) with a room impulse response, cut to the utterance's
   length (the tail past its end is dropped, so lengths stay);
3. noise, per utterance: a random stretch of a noise file (looped when shorter) scaled so that
   10 log10(P_speech / P_noise) is the drawn SNR, powers over the utterance's own samples;
4. with data.do_normalize, each utterance normalised again over its own samples (as the loader did),
   padding zero.

Per-utterance draws come from a generator on the device, the speed draw from one on the host; both are
seeded from (train.seed, rank) and saved in the checkpoint, so a run is the same for a seed and across
--resume, and turning augmentation on shifts no dropout or SpecAugment draw. Nothing reads a device value
back: the lengths after a speed change are computed on the host from the batch's host lengths.

Noise and impulse-response files are read once, when the run starts, into one device tensor each.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AugmentConfig, speed_ratio
from ..errors import ConfigError
from ..models.config import EncoderConfig
from ..models.feature_encoder import frame_count
from .audio import AudioError, load_audio
from .report import DataReport

AUDIO_SUFFIXES = (".wav", ".flac", ".sph", ".ogg")  # what soundfile reads (audio.py)

# Speed filter: a Kaiser-windowed sinc, 12 zero crossings each side, beta 8.6, cut-off at 97% of the lower
# Nyquist frequency. Against soxr's VHQ on sines up to 6 kHz the difference is below 1e-4 of full scale.
ZERO_CROSSINGS = 12
KAISER_BETA = 8.6
ROLLOFF = 0.97


# ---- speed -------------------------------------------------------------------------------------------


def speed_length(n, a: int, b: int):
    """Samples of `n` after speed a / b: round(n * b / a), halves up, as soxr rounds (ints or int tensors)."""
    return (2 * n * b + a) // (2 * a)


def speed_filter(a: int, b: int) -> tuple[torch.Tensor, int]:
    """The polyphase filter of speed a / b: weights (b, 1, W) for conv1d with stride a, and the left pad P.

    Output m sits at input time t = m * a / b. Writing m = k * b + j, t = k * a + j * a / b: phase j has a
    fixed fractional offset, so with x padded by P on the left, y[k * b + j] = sum_i x_pad[k * a + i] h(t - n)
    with t - n = j * a / b + P - i, one conv1d output channel per phase. h is a lowpass at
    fc = ROLLOFF * min(1, b / a) (of the input's Nyquist), h(tau) = fc sinc(fc tau) w(tau), zero beyond
    |tau| = ZERO_CROSSINGS / fc.
    """
    fc = ROLLOFF * min(1.0, b / a)
    half = ZERO_CROSSINGS / fc
    pad = math.ceil(half)
    j = torch.arange(b, dtype=torch.float64)[:, None]
    i = torch.arange(2 * pad + a, dtype=torch.float64)[None, :]
    tau = j * a / b + pad - i  # (b, W)
    inside = (tau / half).clamp(-1, 1)
    window = torch.special.i0(KAISER_BETA * torch.sqrt(1 - inside**2)) / torch.special.i0(torch.tensor(KAISER_BETA))
    h = torch.where(tau.abs() <= half, fc * torch.sinc(fc * tau) * window, torch.zeros_like(tau))
    return h.float()[:, None, :], pad


def resample_speed(waves: torch.Tensor, a: int, b: int, weight: torch.Tensor, pad: int) -> torch.Tensor:
    """(B, N) -> (B, speed_length(N, a, b)): the batch played a / b times as fast (speed_filter's weights)."""
    B, N = waves.shape
    M = speed_length(N, a, b)
    frames = -(-M // b)
    right = (frames - 1) * a + weight.shape[-1] - N - pad  # >= 0: the last frame's window ends past the audio
    x = F.pad(waves[:, None, :], (pad, max(right, 0)))  # (B, 1, N + pad + right)
    y = F.conv1d(x, weight, stride=a)  # (B, b, frames): y[:, j, k] is output k * b + j
    return y.transpose(1, 2).reshape(B, frames * b)[:, :M]


# ---- reverberation and noise -------------------------------------------------------------------------


def fft_length(n: int) -> int:
    """The smallest 2^i 3^j 5^k >= n (sizes the FFT does fastest)."""
    best, p2 = 2 * n, 1
    while p2 < 2 * n:
        p3 = p2
        while p3 < 2 * n:
            p5 = p3
            while p5 < n:
                p5 *= 5
            best = min(best, p5)
            p3 *= 3
        p2 *= 2
    return best


def reverberate(waves: torch.Tensor, rirs: torch.Tensor) -> torch.Tensor:
    """(B, N) convolved row by row with impulse responses (B, K), cut to N: y = (x * h)[:N] (FFT)."""
    N, K = waves.shape[1], rirs.shape[1]
    n = fft_length(N + K - 1)
    return torch.fft.irfft(torch.fft.rfft(waves, n) * torch.fft.rfft(rirs, n), n)[:, :N]


def mix_at_snr(
    waves: torch.Tensor, noise: torch.Tensor, valid: torch.Tensor, snr_db: torch.Tensor, apply: torch.Tensor
) -> torch.Tensor:
    """waves (B, N) + noise (B, N) scaled so that each row's SNR over its valid samples (valid: (B, N) bool)
    is snr_db (B,), in the rows where apply (B,) is true. SNR = 10 log10(sum x^2 / sum (g n)^2)."""
    valid = valid.to(waves.dtype)
    speech = (waves.square() * valid).sum(1)  # (B,)
    noise = noise * valid
    power = noise.square().sum(1).clamp(min=1e-20)  # a silent stretch gets gain 0, not NaN
    gain = torch.sqrt(speech / (power * 10.0 ** (snr_db / 10)))  # (B,)
    return waves + (gain * apply)[:, None] * noise


def normalise_rows(waves: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Each row (x - mean) / sqrt(var + 1e-7) over its valid samples (audio.normalise_audio), padding 0."""
    valid = valid.to(waves.dtype)
    count = valid.sum(1, keepdim=True).clamp(min=1)
    mean = (waves * valid).sum(1, keepdim=True) / count
    var = ((waves - mean).square() * valid).sum(1, keepdim=True) / count
    return (waves - mean) / torch.sqrt(var + 1e-7) * valid


# ---- the files, read once ----------------------------------------------------------------------------


def read_folder(folder: str, key: str, sample_rate: int) -> list[tuple[str, np.ndarray]]:
    """Every audio file under `folder` (recursively, sorted) as (path, (N,) float32 at sample_rate). A file
    that is unreadable, non-finite or silent is an AudioError naming it and `key`; no file a ConfigError."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not paths:
        raise ConfigError(f"{key}: no audio files ({', '.join(AUDIO_SUFFIXES)}) under {folder}")
    files = []
    for path in paths:
        try:
            audio = load_audio(str(path), sample_rate)
        except AudioError as e:
            raise AudioError(e.name, f"{e.problem} ({key})", e.reason) from None
        bad = int(np.count_nonzero(~np.isfinite(audio)))
        if bad:
            raise AudioError(
                str(path), f"{bad} non-finite samples (NaN or inf); fix or remove it ({key})", "non_finite"
            )
        if not np.any(audio):
            raise AudioError(str(path), f"silent (every sample 0): it adds nothing; remove it ({key})", "unreadable")
        files.append((str(path), audio))
    return files


def prepare_rir(h: np.ndarray, max_samples: int) -> np.ndarray:
    """An impulse response from its direct path (the largest |h|, so the speech is not delayed), cropped
    to max_samples, scaled to unit energy (sum h^2 = 1): white input keeps its power."""
    h = h[int(np.argmax(np.abs(h))) :][:max_samples].astype(np.float64)
    return (h / np.sqrt(np.sum(h**2))).astype(np.float32)


def rir_bank(folder: str, sample_rate: int, max_s: float, device: torch.device) -> torch.Tensor:
    """(R, K): every impulse response under `folder`, prepared, zero-padded to the longest."""
    rirs = [
        prepare_rir(h, max(1, int(max_s * sample_rate))) for _, h in read_folder(folder, "augment.rir_dir", sample_rate)
    ]
    bank = np.zeros((len(rirs), max(len(h) for h in rirs)), dtype=np.float32)
    for i, h in enumerate(rirs):
        bank[i, : len(h)] = h
    return torch.from_numpy(bank).to(device)


def noise_bank(folder: str, sample_rate: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every noise file under `folder`, end to end: (samples (T,), starts (R,), lengths (R,)) on the device."""
    files = [audio for _, audio in read_folder(folder, "augment.noise_dir", sample_rate)]
    lengths = torch.tensor([len(x) for x in files], dtype=torch.long)
    starts = torch.cumsum(lengths, 0) - lengths
    return torch.from_numpy(np.concatenate(files)).to(device), starts.to(device), lengths.to(device)


# ---- the step's augmentation -------------------------------------------------------------------------


def _seed(seed: int, rank: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, rank, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


def ctc_needs(targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """(B,) frames CTC needs per target row (B, S): one per label plus one between repeated labels
    (corpora.ctc_min_frames, on a padded batch)."""
    S = targets.shape[1]
    inside = torch.arange(1, S)[None, :] < target_lengths[:, None]  # (B, S - 1): both labels are real
    repeats = ((targets[:, 1:] == targets[:, :-1]) & inside).sum(1)
    return target_lengths + repeats


class Augmenter:
    """The training split's augmentation (AugmentConfig), on `device`; see the module doc.

    `augmenter(waves, batch)`: waves (B, N) on the device (the batch's hand-off), batch the loader's host
    Batch; returns (waves (B, N'), lengths (B,)) on the device, N' = N unless the batch's speed changed.
    """

    def __init__(
        self,
        cfg: AugmentConfig,
        encoder: EncoderConfig,
        sample_rate: int,
        do_normalize: bool,
        device: torch.device,
        seed: int,
        rank: int = 0,
        report: DataReport | None = None,
    ):
        self.cfg, self.encoder, self.do_normalize, self.device = cfg, encoder, do_normalize, device
        self.sample_rate = sample_rate
        self.report = report or DataReport()
        self.frame = encoder.frame_stride
        self.host = torch.Generator().manual_seed(_seed(seed, rank, 0))
        self.draws = torch.Generator(device=device).manual_seed(_seed(seed, rank, 1))
        self.speeds = []  # (a, b, filter weights on the device, left pad) per factor
        for a, b in (speed_ratio(f) for f in cfg.speed_factors):
            weight, pad = speed_filter(a, b)
            self.speeds.append((a, b, weight.to(device), pad))
        self.rirs = rir_bank(cfg.rir_dir, sample_rate, cfg.rir_max_s, device) if cfg.rir_prob > 0 else None
        self.noise = noise_bank(cfg.noise_dir, sample_rate, device) if cfg.noise_prob > 0 else None

    def describe(self) -> str:
        """One line for the start of a run: what is on, and the device memory the files take."""
        parts = []
        if self.cfg.speed_prob > 0:
            parts.append(f"speed {self.cfg.speed_factors} (p={self.cfg.speed_prob:g} per batch)")
        if self.rirs is not None:
            parts.append(f"{len(self.rirs)} impulse responses (p={self.cfg.rir_prob:g})")
        if self.noise is not None:
            samples = self.noise[0].numel()
            parts.append(
                f"{len(self.noise[1])} noise files ({samples / self.sample_rate:.1f} s, {samples * 4 / 2**20:.1f} MiB "
                f"on the device; p={self.cfg.noise_prob:g}, SNR {self.cfg.snr_db[0]:g}-{self.cfg.snr_db[1]:g} dB)"
            )
        return "augmentation: " + ", ".join(parts)

    def generators(self) -> dict[str, torch.Generator]:
        """The random streams a checkpoint saves and a resume restores."""
        return {"augment_host": self.host, "augment_device": self.draws}

    def _speed(self, batch) -> tuple[int, int, torch.Tensor, int] | None:
        """The batch's speed (a, b, weight, pad), or None: drawn on the host, kept at 1 when it makes an
        utterance CTC-infeasible."""
        u = torch.rand((), generator=self.host)
        k = int(torch.randint(len(self.speeds), (), generator=self.host))
        a, b, weight, pad = self.speeds[k]
        if float(u) >= self.cfg.speed_prob or a == b:
            return None
        lengths = speed_length(batch.lengths, a, b)
        frames = torch.tensor([frame_count(int(n), self.encoder) for n in lengths])
        short = frames < ctc_needs(batch.targets, batch.target_lengths)
        if bool(short.any()):  # host tensors: no device sync
            i = int(short.nonzero()[0, 0])
            name = batch.ids[i] if i < len(batch.ids) else f"row {i}"
            self.report.add("train", "speed_kept", f"{name} at speed {a}/{b}: {int(frames[i])} frames")
            return None
        return a, b, weight, pad

    def __call__(self, waves: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = batch.lengths  # (B,) host
        speed = self._speed(batch) if self.cfg.speed_prob > 0 else None
        if speed is not None:
            a, b, weight, pad = speed
            lengths = speed_length(lengths, a, b)
            if self.device.type == "cuda":  # a copy from pageable memory would wait for the device
                lengths = lengths.pin_memory()
            waves = resample_speed(waves, a, b, weight, pad)  # (B, round(N b / a))
            padded = -(-waves.shape[1] // self.frame) * self.frame
            waves = F.pad(waves, (0, padded - waves.shape[1]))
        B, N = waves.shape
        lengths = lengths.to(self.device, non_blocking=True)
        valid = torch.arange(N, device=self.device)[None, :] < lengths[:, None]  # (B, N)
        waves = waves * valid  # the filter's tail past each row's end
        if self.rirs is not None:
            apply = torch.rand(B, generator=self.draws, device=self.device) < self.cfg.rir_prob
            pick = torch.randint(len(self.rirs), (B,), generator=self.draws, device=self.device)
            wet = reverberate(waves, self.rirs[pick]) * valid
            waves = torch.where(apply[:, None], wet, waves)
        if self.noise is not None:
            waves = self._add_noise(waves, valid)
        if self.do_normalize:
            waves = normalise_rows(waves, valid)
        return waves, lengths

    def _add_noise(self, waves: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        B, N = waves.shape
        samples, starts, sizes = self.noise
        apply = torch.rand(B, generator=self.draws, device=self.device) < self.cfg.noise_prob
        pick = torch.randint(len(sizes), (B,), generator=self.draws, device=self.device)
        u = torch.rand(B, generator=self.draws, device=self.device)
        low, high = self.cfg.snr_db
        snr = low + (high - low) * torch.rand(B, generator=self.draws, device=self.device)
        size = sizes[pick]  # (B,)
        offset = (u * size).long().clamp(max=size - 1)
        at = (offset[:, None] + torch.arange(N, device=self.device)[None, :]) % size[:, None]  # (B, N), looped
        return mix_at_snr(waves, samples[starts[pick][:, None] + at], valid, snr, apply.to(waves.dtype))
