"""The strided conv feature encoder (raw audio -> frames) and the feature projection.

Parameter names mirror Transformers' Wav2Vec2FeatureEncoder / Wav2Vec2FeatureProjection so the
checkpoint key map stays a near-identity table.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import FBANK_FAMILIES, EncoderConfig
from .fbank import HOP, STACK, WINDOW, stacked_frames


def activation(name: str):
    return {
        "gelu": F.gelu,
        "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
        "relu": F.relu,
        "silu": F.silu,
        "swish": F.silu,  # transformers' ACT2FN name for SiLU, which conformer and w2v-BERT checkpoints use
    }[name]


class ConvLayer(nn.Module):
    """Conv1d -> optional norm -> activation. norm: "group" (GroupNorm, one group per channel),
    "layer" (LayerNorm over channels) or None.

    A "layer" conv layer runs on (B, C, 1, T) tensors in channels-last memory, i.e. (B, T, C) in memory:
    the conv is the Conv1d's weight applied as a (1, k) conv2d, which oneDNN and cuDNN run natively in
    that layout, and the LayerNorm over channels is a plain layer_norm of a contiguous (B, 1, T, C) view,
    so nothing is transposed or copied between layers (transformers' (B, C, T) layout needs two
    transposing copies per layer, forward and backward; README, "fastctc vs the Transformers recipe",
    has the step time each way). The other layers stay (B, C, T): with no LayerNorm there is no copy
    to save, and channels-last made their frozen forward slower, not faster.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, bias: bool, norm: str | None, act: str):
        super().__init__()
        self.kernel, self.stride, self.norm = kernel, stride, norm
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=bias)  # the checkpoint's parameter shapes
        if norm == "group":
            self.layer_norm = nn.GroupNorm(c_out, c_out, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(c_out, elementwise_affine=True)
        self.act = activation(act)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C_in, N) -> (B, C_out, N'), or channels-last (B, C_in, 1, N) -> (B, C_out, 1, N').

        lengths (B,): this layer's valid output frames per row. Given, a group norm takes its statistics
        over them alone (see masked_group_norm); every other layer is per-frame or reads only the frames
        its own valid outputs cover, so padding cannot reach the valid frames."""
        if x.dim() == 4:
            x = F.conv2d(x, self.conv.weight[:, :, None, :], self.conv.bias, stride=(1, self.stride))
            x = x.contiguous(memory_format=torch.channels_last)  # a no-op unless a backend chose otherwise
            to_channels_last, back = (0, 2, 3, 1), (0, 3, 1, 2)  # (B, 1, T, C) is contiguous
        else:
            x = self.conv(x)
            to_channels_last, back = (0, 2, 1), (0, 2, 1)
        if self.norm == "group":
            x = self.layer_norm(x) if lengths is None else masked_group_norm(x, lengths, self.layer_norm)
        elif self.norm == "layer":
            x = self.layer_norm(x.permute(*to_channels_last)).permute(*back)
        return self.act(x)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return conv_output_length(lengths, self.kernel, self.stride)


def masked_group_norm(x: torch.Tensor, lengths: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """A one-group-per-channel GroupNorm of (B, C, T) whose statistics (mean, biased variance) cover each
    row's first lengths[b] frames only: what the row computes unpadded, where nn.GroupNorm would take the
    padded zeros as audio. Computed in at least float32 (as autocast runs group_norm); the padded frames come out
    as the bias, and no valid frame of a later layer reads them."""
    T = x.shape[-1]
    valid = (torch.arange(T, device=x.device)[None, :] < lengths[:, None])[:, None, :]  # (B, 1, T)
    xf = x.to(torch.promote_types(x.dtype, torch.float32))  # at least float32
    n = lengths.clamp(min=1).to(xf.dtype)[:, None, None]  # (B, 1, 1)
    mean = torch.where(valid, xf, 0.0).sum(-1, keepdim=True) / n  # (B, C, 1)
    centred = torch.where(valid, xf - mean, 0.0)
    var = centred.square().sum(-1, keepdim=True) / n
    y = centred * torch.rsqrt(var + norm.eps) * norm.weight[:, None] + norm.bias[:, None]
    return y.to(x.dtype)


def conv_output_length(length, kernel: int, stride: int):
    """Frames a conv without padding makes of `length` samples: floor((L - k) / s) + 1. Ints or integer
    tensors (`//` floors both); <= 0 means shorter than the kernel."""
    return (length - kernel) // stride + 1


def adapter_output_length(length, kernel: int, stride: int):
    """Frames one w2v-BERT adapter layer keeps of `length` (ints or integer tensors), as transformers counts
    them: floor((L + 2 (k // 2) - k) / s) + 1 (its convs pad by s // 2; the two agree for its kernel 3, stride 2)."""
    return (length + 2 * (kernel // 2) - kernel) // stride + 1


def frame_count(num_samples: int, cfg: EncoderConfig) -> int:
    """Logit frames the encoder of `cfg` makes of `num_samples` (0 when shorter than its receptive field):
    what the data layer screens and batches by, without building the model; CTCModel.output_lengths is the
    same count on tensors. w2v-BERT: its stacked fbank frames (fbank.stacked_frames), then its adapter's
    subsampling."""
    if cfg.model_type in FBANK_FAMILIES:
        n = stacked_frames(num_samples)
        for _ in range(cfg.num_adapter_layers if cfg.add_adapter and n > 0 else 0):
            n = adapter_output_length(n, cfg.adapter_kernel_size, cfg.adapter_stride)
        return max(n, 0)
    n = num_samples
    for k, s in zip(cfg.conv_kernel, cfg.conv_stride):
        n = conv_output_length(n, k, s)
    return max(n, 0)


def min_samples(cfg: EncoderConfig) -> int:
    """The fewest samples that make one frame (the conv stack's receptive field, 400 for wav2vec2's):
    1 + sum_i (k_i - 1) * (product of the strides before layer i); frame_count is 0 below it. w2v-BERT:
    two fbank frames, 400 + 160, or the fewest pairs its adapter keeps a frame of."""
    if cfg.model_type in FBANK_FAMILIES:
        n = WINDOW + (STACK - 1) * HOP
        while frame_count(n, cfg) < 1:
            n += STACK * HOP
        return n
    n, hop = 1, 1
    for k, s in zip(cfg.conv_kernel, cfg.conv_stride):
        n, hop = n + (k - 1) * hop, hop * s
    return n


class FeatureEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        layers = []
        c_in = 1
        for i, (c, k, s) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride)):
            norm = "layer" if cfg.feat_extract_norm == "layer" else ("group" if i == 0 else None)
            layers.append(ConvLayer(c_in, c, k, s, cfg.conv_bias, norm, cfg.feat_extract_activation))
            c_in = c
        self.conv_layers = nn.ModuleList(layers)
        self.channels_last = cfg.feat_extract_norm == "layer"  # see ConvLayer

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N) -> (B, C, T). lengths (B,) samples: normalise over each row's own frames (group-norm
        stacks; the only layer padding can reach), so each row computes what it computes alone."""
        # Under torch.compile inductor picks conv layouts and fuses the transposes itself (and a forced
        # layout on the size-1 H dimension defeats its symbolic stride order), so it gets (B, C, T).
        if not self.channels_last or torch.compiler.is_compiling():
            x = waveforms[:, None, :]  # (B, 1, N)
            for layer in self.conv_layers:
                if lengths is not None:
                    lengths = layer.output_lengths(lengths)
                x = layer(x, lengths)
            return x
        x = waveforms[:, None, None, :].contiguous(memory_format=torch.channels_last)  # (B, 1, 1, N)
        for layer in self.conv_layers:
            x = layer(x)
        return x[:, :, 0, :]  # (B, T, C) in memory: its .transpose(1, 2) is contiguous

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for layer in self.conv_layers:
            lengths = layer.output_lengths(lengths)
        return lengths


class FeatureProjection(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        c = cfg.feature_projection_input_dim if cfg.model_type in FBANK_FAMILIES else cfg.conv_dim[-1]
        self.layer_norm = nn.LayerNorm(c, eps=cfg.layer_norm_eps) if cfg.feat_proj_layer_norm else None
        self.projection = nn.Linear(c, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.feat_proj_dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, D)
        if self.layer_norm is not None:
            features = self.layer_norm(features)
        return self.dropout(self.projection(features))
