"""Native encoders against transformers, family by family, on tiny random checkpoints loaded from
safetensors: logits, CTC-loss gradients, and each stage on its own so a failure names its stage."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hf_checkpoints import FAMILIES, audio_batch, base_model, tiny_ctc_model

from fastctc.models import load_pretrained
from fastctc.models.hf_weights import native_key

ATOL = 1e-4  # float32, eval mode: the parity bar for one stage of a tiny model
GRAD_RTOL = 1e-4  # max |g_native - g_hf| / max |g_hf| per parameter tensor


@pytest.fixture(scope="module", params=list(FAMILIES))
def pair(request, tmp_path_factory):
    """(transformers model, native model loaded from its safetensors save)."""
    hf = tiny_ctc_model(request.param)
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path, safe_serialization=True)
    return hf, load_pretrained(path)


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("with_lengths", [True, False], ids=["lengths", "no-lengths"])
def test_logits_match(pair, with_lengths):
    hf, native = pair
    x, lengths, mask = audio_batch()
    with torch.no_grad():
        ref = hf(x, attention_mask=mask if with_lengths else None).logits
        out, out_lengths = native(x, lengths if with_lengths else None)
    assert out.shape == ref.shape
    assert max_abs(out, ref) <= ATOL
    expected = hf._get_feat_extract_output_lengths(lengths) if with_lengths else torch.full((3,), ref.shape[1])
    assert torch.equal(out_lengths, expected)


def ctc_loss(logits, logit_lengths, blank):
    g = torch.Generator().manual_seed(2)
    targets = torch.randint(0, blank, (logits.shape[0], 5), generator=g)
    logp = logits.float().log_softmax(-1).transpose(0, 1)
    return F.ctc_loss(logp, targets, logit_lengths, torch.full((logits.shape[0],), 5), blank=blank, zero_infinity=True)


def test_ctc_gradients_match(pair):
    hf, native = pair
    x, lengths, mask = audio_batch()
    blank = hf.config.pad_token_id
    ctc_loss(hf(x, attention_mask=mask).logits, hf._get_feat_extract_output_lengths(lengths), blank).backward()
    ctc_loss(*native(x, lengths), blank).backward()
    native_params = dict(native.named_parameters())
    overall = max(p.grad.abs().max() for p in hf.parameters() if p.grad is not None)
    checked = 0
    for name, p in hf.named_parameters():
        target, known = native_key(name, hf.config.model_type)
        assert known and target is not None, name
        g_ref, g = p.grad, native_params[target].grad
        if g_ref is None:  # masked_spec_embed: unused in eval mode on both sides
            assert g is None or not g.any(), name
            continue
        checked += 1
        if name.endswith(("attention.k_proj.bias", "self_attn.linear_k.bias")):
            # exactly zero in exact arithmetic (a key bias adds the same score to every key of a query,
            # which softmax cancels): both sides hold rounding noise, so check it is noise on both
            assert max(g.abs().max(), g_ref.abs().max()) <= 1e-6 * overall, name
            continue
        scale = g_ref.abs().max().clamp_min(1e-12)
        assert max_abs(g, g_ref) / scale <= GRAD_RTOL, name
    assert checked == len([p for p in hf.parameters() if p.grad is not None])
    hf.zero_grad(), native.zero_grad()


def test_stages_match(pair):
    """Feature encoder, projection, positional conv and every layer, each fed the reference input."""
    hf, native = pair
    ref = base_model(hf)
    x, _, _ = audio_batch(lengths=(1600, 1600))
    with torch.no_grad():
        feats_ref = ref.feature_extractor(x)
        assert max_abs(native.feature_extractor(x), feats_ref) <= ATOL, "feature encoder"
        feats_ref = feats_ref.transpose(1, 2)
        proj_ref = ref.feature_projection(feats_ref)
        proj_ref = proj_ref[0] if isinstance(proj_ref, tuple) else proj_ref
        assert max_abs(native.feature_projection(feats_ref), proj_ref) <= ATOL, "feature projection"
        pos_ref = ref.encoder.pos_conv_embed(proj_ref)
        assert max_abs(native.encoder.pos_conv_embed(proj_ref), pos_ref) <= ATOL, "positional conv"
        if hf.config.model_type == "wav2vec2-conformer":
            return conformer_layers_match(ref, native, proj_ref)

        h = proj_ref
        wavlm = hf.config.model_type == "wavlm"
        bias_ref = None
        bias = native.encoder.layers[0].attention.position_bias(h.shape[1]) if wavlm else None
        for i, (layer_ref, layer) in enumerate(zip(ref.encoder.layers, native.encoder.layers)):
            if wavlm:
                out_ref, bias_ref = layer_ref(h, position_bias=bias_ref, index=i)
            else:
                out_ref = layer_ref(h)
                out_ref = out_ref[0] if isinstance(out_ref, tuple) else out_ref
            assert max_abs(layer(h, None, bias), out_ref) <= ATOL, f"encoder layer {i}"
            h = out_ref
        if wavlm:  # layer 0's bias, repeated per batch row upstream, is what every layer reuses
            assert max_abs(bias_ref.view(2, *bias.shape)[0], bias) <= ATOL, "relative position bias"


def conformer_layers_match(ref, native, h):
    """The positions every conformer layer takes, then each layer fed the reference input."""
    T = h.shape[1]
    positions = native.encoder.positions(T, h.device)
    pos_ref = ref.encoder.embed_positions(h)
    if ref.config.position_embeddings_type == "relative":  # (1, 2T-1, D)
        assert max_abs(positions, pos_ref[0]) <= 1e-6, "relative position table"
    else:  # (2, T, 1, 1, dh)
        assert max_abs(positions, pos_ref[:, :, 0, 0]) <= 1e-6, "rotary cos/sin"
    for i, (layer_ref, layer) in enumerate(zip(ref.encoder.layers, native.encoder.layers)):
        out_ref = layer_ref(h, relative_position_embeddings=pos_ref)
        out_ref = out_ref[0] if isinstance(out_ref, tuple) else out_ref
        assert max_abs(layer(h, None, positions, None), out_ref) <= ATOL, f"conformer layer {i}"
        h = out_ref
