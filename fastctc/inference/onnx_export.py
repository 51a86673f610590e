"""ONNX export of a finished CTC model (`fastctc export MODEL --onnx OUT.onnx`), checked by onnxruntime.

The graph is the one inference forward, `models.ctc_model.exact_logits`:

    input_values   (batch, samples) float32  waveforms at 16 kHz, each normalised as the metadata says,
                                             then zero-padded to the longest
    input_lengths  (batch,) int64            each row's samples before padding
 -> logits         (batch, frames, vocab)    float32, before log-softmax
    logit_lengths  (batch,) int64            each row's valid frames

Batch and length are dynamic. Each row's logits are what it gives alone and unpadded (padding is masked
out of attention, zeroed before the positional conv, and kept out of a group norm's statistics), so a
batch of mixed lengths decodes as each utterance alone. Everything else a runtime needs to feed and
decode the model (normalisation, the checkpoint's attention-mask convention, vocabulary, blank, frame
stride) is in the file's metadata_props, as strings (`onnx_metadata`).

The graph is traced by torch's TorchScript-based exporter (dynamo=False): it runs on every torch we
support (>= 2.4) and needs no onnxscript. The torch.export-based exporter (dynamo=True, the default since
torch 2.9; its tutorial asks for torch >= 2.5) gives the same logits and exports more slowly (README);
when a torch release drops the TorchScript exporter, switch to it with dynamic_shapes.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..data.audio import NORMALISE_EPS
from ..data.batching import pad_waveforms
from ..errors import FastCTCError
from ..models.ctc_model import CTCModel, exact_logits
from ..models.feature_encoder import min_samples
from .model import LoadedModel

OPSET = 17  # the first with LayerNormalization as one op; onnxruntime >= 1.14 runs it
INPUTS, OUTPUTS = ("input_values", "input_lengths"), ("logits", "logit_lengths")
SAMPLE_RATE = 16_000
CHECK_RTOL = 1e-4  # max |onnxruntime - fastctc| over max |fastctc logit|, on the export's own check batch


@dataclass(frozen=True)
class OnnxExport:
    """What export_onnx wrote and how onnxruntime's logits compared with fastctc's."""

    path: Path
    bytes: int
    check_rows: list[int]  # samples per row of the check batch (mixed lengths, padded)
    max_abs_diff: float  # over every row's valid frames
    rel_diff: float  # max_abs_diff / max |fastctc logit|


class _ExactForward(nn.Module):
    """exact_logits as a module with the graph's input order, for the tracer."""

    def __init__(self, model: CTCModel):
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor, input_lengths: torch.Tensor):
        return exact_logits(self.model, input_values, input_lengths)


