"""MMS attention adapters: native layers equal to transformers' (Wav2Vec2AttnAdapterLayer), a language's
adapter file read as Wav2Vec2ForCTC.load_adapter reads it, `model.train_only = "adapters"` training only the
adapters and the head, and the exported adapter.<lang>.safetensors read back by load_adapter with the same
logits. Tiny checkpoints built locally with transformers' classes and random weights (nothing downloaded)."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from hf_checkpoints import audio_batch, perturb, tiny_ctc_model
from safetensors.torch import load_file, save_file

from fastctc.config import load_config
from fastctc.errors import CheckpointError, ConfigError
from fastctc.models import load_pretrained, read_pretrained
from fastctc.models.hf_adapter import adapter_parameters
from fastctc.train.run import prepare_run
from fastctc.train.steps import forward_backward, optimizer_step, steps

ADAPTER_DIM = 5
# a frame every 80 samples keeps the synthetic corpus's utterances a few hundred frames long
SHORT = dict(conv_kernel=(10, 4, 4), conv_stride=(5, 4, 4), adapter_attn_dim=ADAPTER_DIM)


def mms_checkpoint(directory, seed: int = 0, **overrides):
    """A tiny MMS-shaped checkpoint (wav2vec2, pre-LN, adapters in every layer), saved as transformers saves it."""
    hf = tiny_ctc_model("wav2vec2-large", seed=seed, **{**SHORT, **overrides})
    hf.save_pretrained(directory)
    return hf


def write_language(hf, directory, language: str, vocab_size: int, seed: int) -> None:
    """adapter.<language>.safetensors as run_speech_recognition_ctc_adapter.py writes it (model._get_adapters()),
    from the same base with other adapter weights and a head of another width."""
    torch.manual_seed(seed)
    other = type(hf)(hf.config.__class__(**{**hf.config.to_dict(), "vocab_size": vocab_size}))
    other.load_state_dict({k: v for k, v in hf.state_dict().items() if not k.startswith("lm_head.")}, strict=False)
    perturb(other, seed)
    tensors = {k: v.detach().contiguous() for k, v in other._get_adapters().items()}
    save_file(tensors, str(directory / f"adapter.{language}.safetensors"), metadata={"format": "pt"})


def logits_of(hf, native, x, lengths, mask):
    with torch.no_grad():
        ref = hf(x, attention_mask=mask).logits
        got, frames = native.eval()(x, lengths)
    valid = torch.arange(ref.shape[1])[None, :] < frames[:, None]  # (B, T): the frames each row owns
    return ref[valid], got[valid]


def test_native_adapters_and_a_language_adapter_equal_transformers(tmp_path):
    hf = mms_checkpoint(tmp_path / "mms")
    x, lengths, mask = audio_batch()
    ref, got = logits_of(hf.eval(), load_pretrained(tmp_path / "mms"), x, lengths, mask)
    assert (ref - got).abs().max() < 1e-5  # measured 9.5e-7

    write_language(hf, tmp_path / "mms", "xyz", vocab_size=7, seed=3)
    hf.config._name_or_path = str(tmp_path / "mms")
    hf.load_adapter("xyz")  # transformers' own loader: the head becomes 7 wide
    native = load_pretrained(tmp_path / "mms", adapter_language="xyz")
    assert native.config.vocab_size == 7
    ref, got = logits_of(hf.eval(), native, x, lengths, mask)
    assert (ref - got).abs().max() < 1e-5
    moved = native.encoder.layers[1].adapter_layer.linear_2.weight
    assert not torch.equal(moved, load_pretrained(tmp_path / "mms").encoder.layers[1].adapter_layer.linear_2.weight)


def test_adapter_gradients_equal_transformers_in_float64(tmp_path):
    hf = mms_checkpoint(tmp_path / "mms").double().eval()  # eval: no SpecAugment draw to match
    native = load_pretrained(tmp_path / "mms").double().eval()
    x, lengths, mask = audio_batch()
    x = x.double()
    ref = hf(x, attention_mask=mask).logits
    got, frames = native(x, lengths)
    valid = (torch.arange(ref.shape[1])[None, :] < frames[:, None])[..., None]  # (B, T, 1)
    weight = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * valid
    (ref * weight).sum().backward()
    (got * weight).sum().backward()
    theirs = dict(hf.named_parameters())
    for name, p in adapter_parameters(native).items():
        q = theirs[name if name.startswith("lm_head.") else f"wav2vec2.{name}"]
        assert torch.allclose(p.grad, q.grad, rtol=1e-9, atol=1e-12), name


def test_a_missing_or_wrong_adapter_file_is_one_message_naming_it(tmp_path):
    hf = mms_checkpoint(tmp_path / "mms")
    write_language(hf, tmp_path / "mms", "xyz", vocab_size=7, seed=3)
    with pytest.raises(
        CheckpointError, match=r"adapter\.abc\.safetensors: no such adapter file \(it holds adapters for xyz\)"
    ):
        load_pretrained(tmp_path / "mms", adapter_language="abc")
    with pytest.raises(ConfigError, match=r"model.adapter_language: .*adapter\.abc\.safetensors does not exist"):
        load_config(None, [f"model.checkpoint={tmp_path / 'mms'}", "model.adapter_language=abc"])
    tensors = load_file(tmp_path / "mms" / "adapter.xyz.safetensors")
    del tensors["wav2vec2.encoder.layers.2.adapter_layer.norm.bias"]
    save_file(tensors, str(tmp_path / "mms" / "adapter.bad.safetensors"))
    with pytest.raises(
        KeyError,
        match=r"adapter\.bad\.safetensors: adapter tensors missing: \['wav2vec2.encoder.layers.2.adapter_layer.norm.bias'\]",
    ):
        load_pretrained(tmp_path / "mms", adapter_language="bad")
    weights = load_file(tmp_path / "mms" / "model.safetensors")  # the adapters only in per-language files
    save_file(
        {k: v for k, v in weights.items() if ".adapter_layer." not in k}, str(tmp_path / "mms" / "model.safetensors")
    )
    with pytest.raises(KeyError, match=r"holds no adapter weights; name the language .*one of \['bad', 'xyz'\]"):
        load_pretrained(tmp_path / "mms")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.train_only=adapters"], "model.target_language: model.train_only = 'adapters' exports"),
        (["model.target_language=tu/r"], "model.target_language: 'tu/r' names a file"),
        (["model.adapter_language=tur"], "model.adapter_language: reads adapter.tur.safetensors from model.checkpoint"),
        (["model.adapter_attn_dim=0"], "model.adapter_attn_dim: must be > 0"),
        (["model.adapter_attn_dim=16"], "model.adapter_attn_dim: attention adapters exist only in wav2vec2's pre-LN"),
    ],
)
def test_adapter_keys_are_checked_before_any_work(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


TINY_RUN = [
    "data.synthetic_train_size=8",
    "data.synthetic_eval_size=2",
    "train.batch_size=4",
    "train.threads=1",
    "train.eval_every=0",
    "train.checkpoint_every=0",
    "train.compile=off",
    "train.device=cpu",
    "train.precision=fp32",
    "optim.warmup_steps=0",
    "optim.lr=1e-2",
    "optim.weight_decay=0.1",
]


def _step(run):
    loss_sum = forward_backward(run, next(iter(steps(run))))
    _, skipped = optimizer_step(run)
    run.state.step += 1
    assert math.isfinite(float(loss_sum)) and not bool(skipped)


def test_train_only_adapters_optimizes_exactly_them_and_the_head_and_the_export_loads_in_transformers(tmp_path):
    from fastctc.train.loop import export

    hf = mms_checkpoint(tmp_path / "mms")
    cfg = load_config(
        None,
        [f"model.checkpoint={tmp_path / 'mms'}", "model.train_only=adapters", "model.target_language=tst", *TINY_RUN],
    )
    run = prepare_run(cfg, tmp_path / "run")
    run.model.train()
    params = dict(run.model.named_parameters())
    trained = adapter_parameters(run.model)
    assert len(trained) == 6 * hf.config.num_hidden_layers + 2 and set(trained) == {
        n for n in params if ".adapter_layer." in n or n.startswith("lm_head.")
    }
    in_optimizer = [p for group in run.optimizer.param_groups for p in group["params"]]
    assert len(in_optimizer) == len(trained) and {id(p) for p in in_optimizer} == {id(p) for p in trained.values()}
    start = {n: p.detach().clone() for n, p in params.items()}
    for _ in range(2):
        _step(run)
    assert all(torch.equal(p, start[n]) for n, p in params.items() if n not in trained)  # frozen: bit-identical
    assert all(not torch.equal(p, start[n]) for n, p in trained.items())
    assert all(p.grad is None for n, p in params.items() if n not in trained)

    export(run, tmp_path / "run" / "model")
    file = tmp_path / "run" / "model" / "adapter.tst.safetensors"
    assert set(load_file(file)) == set(hf._get_adapters())
    # the adapter alone, next to the untouched base checkpoint, as a user adds a language to mms-1b-all
    shutil.copy(file, tmp_path / "mms")
    base = type(hf).from_pretrained(tmp_path / "mms").eval()
    base.load_adapter("tst")
    x, lengths, mask = audio_batch()
    ref, got = logits_of(base, run.model, x, lengths, mask)
    assert (ref - got).abs().max() < 1e-5
    whole = type(hf).from_pretrained(tmp_path / "run" / "model").eval()  # model/ itself holds the trained adapters
    ref, _ = logits_of(whole, run.model, x, lengths, mask)
    assert (ref - got).abs().max() < 1e-5


def test_adapters_added_to_a_checkpoint_without_them_start_as_transformers_initialises_them(tmp_path):
    tiny_ctc_model("wav2vec2-large", **{**SHORT, "adapter_attn_dim": None}).save_pretrained(tmp_path / "plain")
    with pytest.raises(
        ConfigError,
        match="model.adapter_attn_dim: model.train_only = .* needs MMS attention adapters, and the checkpoint's config.json",
    ):
        prepare_run(
            load_config(
                None,
                [
                    f"model.checkpoint={tmp_path / 'plain'}",
                    "model.train_only=adapters",
                    "model.target_language=tst",
                    *TINY_RUN,
                ],
            ),
            tmp_path / "run0",
        )
    cfg = load_config(
        None,
        [
            f"model.checkpoint={tmp_path / 'plain'}",
            "model.adapter_attn_dim=16",
            "model.train_only=adapters",
            "model.target_language=tst",
            *TINY_RUN,
        ],
    )
    torch.manual_seed(0)
    model = prepare_run(cfg, tmp_path / "run").model
    adapters = [layer.adapter_layer for layer in model.encoder.layers]
    assert all(torch.equal(a.norm.weight, torch.ones(32)) and not a.norm.bias.any() for a in adapters)
    weights = torch.cat([torch.cat([a.linear_1.weight.flatten(), a.linear_2.weight.flatten()]) for a in adapters])
    assert abs(weights.std() - 0.02) < 0.002 and not any(
        a.linear_1.bias.any() or a.linear_2.bias.any() for a in adapters
    )
    with pytest.raises(CheckpointError, match="config.json: no adapter_attn_dim, so the checkpoint has no language"):
        read_pretrained(tmp_path / "plain", vocab_size=11, adapter_language="tst")


def test_a_head_whose_ids_cannot_be_read_is_not_kept_even_at_the_same_width(tmp_path):
    """MMS's vocab.json nests one vocabulary per language: a head of the run's width may still name other
    tokens, so the run starts a fresh one (the adapter script re-initialises its head too)."""
    import json

    from fastctc.data.text import CharVocab
    from fastctc.train.run import head_misfit

    hf = mms_checkpoint(tmp_path / "mms")  # an 11-wide head
    write_language(hf, tmp_path / "mms", "xyz", vocab_size=11, seed=3)
    tokens = ["|", *"abcdefgh", "[UNK]", "[PAD]"]
    (tmp_path / "mms" / "vocab.json").write_text(json.dumps({"xyz": {t: i for i, t in enumerate(tokens)}}))
    vocab = CharVocab(tokens)
    for language in ("", "xyz"):
        assert "cannot be matched to the run's vocabulary" in head_misfit(str(tmp_path / "mms"), vocab, language)
