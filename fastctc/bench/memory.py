"""Memory model: what one bf16 training step of XLS-R 300M / 1B / 2B and MMS-1b holds on one GPU, with and
without gradient checkpointing, and whether it fits 80 GB. Predicted, not measured (`fastctc bench cost`
prints it; nothing is allocated).

Terms, per step:
- weights: fp32 master weights, 4 B per parameter; gradients 4 B and AdamW's two moments 8 B per trainable
  parameter (fused AdamW, fp32 state);
- bf16 weight copies: autocast casts each weight on the gradient path once per step, 2 B per parameter
  (the frozen feature encoder runs without gradient, so its copies are transient);
- activations: the bytes autograd saves for backward, counted on the meta device in bf16 (each storage
  once; a pre-LN layer's residual stream and every matmul input are bf16 under autocast, so bf16 is what a
  step keeps), plus the CTC loss's fp32 log-probabilities and gradient (B, T, V). Attention is counted as
  the fused kernels a GPU runs save it (flash / memory-efficient attention: q, k, v, output, log-sum-exp),
  not the T x T probabilities of the meta device's math path;
- with gradient checkpointing (`model.gradient_checkpointing`): each layer keeps only its input, and one
  layer's activations are rebuilt at a time in backward;
- backward working set: one layer's activations again (the gradients flowing through the layer being
  differentiated).
Not counted: the CUDA context, cuBLAS workspaces and the caching allocator's fragmentation; "fits" leaves
10% of the 80 GB (GiB) for them.
"""

from __future__ import annotations

import dataclasses

import torch

from ..models import CTCModel, EncoderConfig
from ..models.hf_adapter import adapter_parameters
from ..models.transformer import Attention, EncoderLayer

GIB = 2**30
BUDGET = 0.9 * 80 * GIB  # one 80 GB card, 10% left for what the model does not count
VOCAB = 64  # a language's character vocabulary (the head is a rounding error at these sizes)

# The checkpoints' config.json sizes: facebook/wav2vec2-xls-r-300m, -1b, -2b; facebook/mms-1b-all is
# XLS-R 1B's shape with 16-wide attention adapters. Every one is pre-LN with a layer-norm conv stack.
_XLSR = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, num_attention_heads=16)
SIZES = {
    "xls-r-300m": dict(_XLSR, hidden_size=1024, num_hidden_layers=24, intermediate_size=4096),
    "xls-r-1b": dict(_XLSR, hidden_size=1280, num_hidden_layers=48, intermediate_size=5120),
    "xls-r-2b": dict(_XLSR, hidden_size=1920, num_hidden_layers=48, intermediate_size=7680),
    "mms-1b-all": dict(_XLSR, hidden_size=1280, num_hidden_layers=48, intermediate_size=5120, adapter_attn_dim=16),
}
# (size, train_only): what each row trains; MMS as its adapter recipe trains it, and whole
ROWS = (
    ("xls-r-300m", "all"),
    ("xls-r-1b", "all"),
    ("xls-r-2b", "all"),
    ("mms-1b-all", "adapters"),
    ("mms-1b-all", "all"),
)


def size_config(name: str, num_hidden_layers: int | None = None) -> EncoderConfig:
    """The EncoderConfig of a size, with the fine-tuning recipe's settings (dropouts 0, SpecAugment on);
    num_hidden_layers: a reduced depth of the same layer (tests)."""
    keys = dict(SIZES[name], vocab_size=VOCAB, pad_token_id=VOCAB - 1)
    if num_hidden_layers is not None:
        keys["num_hidden_layers"] = num_hidden_layers
    return EncoderConfig(**keys)


def train_only(model: CTCModel, which: str) -> None:
    """The run's freezing: the feature encoder always (the recipes'), everything but adapters and head for
    "adapters" (train/run.py's prepare_model does the same)."""
    model.freeze_feature_encoder()
    if which == "adapters":
        keep = {id(p) for p in adapter_parameters(model).values()}
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata  # one id per storage: views and the tensors saved twice count once


class SavedBytes:
    """Bytes autograd saves for backward (each storage once, parameters left out), per encoder layer,
    with attention replaced by what the fused GPU kernels save."""

    def __init__(self, model: CTCModel):
        self.params = {_storage(p) for p in model.parameters()}
        self.seen: dict[int, int] = {}
        self.layers: list[int] = []
        self.attention_fix = 0
        self.handles = []
        for module in model.modules():
            if isinstance(module, EncoderLayer):
                self.handles.append(module.register_forward_pre_hook(lambda m, a: self._mark()))
                self.handles.append(module.register_forward_hook(lambda m, a, out: self._layer_done()))
            if isinstance(module, Attention):
                self.handles.append(module.register_forward_pre_hook(lambda m, a: self._mark_attention()))
                self.handles.append(module.register_forward_hook(self._fused_attention))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    @property
    def total(self) -> int:
        return sum(self.seen.values()) + self.attention_fix

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        key = _storage(t)
        if key not in self.params:
            self.seen.setdefault(key, t.untyped_storage().nbytes())
        return t

    def _mark(self) -> None:
        self._start = self.total

    def _layer_done(self) -> None:
        self.layers.append(self.total - self._start)

    def _mark_attention(self) -> None:
        self._attention_start = self.total

    def _fused_attention(self, module: Attention, args, out: torch.Tensor) -> None:
        B, T, D = out.shape
        e = out.element_size()
        # the projections' shared input, q, k, v, the output, the output's (B, T, D) copy for out_proj, and
        # the fp32 log-sum-exp per head and frame
        fused = 6 * B * T * D * e + B * module.num_heads * T * 4
        self.attention_fix += fused - (self.total - self._attention_start)


