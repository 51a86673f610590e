"""w2v-BERT 2.0 against transformers on tiny random checkpoints (nothing downloaded): the torch fbank
front end against SeamlessM4TFeatureExtractor, the encoder's logits, stages and gradients against
Wav2Vec2BertForCTC (float32, and float64 for gradients), exact padding, keys and the round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hf_checkpoints import perturb, transformers
from safetensors.torch import load_file, save_file

from fastctc.data.batching import pad_waveforms
from fastctc.models import load_pretrained, save_pretrained
from fastctc.models.config import EncoderConfig
from fastctc.models.ctc_model import CTCModel, exact_logits
from fastctc.models.fbank import FbankFrontEnd, fbank_frames, stacked_frames
from fastctc.models.feature_encoder import frame_count, min_samples
from fastctc.models.hf_weights import native_key, read_pretrained

# float32 fbank against the extractor's float64 NumPy (float32 normalisation): the log of a float32 power
# spectrum divided by a per-bin deviation over time; measured 3.5e-5 on this batch (features up to ~3.4),
# up to 2.6e-4 on 1-2 s noise batches (README, w2v-BERT)
FBANK_ATOL = 2e-4
FBANK_F64_ATOL = 1e-4  # our float64 path: the extractor itself holds its spectrum in complex64
LOGITS_RTOL = 1e-4  # max |a - b| / max |b| over valid frames
GRAD_RTOL = 1e-4  # per tensor, native float32 against transformers in float64
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    vocab_size=11,
    pad_token_id=10,
    left_max_position_embeddings=5,  # small tables, so that the tiny inputs' distances clamp both ways
    right_max_position_embeddings=3,
    conv_depthwise_kernel_size=5,
)
LENGTHS = (4000, 2801, 1500, 561)  # 561: two fbank frames, one stacked frame
# the layouts: as released, and with the fine-tuning guide's adapter (here two layers to a narrower
# width, after the intermediate feed-forward, so that every adapter part is built)
LAYOUTS = {
    "plain": {},
    "adapter": dict(
        add_adapter=True, num_adapter_layers=2, output_hidden_size=16, use_intermediate_ffn_before_adapter=True
    ),
}


def tiny_hf(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model = transformers.Wav2Vec2BertForCTC(transformers.Wav2Vec2BertConfig(**{**TINY, **overrides}))
    return perturb(model, seed).eval()


@pytest.fixture(scope="module", params=list(LAYOUTS))
def pair(request, tmp_path_factory):
    hf = tiny_hf(**LAYOUTS[request.param])
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path, safe_serialization=True)
    return hf, load_pretrained(path)


def waves(lengths=LENGTHS, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    N = int(lengths.max())
    x = 0.1 * torch.randn(len(lengths), N, generator=g)
    return x * (torch.arange(N)[None, :] < lengths[:, None]), lengths


def frame_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    return torch.arange(T)[None, :] < stacked_frames(lengths)[:, None]


# ---- the front end ---------------------------------------------------------------------------------


def test_fbank_equals_the_feature_extractor_on_a_padded_batch():
    x, lengths = waves()
    audios = [row[:n].numpy() for row, n in zip(x, lengths.tolist())]
    ref = transformers.SeamlessM4TFeatureExtractor()(audios, sampling_rate=16000, return_tensors="pt", padding=True)
    front = FbankFrontEnd()
    ours = front(x, lengths)
    assert ours.shape == ref["input_features"].shape
    assert torch.equal(frame_mask(lengths, ours.shape[1]), ref["attention_mask"].bool())
    assert (ours - ref["input_features"]).abs().max() <= FBANK_ATOL
    assert (front(x.double(), lengths) - ref["input_features"].double()).abs().max() <= FBANK_F64_ATOL


def test_fbank_is_padding_invariant_and_batched():
    """Each row of a padded batch is what it gives alone, unpadded. In float64, so that the only difference
    left is the summation order of rows of different lengths (a leak of padding would be of order 1)."""
    x, lengths = waves()
    x = x.double()
    front = FbankFrontEnd()
    batched = front(x, lengths)
    for i, (row, n) in enumerate(zip(x, lengths.tolist())):
        alone = front(row[None, :n], torch.tensor([n]))[0]
        k = stacked_frames(n)
        torch.testing.assert_close(batched[i, :k], alone[:k], rtol=0, atol=1e-10)
        assert not batched[i, k + 1 :].any()  # padding is zero


def test_frame_arithmetic_is_the_extractors():
    cfg = EncoderConfig(model_type="wav2vec2-bert", position_embeddings_type="relative_key")
    assert cfg.frame_stride == 320 and min_samples(cfg) == 560
    assert [frame_count(n, cfg) for n in (0, 399, 559, 560, 879, 880, 16000)] == [0, 0, 0, 1, 1, 2, 49]
    adapter = EncoderConfig(**{**vars(cfg), **LAYOUTS["adapter"], "num_attention_heads": 4, "hidden_size": 32})
    hf = tiny_hf(**LAYOUTS["adapter"])
    assert adapter.frame_stride == 1280 and frame_count(min_samples(adapter), adapter) == 1
    assert frame_count(min_samples(adapter) - 1, adapter) == 0
    extractor = transformers.SeamlessM4TFeatureExtractor()
    for n in (560, 719, 720, 881, 1201, 16000):
        mask = extractor(np.zeros(n, np.float32) + 0.01, sampling_rate=16000)["attention_mask"]
        assert frame_count(n, cfg) == int(np.sum(mask)), n
        assert frame_count(n, adapter) == int(hf._get_feat_extract_output_lengths(torch.tensor(mask.sum()))), n


# ---- the encoder -----------------------------------------------------------------------------------


def test_logits_match_transformers_fed_the_same_features(pair):
    hf, native = pair
    x, lengths = waves()
    with torch.no_grad():
        feats = native.feature_extractor(x, lengths)
        mask = frame_mask(lengths, feats.shape[1]).long()
        ref = hf(feats, attention_mask=mask).logits
        out, out_lengths = native(x, lengths)
    assert out.shape == ref.shape
    assert torch.equal(out_lengths, hf._get_feat_extract_output_lengths(mask.sum(-1)))
    valid = torch.arange(out.shape[1])[None, :] < out_lengths[:, None]
    assert (out - ref)[valid].abs().max() / ref[valid].abs().max() <= LOGITS_RTOL
    with torch.no_grad():  # every row full length: no mask on either side
        ref_full, (out_full, _) = hf(native.feature_extractor(x)).logits, native(x)
    assert (out_full - ref_full).abs().max() / ref_full.abs().max() <= LOGITS_RTOL


def test_end_to_end_from_the_feature_extractor(pair):
    """transformers' own pipeline (SeamlessM4TFeatureExtractor, then the model) against fastctc's, from the
    waveforms: what a user compares; the front end's tolerance shows through the encoder."""
    hf, native = pair
    x, lengths = waves()
    audios = [row[:n].numpy() for row, n in zip(x, lengths.tolist())]
    inputs = transformers.SeamlessM4TFeatureExtractor()(audios, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        ref = hf(**inputs).logits
        out, out_lengths = native(x, lengths)
    valid = torch.arange(out.shape[1])[None, :] < out_lengths[:, None]
    assert (out - ref)[valid].abs().max() / ref[valid].abs().max() <= 1e-3


def test_stages_match(pair):
    """Feature projection and every conformer layer, each fed the reference input, with padding."""
    hf, native = pair
    x, lengths = waves()
    with torch.no_grad():
        feats = native.feature_extractor(x, lengths)
        valid = frame_mask(lengths, feats.shape[1])
        proj_ref = hf.wav2vec2_bert.feature_projection(feats)[0]
        assert (native.feature_projection(feats) - proj_ref).abs().max() <= 1e-5, "feature projection"
        mask4 = torch.zeros(valid.shape, dtype=torch.float32).masked_fill(~valid, float("-inf"))[:, None, None, :]
        h = proj_ref.masked_fill(~valid[..., None], 0.0)
        for i, (layer_ref, layer) in enumerate(zip(hf.wav2vec2_bert.encoder.layers, native.encoder.layers)):
            ref = layer_ref(h, attention_mask=mask4, conv_attention_mask=valid.long())
            ref = ref[0] if isinstance(ref, tuple) else ref
            assert (layer(h, valid) - ref)[valid].abs().max() <= 1e-5, f"conformer layer {i}"
            h = ref
        if hf.config.add_adapter:
            h = h + 0.5 * hf.wav2vec2_bert.intermediate_ffn(h)
            assert (
                native.encoder.intermediate_ffn(proj_ref) - hf.wav2vec2_bert.intermediate_ffn(proj_ref)
            ).abs().max() <= 1e-5
            ref = hf.wav2vec2_bert.adapter(h, attention_mask=valid.long())
            out = native.encoder.adapter(h, valid.sum(-1), exact_padding=False)
            kept = native.encoder.output_lengths(stacked_frames(lengths))
            keep = torch.arange(out.shape[1])[None, :] < kept[:, None]
            assert out.shape == ref.shape and (out - ref)[keep].abs().max() <= 1e-5, "adapter"


def ctc_loss(logits, logit_lengths, blank):
    g = torch.Generator().manual_seed(2)
    targets = torch.randint(0, blank, (logits.shape[0], 2), generator=g)
    logp = logits.log_softmax(-1).transpose(0, 1)
    return F.ctc_loss(logp, targets, logit_lengths, torch.full((logits.shape[0],), 2), blank=blank, zero_infinity=True)


def test_gradients_match_transformers_in_float64(pair):
    hf, native = pair
    hf64 = tiny_hf(**LAYOUTS["adapter" if hf.config.add_adapter else "plain"]).double()
    x, lengths = waves(LENGTHS[:3])
    with torch.no_grad():
        feats = native.feature_extractor(x, lengths)
    mask = frame_mask(lengths, feats.shape[1]).long()
    frames = hf.__class__._get_feat_extract_output_lengths(hf, mask.sum(-1))
    blank = TINY["pad_token_id"]
    ref_logits = hf64(feats.double(), attention_mask=mask).logits
    ctc_loss(ref_logits, frames, blank).backward()
    native.zero_grad()
    ctc_loss(*native(x, lengths), blank).backward()
    params = dict(native.named_parameters())
    checked, key_biases = 0, 0
    for name, p in hf64.named_parameters():
        target, known = native_key(name, "wav2vec2-bert")
        assert known and target in params, name
        if p.grad is None:  # masked_spec_embed: unused in eval mode on both sides
            assert params[target].grad is None, name
            continue
        g, g_ref = params[target].grad.double(), p.grad
        if name.endswith("self_attn.linear_k.bias"):  # zero in exact arithmetic (softmax cancels it)
            assert g.abs().max() <= 1e-6 * max(q.grad.abs().max() for q in hf64.parameters() if q.grad is not None)
            key_biases += 1
            continue
        assert (g - g_ref).abs().max() / g_ref.abs().max().clamp_min(1e-30) <= GRAD_RTOL, name
        checked += 1
    assert checked + key_biases == sum(p.grad is not None for p in hf64.parameters()) and checked > 40
    native.zero_grad()


def test_batched_equals_one_at_a_time(pair):
    """A padded batch gives each row what it gives alone and unpadded: its k stacked frames and nothing
    past them (transformers' extractor pads an odd fbank count to a pair even alone, and its adapter's
    convs read that masked frame), run through the encoder with no mask at all."""
    _, native = pair
    x, lengths = waves()
    with torch.no_grad():
        logits, frames = exact_logits(native, x, lengths)
        for i, (row, n) in enumerate(zip(x, lengths.tolist())):
            feats = native.feature_extractor(row[None, :n], torch.tensor([n]))[:, : stacked_frames(n)]
            alone = native.lm_head(native.encoder(native.feature_projection(feats), None))[0]
            assert frames[i] == len(alone)
            torch.testing.assert_close(logits[i, : len(alone)], alone, rtol=0, atol=1e-5)


def test_evaluation_path_equals_transformers_one_at_a_time(pair):
    """The one evaluation path (pad_waveforms without waveform normalisation, exact_logits) against
    transformers' pipeline one utterance at a time, unpadded (SeamlessM4TFeatureExtractor, then the model):
    the same frames per utterance and log-probabilities within the front end's float32 tolerance."""
    hf, native = pair
    x, lengths = waves()
    audios = [row[:n].numpy() for row, n in zip(x, lengths.tolist())]
    batch, batch_lengths = pad_waveforms(audios, do_normalize=False)
    extractor = transformers.SeamlessM4TFeatureExtractor()
    with torch.no_grad():
        logits, frames = exact_logits(native, batch, batch_lengths)
        for i, a in enumerate(audios):
            inputs = extractor(a, sampling_rate=16000, return_tensors="pt")
            ref = hf(**inputs).logits[0]
            k = int(hf._get_feat_extract_output_lengths(inputs["attention_mask"].sum()))
            assert frames[i] == k
            # an odd fbank count is padded to a pair even alone, and transformers' adapter reads that frame
            if not hf.config.add_adapter or fbank_frames(len(a)) % 2 == 0:
                assert (logits[i, :k].log_softmax(-1) - ref[:k].log_softmax(-1)).abs().max() <= 1e-3


def test_every_caller_counts_transformers_frames_one_utterance_at_a_time(pair):
    """The frames each caller keeps per utterance (run_split's kept logits, what beam search and --lm-sweep
    decode; the chunked path's; the model's and frame_count's counts) against transformers' output lengths,
    Wav2Vec2BertForCTC run one utterance at a time on SeamlessM4TFeatureExtractor's features, on mixed
    lengths: with the adapter, its strided convs' count, not the stacked fbank frames'."""
    from fastctc.config import DataConfig
    from fastctc.data.dataset import InMemoryDataset
    from fastctc.inference.chunking import chunked_logits
    from fastctc.inference.evaluate import run_split

    hf, native = pair
    x, lengths = waves()
    audios = [row[:n].numpy() for row, n in zip(x, lengths.tolist())]
    extractor = transformers.SeamlessM4TFeatureExtractor()
    expected = []
    with torch.no_grad():
        for a in audios:
            inputs = extractor(a, sampling_rate=16000, return_tensors="pt")
            k = int(hf._get_feat_extract_output_lengths(inputs["attention_mask"].sum()))
            assert 0 < k <= hf(**inputs).logits.shape[1]
            expected.append(k)
    assert native.output_lengths(lengths).tolist() == expected
    assert [frame_count(n, native.config) for n in lengths.tolist()] == expected
    ids = [f"u{i}" for i in range(len(audios))]
    dataset = InMemoryDataset(ids, audios, ["a"] * len(audios), 16000)
    cpu = torch.device("cpu")
    split = run_split(native, dataset, cpu, None, batch_size=4, data=DataConfig(do_normalize=False), keep_logits=True)
    kept = dict(zip(split.ids, (len(t) for t in split.logits)))
    assert [kept[i] for i in ids] == expected, (kept, expected)
    # one file in windows of three frames (a frame is 320 samples, times the adapter's strides)
    chunk, stride = 3 * native.config.frame_stride, native.config.frame_stride
    whole = chunked_logits(native, audios[0], cpu, False, chunk_s=chunk / 16000, stride_s=stride / 16000)
    assert len(audios[0]) > chunk and whole.shape == (expected[0], TINY["vocab_size"]) and whole.isfinite().all()


# ---- keys, config, round trip ----------------------------------------------------------------------


def test_save_pretrained_round_trip(pair, tmp_path):
    hf, native = pair
    tokens = ["<pad>"] + [chr(ord("a") + i) for i in range(TINY["vocab_size"] - 1)]
    tokens[TINY["pad_token_id"]], tokens[0] = tokens[0], tokens[TINY["pad_token_id"]]
    save_pretrained(native, tmp_path, tokens)
    written, original = load_file(tmp_path / "model.safetensors"), hf.state_dict()
    assert set(written) == {k for k in original if k != "wav2vec2_bert.masked_spec_embed"} | (
        {"wav2vec2_bert.masked_spec_embed"} if "wav2vec2_bert.masked_spec_embed" in written else set()
    )
    back = transformers.AutoModelForCTC.from_pretrained(tmp_path).eval()
    assert type(back).__name__ == "Wav2Vec2BertForCTC"
    pre = json.loads((tmp_path / "preprocessor_config.json").read_text())
    extractor = transformers.AutoFeatureExtractor.from_pretrained(tmp_path)
    assert type(extractor).__name__ == "SeamlessM4TFeatureExtractor" and pre["stride"] == 2
    x, lengths = waves()
    with torch.no_grad():
        feats = native.feature_extractor(x, lengths)
        mask = frame_mask(lengths, feats.shape[1]).long()
        torch.testing.assert_close(back(feats, attention_mask=mask).logits, hf(feats, attention_mask=mask).logits)
    loaded = read_pretrained(tmp_path)
    assert loaded.do_normalize is False and loaded.attention_mask is True
    for k, v in native.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k


def test_unknown_and_missing_keys_fail_loudly(pair, tmp_path):
    hf, _ = pair
    hf.save_pretrained(tmp_path, safe_serialization=True)
    file = tmp_path / "model.safetensors"
    tensors = load_file(file)
    extra = dict(tensors, **{"wav2vec2_bert.encoder.layers.0.attention.q_proj.weight": torch.zeros(32, 32)})
    save_file(extra, file)
    with pytest.raises(KeyError, match=r"attention\.q_proj\.weight"):
        load_pretrained(tmp_path)
    del tensors["wav2vec2_bert.encoder.layers.1.conv_module.depthwise_layer_norm.bias"]
    save_file(tensors, file)
    with pytest.raises(KeyError, match=r"not filled.*encoder\.layers\.1\.conv_module\.depthwise_layer_norm\.bias"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize(
    "key, value, match", [("position_embeddings_type", "rotary", r"'relative_key' attention only")]
)
def test_unsupported_config_values_fail_loudly(pair, tmp_path, key, value, match):
    hf, _ = pair
    hf.save_pretrained(tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config[key] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match):
        load_pretrained(tmp_path)


def test_a_config_json_without_position_embeddings_type_is_relative_key(pair, tmp_path):
    """Wav2Vec2BertConfig defaults position_embeddings_type to "relative_key": a config.json without the key
    loads as transformers loads it, with its logits."""
    hf, _ = pair
    hf.save_pretrained(tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["position_embeddings_type"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    ref = transformers.AutoModelForCTC.from_pretrained(tmp_path).eval()
    assert ref.config.position_embeddings_type == "relative_key"
    native = load_pretrained(tmp_path)
    assert native.config.position_embeddings_type == "relative_key"
    x, lengths = waves()
    with torch.no_grad():
        feats = native.feature_extractor(x, lengths)
        expected = ref(feats, attention_mask=frame_mask(lengths, feats.shape[1]).long()).logits
        out, out_lengths = native(x, lengths)
    valid = torch.arange(out.shape[1])[None, :] < out_lengths[:, None]
    assert out.shape == expected.shape
    assert (out - expected)[valid].abs().max() / expected[valid].abs().max() <= LOGITS_RTOL


def test_from_scratch_model_has_no_conv_stack_or_positional_conv():
    model = CTCModel(
        EncoderConfig(
            model_type="wav2vec2-bert",
            position_embeddings_type="relative_key",
            hidden_size=32,
            num_attention_heads=4,
            num_hidden_layers=1,
            intermediate_size=16,
        )
    )
    names = list(model.state_dict())
    assert not any(n.startswith(("feature_extractor.", "encoder.pos_conv_embed")) for n in names), names


def test_add_adapter_over_a_checkpoint_without_one_starts_a_fresh_one(tmp_path):
    """The fine-tuning guide's start: from_pretrained(w2v-bert-2.0, add_adapter=True). The adapter is
    initialised as transformers does it; given transformers' draw, the logits are transformers'."""
    tiny_hf().save_pretrained(tmp_path, safe_serialization=True)
    native = load_pretrained(tmp_path, overrides={"add_adapter": True})
    adapter = native.encoder.adapter
    assert native.config.add_adapter and adapter is not None
    conv = adapter.layers[0].residual_conv
    bound = (conv.in_channels * conv.kernel_size[0]) ** -0.5
    assert conv.bias.abs().max() <= bound and 0.5 < conv.weight.std() * (conv.in_channels * 3 / 2) ** 0.5 < 1.5
    assert torch.equal(adapter.layers[0].ffn_layer_norm.weight, torch.ones(32))
    assert not adapter.layers[0].self_attn.linear_q.bias.any()
    hf = transformers.AutoModelForCTC.from_pretrained(tmp_path, add_adapter=True).eval()
    with torch.no_grad():
        for name, p in hf.wav2vec2_bert.adapter.named_parameters():
            adapter.get_parameter(name).copy_(p)
    x, lengths = waves()
    with torch.no_grad():
        feats = native.feature_extractor(x, lengths)
        ref = hf(feats, attention_mask=frame_mask(lengths, feats.shape[1]).long()).logits
        out, out_lengths = native(x, lengths)
    valid = torch.arange(out.shape[1])[None, :] < out_lengths[:, None]
    assert out.shape == ref.shape and (out - ref)[valid].abs().max() / ref[valid].abs().max() <= LOGITS_RTOL
    hf_with = tmp_path / "with-adapter"
    hf.save_pretrained(hf_with, safe_serialization=True)
    with pytest.raises(ValueError, match="cannot be turned off"):
        load_pretrained(hf_with, overrides={"add_adapter": False})
