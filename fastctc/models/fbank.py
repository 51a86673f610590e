"""w2v-BERT 2.0's front end: 80-bin Kaldi-style log-mel fbank, normalised per utterance and mel bin,
stacked by 2 to 160 dims, computed batched on the model's device (what SeamlessM4TFeatureExtractor does
in NumPy, one utterance at a time), and its frame arithmetic.

Per 25 ms frame (400 samples, hop 160, no centring: Kaldi's snip_edges), on the waveform scaled to
16-bit integers (x * 2^15):
    frame -= mean(frame)                                  Kaldi's remove_dc_offset
    frame[1:] -= 0.97 * frame[:-1]; frame[0] *= 0.03      pre-emphasis inside the frame
    frame *= hann(400, symmetric) ** 0.85                 Povey's window
    power = |rfft(frame, 512)|^2                          (257,)
    fbank = log(max(mel_banks @ power, 2^-23))            80 triangles, triangular in Kaldi's mel scale, 20 Hz-8 kHz
Then per utterance and mel bin, over its own frames: (fbank - mean) / sqrt(var (ddof 1) + 1e-7); padded
frames are 0; frames (2t, 2t+1) are concatenated to stacked frame t (an odd last frame is stacked with a
zero frame and masked out, as the extractor's attention mask does).
"""

from __future__ import annotations

import math

import torch
from torch import nn

SAMPLE_RATE = 16000
WINDOW = 400  # samples per fbank frame (25 ms)
HOP = 160  # samples between frames (10 ms)
N_FFT = 512
N_MELS = 80
STACK = 2  # fbank frames per model frame
PREEMPHASIS = 0.97
MEL_FLOOR = 1.192092955078125e-07  # float32 epsilon, the extractor's (and Kaldi's) floor before the log
NORM_EPS = 1e-7


def fbank_frames(num_samples):
    """Kaldi fbank frames of `num_samples` (ints or integer tensors): 1 + (N - 400) // 160, 0 below 400."""
    if isinstance(num_samples, torch.Tensor):
        return torch.where(num_samples >= WINDOW, (num_samples - WINDOW) // HOP + 1, 0)
    return (num_samples - WINDOW) // HOP + 1 if num_samples >= WINDOW else 0


def stacked_frames(num_samples):
    """Model frames (stacked pairs of fbank frames) of `num_samples`: the ones the extractor's attention
    mask keeps, fbank_frames // 2 (an odd last fbank frame is padded to a pair and masked out)."""
    return fbank_frames(num_samples) // STACK


def _kaldi_mel(hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


def mel_banks() -> torch.Tensor:
    """(257, 80) float64 triangular filters, as mel_filter_bank(..., mel_scale="kaldi",
    triangularize_in_mel_space=True): the triangles' corners are evenly spaced in mel between mel(20 Hz)
    and mel(8 kHz), and each FFT bin is placed at its centre frequency's mel value."""
    edges = torch.linspace(
        _kaldi_mel(torch.tensor(20.0, dtype=torch.float64)).item(),
        _kaldi_mel(torch.tensor(SAMPLE_RATE / 2, dtype=torch.float64)).item(),
        N_MELS + 2,
        dtype=torch.float64,
    )  # (82,)
    bins = _kaldi_mel(torch.arange(N_FFT // 2 + 1, dtype=torch.float64) * (SAMPLE_RATE / N_FFT))[:, None]  # (257, 1)
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]  # (80,) each
    rising = (bins - left) / (centre - left)
    falling = (right - bins) / (right - centre)
    return torch.minimum(rising, falling).clamp(min=0.0)


def povey_window() -> torch.Tensor:
    """(400,) float64: a symmetric Hann window to the power 0.85 (Kaldi's "povey")."""
    n = torch.arange(WINDOW, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(2 * math.pi * n / (WINDOW - 1))) ** 0.85


class FbankFrontEnd(nn.Module):
    """(B, N) waveforms in [-1, 1] -> (B, T, 160) normalised, stacked log-mel fbank features.

    It holds no parameters (the window and the mel filters are non-persistent buffers), so a checkpoint
    has no key for it. Every step is per frame or a masked reduction over a row's own frames, so a row's
    features do not depend on its batch mates or its padding."""

    def __init__(self):
        super().__init__()
        self.register_buffer("window", povey_window().float(), persistent=False)
        self.register_buffer("banks", mel_banks().float(), persistent=False)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return stacked_frames(lengths)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """waveforms (B, N), lengths (B,) samples or None (full rows) -> (B, ceil(F / 2), 160) with F the
        fbank frames of N. Computed in at least float32 whatever the autocast state (a bf16 log-mel loses
        the detail the normalisation then amplifies); float64 waveforms give float64 features."""
        B, N = waveforms.shape
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            fbank = self._log_mel(waveforms.to(torch.promote_types(waveforms.dtype, torch.float32)))  # (B, F, 80)
            F_ = fbank.shape[1]
            n = fbank_frames(lengths.long()) if lengths is not None else torch.full((B,), F_, device=fbank.device)
            valid = (torch.arange(F_, device=fbank.device)[None, :] < n[:, None])[..., None]  # (B, F, 1)
            fbank = self._normalise(fbank, valid, n)
        if F_ % STACK:
            fbank = torch.cat((fbank, fbank.new_zeros(B, STACK - F_ % STACK, N_MELS)), dim=1)
        return fbank.reshape(B, -1, STACK * N_MELS)  # (B, T, 160)

    def _log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, F, 80) log-mel energies of every whole frame, in x's dtype."""
        if x.shape[1] < WINDOW:
            return x.new_zeros(x.shape[0], 0, N_MELS)
        frames = (x * 32768.0).unfold(-1, WINDOW, HOP)  # (B, F, 400), a view
        frames = frames - frames.mean(-1, keepdim=True)
        frames = torch.cat((frames[..., :1] * (1 - PREEMPHASIS), frames[..., 1:] - PREEMPHASIS * frames[..., :-1]), -1)
        spectrum = torch.fft.rfft(frames * self.window.to(x.dtype), n=N_FFT)  # (B, F, 257) complex
        power = spectrum.real.square() + spectrum.imag.square()
        return torch.log((power @ self.banks.to(x.dtype)).clamp(min=MEL_FLOOR))  # (B, F, 80)

    @staticmethod
    def _normalise(fbank: torch.Tensor, valid: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """Per row and mel bin over its valid frames: zero mean, unit variance (ddof 1, as the extractor's
        x.var(0, ddof=1)); padded frames 0. valid (B, F, 1), n (B,) valid frames."""
        count = n.to(fbank.dtype)[:, None, None]  # (B, 1, 1)
        mean = torch.where(valid, fbank, 0.0).sum(1, keepdim=True) / count.clamp(min=1)
        centred = torch.where(valid, fbank - mean, 0.0)
        var = centred.square().sum(1, keepdim=True) / (count - 1).clamp(min=1)  # one frame: stacks to none
        return centred * torch.rsqrt(var + NORM_EPS)