# Every encoder layer is the same: a model of MEASURED_LAYERS is built and run, and its layer counted
# num_hidden_layers times (meta-device ops run Python shape functions: a 48-layer forward takes a minute).
MEASURED_LAYERS = 2


def measured_model(cfg: EncoderConfig, which: str) -> CTCModel:
    """The meta-device model of MEASURED_LAYERS layers, bf16, training mode, frozen as `which` says."""
    with torch.device("meta"):
        model = CTCModel(dataclasses.replace(cfg, num_hidden_layers=MEASURED_LAYERS)).to(torch.bfloat16)
    train_only(model, which)
    return model.train()


def activation_bytes(model: CTCModel, layers: int, seconds: float, sample_rate: int = 16_000) -> dict:
    """One utterance of `seconds` through `layers` layers (activations are linear in the batch at a fixed
    length): the bytes saved in all, by one layer, by each layer's input, by the CTC loss; the frames."""
    counter = SavedBytes(model)
    waves = torch.empty(1, int(seconds * sample_rate), device="meta", dtype=torch.bfloat16)
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
        logits, _ = model(waves)  # (1, T, V): a full row, as in a batch cut from one length bucket
    counter.remove()
    T, D, V = logits.shape[1], model.config.hidden_size, model.config.vocab_size
    layer = max(counter.layers)
    return {
        "frames": T,
        "saved": counter.total - sum(counter.layers) + layers * layer,
        "layer": layer,
        "layer_input": T * D * 2,  # the bf16 residual stream: what a checkpointed layer keeps
        "ctc": 2 * T * V * 4,  # fp32 log-probabilities and their gradient
    }


def parameter_counts(model: CTCModel, layers: int) -> tuple[int, int, int]:
    """(parameters, trainable, on the gradient path) of the model at `layers` layers."""

    def count(params) -> tuple[int, int]:
        params = list(params)
        return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)

    total, trainable = count(model.parameters())
    per_layer, per_layer_trainable = count(model.encoder.layers[0].parameters())
    extra = layers - MEASURED_LAYERS
    total, trainable = total + extra * per_layer, trainable + extra * per_layer_trainable
    return total, trainable, total - count(model.feature_extractor.parameters())[0]


def memory_row(name: str, which: str, batch: int, seconds: float, long_seconds: float = 20.0) -> dict:
    """The memory model of one size trained as `which` at batch x seconds, with and without checkpointing,
    and the largest batch of long_seconds utterances that fits."""
    cfg = size_config(name)
    L = cfg.num_hidden_layers
    model = measured_model(cfg, which)
    params, trainable, on_grad_path = parameter_counts(model, L)
    static = 4 * params + 16 * trainable + 2 * on_grad_path  # weights, grads + Adam, bf16 copies
    row = {"size": name, "train_only": which, "params": params, "trainable": trainable, "static_bytes": static}
    row["batch"], row["seconds"] = batch, seconds
    for key, s in (("at_batch", seconds), ("long", long_seconds)):
        a = activation_bytes(model, L, s)
        plain = a["saved"] + a["ctc"] + a["layer"]  # + one layer's backward working set
        checkpointed = a["saved"] - L * a["layer"] + L * a["layer_input"] + 2 * a["layer"] + a["ctc"]
        row[key] = {"frames": a["frames"], "plain_per_utt": plain, "checkpointed_per_utt": checkpointed}
    for mode in ("plain", "checkpointed"):
        total = static + batch * row["at_batch"][f"{mode}_per_utt"]
        row[mode] = {
            "total_bytes": total,
            "fits_80gb": total <= BUDGET,
            "max_batch_long": max(0, int((BUDGET - static) // row["long"][f"{mode}_per_utt"])),
        }
    return row


def table(rows: list[dict], long_seconds: float = 20.0) -> str:
    gb = lambda b: f"{b / GIB:.1f}"  # noqa: E731
    lines = [
        "| size (trains) | params / trainable | weights + grads + Adam + bf16 copies | activations per utterance, "
        "plain / checkpointed | total at batch, plain / checkpointed | fits 80 GB, plain / checkpointed | "
        f"largest batch of {long_seconds:g} s utterances, plain / checkpointed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, p, c = r["at_batch"], r["plain"], r["checkpointed"]
        lines.append(
            f"| {r['size']} ({r['train_only']}) | {r['params'] / 1e6:,.0f} M / {r['trainable'] / 1e6:,.1f} M | "
            f"{gb(r['static_bytes'])} GiB | {a['plain_per_utt'] / 2**20:,.0f} / {a['checkpointed_per_utt'] / 2**20:,.0f} MiB "
            f"({r['seconds']:g} s) | {gb(p['total_bytes'])} / {gb(c['total_bytes'])} GiB ({r['batch']} x {r['seconds']:g} s) | "
            f"{'yes' if p['fits_80gb'] else 'no'} / {'yes' if c['fits_80gb'] else 'no'} | "
            f"{p['max_batch_long']} / {c['max_batch_long']} |"
        )
    return "\n".join(lines)


def memory_rows(batch: int, seconds: float, long_seconds: float = 20.0) -> list[dict]:
    return [memory_row(name, which, batch, seconds, long_seconds) for name, which in ROWS]


def describe(batch: int, seconds: float) -> str:
    return (
        f"Memory of one bf16 training step on one 80 GB GPU at batch {batch} x {seconds:g} s (predicted, not "
        f"measured; fits = under {BUDGET / GIB:.0f} GiB, 10% left for the CUDA context and fragmentation):"
    )
