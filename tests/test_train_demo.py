"""The demo's path end to end, shortened: loss falls, and the run directory holds what it promises."""

import json
import math

import torch
from safetensors.torch import load_file

from fastctc.config import load_config
from fastctc.data.text import CharVocab
from fastctc.models import CTCModel, EncoderConfig
from fastctc.train.loop import train
from tests.test_config import DEMO


def test_short_demo_run_learns_and_writes_run_directory(tmp_path):
    cfg = load_config(DEMO, [
        "data.synthetic_train_size=320", "data.synthetic_eval_size=24", "train.max_steps=60",
        "train.log_every=10", "train.eval_every=30", "optim.warmup_steps=10", "train.threads=2",
    ])
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
    # the final checkpoint reloads into a model that reproduces the trained one's outputs
    enc = EncoderConfig(**json.loads((out / "encoder_config.json").read_text()))
    model = CTCModel(enc).eval()
    model.load_state_dict(load_file(out / "model.safetensors"))
    vocab = CharVocab.load(out / "vocab.json")
    assert enc.vocab_size == len(vocab) and vocab.blank == len(vocab) - 1
    with torch.no_grad():
        logits, lengths = model(torch.randn(2, 8000), torch.tensor([8000, 5000]))
    assert logits.shape[-1] == len(vocab) and lengths.tolist() == [24, 15]
