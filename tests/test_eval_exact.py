"""Exact evaluation: a padded batch scores what transformers computes one utterance at a time, unpadded
(the cards' eval_batch_size 1), for every card's family, on random and on trained weights."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hf_checkpoints import tiny_ctc_model

from fastctc.data.batching import pad_waveforms
from fastctc.decoding import greedy_ids
from fastctc.models import load_pretrained
from fastctc.models.ctc_model import exact_logits

transformers = pytest.importorskip("transformers")

CARD_FAMILIES = ["wav2vec2-base", "distilhubert", "unispeech-large", "wavlm-large", "hubert-large"]
# families whose batched transformers forward lets padding reach valid frames even with an attention mask:
# data2vec-audio's positional convs read the padded frames their LayerNorms made non-zero, the conformer's
# depthwise convs those its layers made non-zero
PADDING_LEAKS = ["data2vec-audio", "conformer-rel-pos", "conformer-rope"]
LOGPROB_ATOL = 1e-5  # float32: the batched and unpadded sums differ only in reduction order
DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.toml"


def reference(hf, audios: list[np.ndarray], do_normalize: bool) -> tuple[list[torch.Tensor], list[list[int]]]:
    """transformers, one utterance at a time, unpadded: log-probs (T_i, V) and greedy ids (argmax, repeats
    merged, then the blank dropped: CTC's order, not batch_decode's skip_special_tokens)."""
    extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=do_normalize, return_attention_mask=False)
    blank = hf.config.pad_token_id
    logps, ids = [], []
    with torch.no_grad():
        for a in audios:
            x = extractor(a, sampling_rate=16_000, return_tensors="pt").input_values
            logp = hf(x).logits[0].log_softmax(-1)
            logps.append(logp)
            ids.append([k for k, _ in itertools.groupby(logp.argmax(-1).tolist()) if k != blank])
    return logps, ids


def batched(native, audios, do_normalize: bool, padding_invariant: bool = True):
    waves, lengths = pad_waveforms(audios, do_normalize)
    with torch.no_grad():
        if padding_invariant:
            logits, frames = exact_logits(native, waves, lengths)
        else:  # the recipe's training convention for a group-norm checkpoint: padding seen as audio
            logits, _ = native(waves, None if native.config.feat_extract_norm == "group" else lengths)
            frames = native.feature_extractor.output_lengths(lengths)
    logps = [x[:n].log_softmax(-1) for x, n in zip(logits, frames.tolist())]
    return logps, greedy_ids(logits, frames, native.config.pad_token_id)


def compare(ref, ours) -> tuple[float, int]:
    (ref_lp, ref_ids), (lp, ids) = ref, ours
    assert [len(x) for x in lp] == [len(x) for x in ref_lp]  # each utterance decoded over its own frames
    worst = max((a - b).abs().max().item() for a, b in zip(ref_lp, lp))
    return worst, sum(a == b for a, b in zip(ref_ids, ids))


def mixed_lengths(n: int = 7, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(int(k)) * 0.3).astype(np.float32) for k in rng.integers(900, 9000, size=n)]


def test_normalisation_is_the_feature_extractors():
    from fastctc.data.audio import normalise_audio

    a = mixed_lengths(1)[0] * 0.01  # quiet: the epsilon matters
    expected = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)(a, sampling_rate=16_000).input_values[0]
    np.testing.assert_allclose(normalise_audio(a), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("family", CARD_FAMILIES + PADDING_LEAKS)
def test_batched_equals_one_at_a_time_for_every_card_family(family, tmp_path):
    hf = tiny_ctc_model(family)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    native = load_pretrained(tmp_path).eval()
    audios = mixed_lengths()
    ref = reference(hf, audios, do_normalize=True)
    worst, same = compare(ref, batched(native, audios, True))
    assert worst <= LOGPROB_ATOL, f"{family}: log-probs differ by {worst:.2e}"
    assert same == len(audios)
    if getattr(hf.config, "feat_extract_norm", "layer") == "group" or family in PADDING_LEAKS:
        # the test can fail: padding seen as audio (group norm) or leaking as transformers lets it changes them
        worst_padded, _ = compare(ref, batched(native, audios, True, padding_invariant=False))
        assert worst_padded > 1e-2


@pytest.fixture(scope="module")
def trained_group_norm(tmp_path_factory):
    """A group-norm tiny model trained by fastctc on synthetic speech until it is confident, exported."""
    from fastctc.config import load_config
    from fastctc.data.corpora import build_datasets
    from fastctc.train.loop import train

    out = tmp_path_factory.mktemp("gn") / "run"
    overrides = [
        "model.feat_extract_norm=group",
        "model.do_stable_layer_norm=false",
        "model.conv_bias=false",
        "model.hidden_size=48",
        "model.intermediate_size=96",
        "model.conv_dim=[32, 32, 32, 32, 32, 32, 32]",
        "train.max_steps=200",
        "data.synthetic_train_size=400",
        "data.synthetic_eval_size=40",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        "train.threads=1",
        "optim.lr=3e-3",
        "train.log_every=50",
        "train.eval_batch_size=16",
    ]
    cfg = load_config(DEMO, overrides)
    train(cfg, out)
    _, eval_ds, _ = build_datasets(cfg.data, cfg.train.seed, verbose=False)
    items = [eval_ds[i] for i in range(len(eval_ds))]
    return out / "model", [it.audio for it in items], [it.text for it in items]


def test_a_trained_group_norm_model_scores_as_transformers_one_at_a_time(trained_group_norm):
    model_dir, audios, _ = trained_group_norm
    hf = transformers.AutoModelForCTC.from_pretrained(model_dir).eval()
    native = load_pretrained(model_dir).eval()
    ref = reference(hf, audios, do_normalize=True)
    worst, same = compare(ref, batched(native, audios, True))
    assert any(ref[1]), "the trained model should emit labels"
    assert worst <= LOGPROB_ATOL and same == len(audios), f"{same}/{len(audios)} identical, worst {worst:.2e}"
    _, same_padded = compare(ref, batched(native, audios, True, padding_invariant=False))
    assert same_padded < len(audios)  # padded as audio, some hypotheses change: what exactness fixes


def test_eval_batch_size_1_and_32_give_identical_reports(trained_group_norm, tmp_path, capsys):
    from fastctc.cli import main

    model_dir, audios, texts = trained_group_norm
    rows = []
    for i, (a, t) in enumerate(zip(audios, texts)):
        sf.write(tmp_path / f"u{i}.wav", a, 16_000, subtype="FLOAT")
        rows.append(json.dumps({"audio": f"u{i}.wav", "text": t}))
    (tmp_path / "eval.jsonl").write_text("\n".join(rows) + "\n")
    reports = []
    for bs in ("1", "32"):
        assert (
            main(
                [
                    "eval",
                    str(model_dir),
                    "--data",
                    str(tmp_path / "eval.jsonl"),
                    "--batch-size",
                    bs,
                    "--report",
                    str(tmp_path / f"rep{bs}"),
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
        capsys.readouterr()
        lines = (tmp_path / f"rep{bs}" / "utterances.jsonl").read_text().splitlines()
        reports.append(sorted(lines))
    assert len(reports[0]) == len(audios) and reports[0] == reports[1]


def test_padding_invariant_training_step_does_not_depend_on_the_batch():
    """train.padding_invariant: a group-norm row's CTC loss and its gradient, batched with a longer row,
    equal the row trained alone (the recipe's convention, padding as audio, does not)."""
    from fastctc.models import CTCModel, EncoderConfig

    cfg = EncoderConfig(
        vocab_size=7,
        pad_token_id=6,
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=40,
        conv_dim=(8, 8),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        conv_bias=False,
        mask_time_prob=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
    )
    torch.manual_seed(0)
    model = CTCModel(cfg).double().train()
    a, b = (torch.from_numpy(x).double() for x in mixed_lengths(2, seed=3))
    a, b = (a, b) if len(a) < len(b) else (b, a)
    target = torch.tensor([[1, 2, 3]])

    def row_loss_and_grad(waves, lengths, **kw):
        model.zero_grad()
        logits, frames = model(waves, lengths, **kw)
        logp = logits[:1].log_softmax(-1).transpose(0, 1)  # (T, 1, V) float64: torch's CTC as the reference
        loss = torch.nn.functional.ctc_loss(logp, target, frames[:1], torch.tensor([3]), blank=6)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    batch = torch.zeros(2, len(b), dtype=torch.float64)
    batch[0, : len(a)], batch[1] = a, b
    lengths = torch.tensor([len(a), len(b)])
    alone = row_loss_and_grad(a[None], torch.tensor([len(a)]), padding_invariant=True)
    together = row_loss_and_grad(batch, lengths, padding_invariant=True)
    torch.testing.assert_close(together[0], alone[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(together[1], alone[1], rtol=1e-8, atol=1e-10)
    as_audio = row_loss_and_grad(batch, None)  # the recipe's group-norm convention
    assert not torch.allclose(as_audio[0], alone[0], rtol=1e-3)