def require_onnx():
    """(onnx, onnxruntime), or one line naming the extra that installs them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise FastCTCError(
            f"ONNX export needs the onnx and onnxruntime packages ({e.name} is missing): pip install 'fastctc[onnx]'"
        ) from None
    return onnx, onnxruntime


def normalisation_text(do_normalize: bool) -> str:
    if do_normalize:
        return (
            f"per utterance, before padding: (x - mean(x)) / sqrt(var(x) + {NORMALISE_EPS:g}), mean and biased "
            "variance over the utterance's own samples (Wav2Vec2FeatureExtractor with do_normalize=true)"
        )
    return "none: the waveform as read, in [-1, 1] (Wav2Vec2FeatureExtractor with do_normalize=false)"


def attention_mask_text(lm: LoadedModel) -> str:
    norm = lm.model.config.feat_extract_norm
    if lm.attention_mask:
        convention = (
            f"the checkpoint is fed an attention mask (return_attention_mask=true, {norm}-norm feature encoder)"
        )
    else:
        convention = (
            f"the checkpoint is fed no attention mask (return_attention_mask=false, {norm}-norm feature encoder): "
            "transformers sees a padded batch's padding as audio"
        )
    return (
        f"{convention}. This graph takes input_lengths instead of a mask and is exact either way: each row's "
        "logits are those of the row alone, unpadded (one unpadded utterance: input_lengths = its samples)"
    )


def onnx_metadata(lm: LoadedModel) -> dict[str, str]:
    """The metadata_props of the exported file: how to feed the graph and decode its logits."""
    cfg, vocab = lm.model.config, lm.vocab
    decoding = (
        "phones: argmax per frame over each row's first logit_lengths frames, merge repeats, drop blank_id and "
        "special_ids, join the tokens with spaces (Wav2Vec2PhonemeCTCTokenizer)"
        if vocab.phones
        else "characters: argmax per frame over each row's first logit_lengths frames, merge repeats, drop "
        "blank_id and special_ids, concatenate the tokens, '|' is a space (Wav2Vec2CTCTokenizer)"
    )
    return {
        "producer": f"fastctc {__version__}",
        "model_type": cfg.model_type,
        "inputs": "input_values (batch, samples) float32: waveforms, normalised as `normalization` says, "
        "zero-padded; input_lengths (batch,) int64: each row's samples before padding",
        "outputs": "logits (batch, frames, vocab) float32 before log-softmax; "
        "logit_lengths (batch,) int64: each row's valid frames (those after it are padding)",
        "sampling_rate": str(SAMPLE_RATE),
        "do_normalize": json.dumps(lm.do_normalize),
        "normalization": normalisation_text(lm.do_normalize),
        "return_attention_mask": json.dumps(lm.attention_mask),
        "attention_mask": attention_mask_text(lm),
        "frame_stride_samples": str(cfg.frame_stride),
        "min_samples": str(min_samples(cfg)),  # fewer samples make no frame
        "vocab": json.dumps(vocab.tokens, ensure_ascii=False),
        "blank_id": str(lm.blank),
        "special_ids": json.dumps(sorted(vocab.specials)),
        "tokenizer": "phonemes" if vocab.phones else "characters",
        "decoding": decoding,
    }


def check_batch(lm: LoadedModel, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of three mixed lengths (0.4-0.75 s), none the trace's: the dynamic axes at work."""
    rng = np.random.default_rng(seed)
    n = max(min_samples(lm.model.config) * 4, SAMPLE_RATE * 3 // 4)
    audios = [(0.1 * rng.standard_normal(k)).astype(np.float32) for k in (n, n * 8 // 15, n * 11 // 15)]
    return pad_waveforms(audios, lm.do_normalize)


def compare_runtime(lm: LoadedModel, path: Path, onnxruntime) -> tuple[list[int], float, float]:
    """(check rows, max abs diff, relative diff) of onnxruntime's logits against fastctc's, valid frames only."""
    waves, lengths = check_batch(lm)
    with torch.no_grad():
        ref, frames = exact_logits(lm.model, waves, lengths)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, logit_lengths = session.run(list(OUTPUTS), {INPUTS[0]: waves.numpy(), INPUTS[1]: lengths.numpy()})
    if logit_lengths.tolist() != frames.tolist():
        raise FastCTCError(
            f"{path}: onnxruntime gives {logit_lengths.tolist()} frames for rows of {lengths.tolist()} samples, "
            f"fastctc {frames.tolist()}; the export is wrong, please report it"
        )
    diff = max(float(np.abs(logits[i, :t] - ref[i, :t].numpy()).max()) for i, t in enumerate(frames.tolist()))
    scale = max(float(ref.abs().max()), 1e-30)
    return lengths.tolist(), diff, diff / scale


def trace_to_onnx(model: CTCModel, path: Path) -> None:
    """Trace exact_logits into `path` with dynamic batch, samples and frames."""
    n = max(min_samples(model.config) * 4, SAMPLE_RATE)
    example = (torch.zeros(2, n).normal_(generator=torch.Generator().manual_seed(1)), torch.tensor([n, n * 3 // 5]))
    axes = {
        "input_values": {0: "batch", 1: "samples"},
        "input_lengths": {0: "batch"},
        "logits": {0: "batch", 1: "frames"},
        "logit_lengths": {0: "batch"},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's (see the module doc)
        torch.onnx.export(
            _ExactForward(model).eval(),  # the exporter restores this mode recursively: it must be eval
            example,
            str(path),
            dynamo=False,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes=axes,
            opset_version=OPSET,
        )


def export_onnx(lm: LoadedModel, out) -> OnnxExport:
    """Write `lm` (a model read by inference.model.load_model) to the ONNX file `out` with its metadata,
    then run it in onnxruntime on a padded batch of mixed lengths: an export whose logits differ from
    fastctc's by more than CHECK_RTOL (relative) is removed and reported."""
    onnx, onnxruntime = require_onnx()
    out = Path(out)
    if out.suffix != ".onnx":
        raise FastCTCError(f"--onnx {out}: name the file with the .onnx suffix, e.g. {out.with_suffix('.onnx')}")
    if not out.parent.is_dir():
        raise FastCTCError(f"--onnx {out}: the folder {out.parent} does not exist; create it first")
    model = lm.model.to("cpu").eval()
    trace_to_onnx(model, out)
    proto = onnx.load(str(out), load_external_data=False)  # weights over 2 GB stay in their own files
    proto.producer_name, proto.producer_version = "fastctc", __version__
    onnx.helper.set_model_props(proto, onnx_metadata(lm))
    onnx.save(proto, str(out))
    rows, diff, rel = compare_runtime(lm, out, onnxruntime)
    if not rel <= CHECK_RTOL:
        out.unlink()
        raise FastCTCError(
            f"{out}: onnxruntime's logits differ from fastctc's by {diff:.3g} ({rel:.3g} of the largest logit, "
            f"more than {CHECK_RTOL:g}); the file was removed, please report it with the model's config.json"
        )
    return OnnxExport(out, out.stat().st_size, rows, diff, rel)
