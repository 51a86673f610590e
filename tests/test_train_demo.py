"""The demo's path end to end, shortened: loss falls, and the run directory holds what it promises."""

import json
import math

import torch

from fastctc.config import load_config
from fastctc.data.text import CharVocab
from fastctc.models import load_pretrained
from fastctc.train.loop import train
from tests.test_config import DEMO


def test_short_demo_run_learns_and_writes_run_directory(tmp_path):
    cfg = load_config(
        DEMO,
        [
            "data.synthetic_train_size=320",
            "data.synthetic_eval_size=24",
            "train.max_steps=60",
            "train.log_every=10",
            "train.eval_every=30",
            "optim.warmup_steps=10",
            "train.threads=2",
        ],
    )
    out = tmp_path / "run"
    result = train(cfg, out)

    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["event"] == "train"]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.75 * losses[0], losses  # it learns: blank-only output sits near the first value
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [30, 60] and evals[-1].get("final") is True
    assert all(0.0 <= e["cer"] and 0.0 <= e["wer"] for e in evals)
    assert evals[-1]["cer"] == result["cer"]

    # the resolved config reads back to the same config
    assert load_config(out / "config.toml") == cfg
    # the final model is a Transformers-format checkpoint: it reloads natively and in transformers
    # with the same outputs
    vocab = CharVocab.load(out / "model" / "vocab.json")
    assert vocab.blank == len(vocab) - 1
    model = load_pretrained(out / "model")
    assert model.config.vocab_size == len(vocab)
    wave, lengths = torch.randn(2, 8000), torch.tensor([8000, 5000])
    with torch.no_grad():
        logits, logit_lengths = model(wave, lengths)
    assert logits.shape[-1] == len(vocab) and logit_lengths.tolist() == [24, 15]

    from transformers import AutoModelForCTC

    hf = AutoModelForCTC.from_pretrained(out / "model").eval()
    mask = (torch.arange(8000)[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        hf_logits = hf(wave, attention_mask=mask).logits
    torch.testing.assert_close(hf_logits[0], logits[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(hf_logits[1, :15], logits[1, :15], rtol=1e-4, atol=1e-4)

    # ...and a run can start from it (model.checkpoint), training every part but the frozen conv stack
    cfg2 = load_config(
        DEMO,
        [
            f"model.checkpoint={out / 'model'}",
            "data.synthetic_train_size=32",
            "data.synthetic_eval_size=8",
            "train.max_steps=2",
            "train.log_every=1",
            "model.freeze_feature_encoder=true",
            "train.threads=2",
        ],
    )
    result2 = train(cfg2, tmp_path / "run2")
    assert math.isfinite(result2["loss"])
    resumed = load_pretrained(tmp_path / "run2" / "model")
    before, after = model.state_dict(), resumed.state_dict()
    assert torch.equal(
        before["feature_extractor.conv_layers.0.conv.weight"], after["feature_extractor.conv_layers.0.conv.weight"]
    )
    assert not torch.equal(before["lm_head.weight"], after["lm_head.weight"])
