"""`fastctc bench gpu`, the one command for a GPU hour, on a CPU: every GPU part reported as skipped
with its reason, the cost model run, report.md and report.json written; --smoke runs each part at
its smallest size to check that each part's output is read into the report."""

from __future__ import annotations

import json

import pytest
import torch

from fastctc.bench import gpu
from fastctc.cli import main


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path (a GPU runs every part)")
def test_bench_gpu_on_cpu_skips_the_gpu_parts_with_their_reason(tmp_path, capsys):
    assert main(["bench", "gpu", "--out", str(tmp_path), "--parts", "tests", "ctc", "encoder", "step", "train"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    status = {p["name"]: p["status"] for p in report["parts"]}
    for name in ("ctc", "encoder", "step", "train"):
        assert status[name] == "skipped: no CUDA device (torch.cuda.is_available() is False)"
    # the CUDA tests did run: collected and every one skipped for want of a GPU
    assert status["tests"] == "ok (every test skipped: no CUDA device)"
    counts = report["results"]["tests"]["counts"]
    assert counts.get("skipped", 0) >= 10 and not counts.get("passed") and not counts.get("failed")
    md = (tmp_path / "report.md").read_text()
    assert "no CUDA device" in md and "| tests |" in md
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["bench"] == "gpu" and len(last["parts"]) == 5


def test_bench_gpu_budget_skips_parts_that_do_not_fit(tmp_path):
    report = gpu.main(["--out", str(tmp_path), "--parts", "cost", "--budget-s", "1"])
    assert report["parts"][0]["status"].startswith("skipped: 1 s of the budget left, needs ~5 s")


def test_figures_put_each_value_next_to_its_goal():
    results = {
        "ctc": {"json": {"shapes": [{"card": "timit", "B": 32, "T": 250, "L": 50, "speedup_fwd_bwd_vs_torch": 3.4},
                                    {"card": "librispeech", "B": 8, "T": 1750, "L": 550,
                                     "speedup_fwd_bwd_vs_torch": 2.5}]}},
        "step": {"json": {"results": [
            {"family": "wav2vec2-base", "provider": "fastctc-compiled", "precision": "bf16", "batch": 32,
             "seconds": 3.0, "speedup_vs_trainer": 2.2, "median_ms": 100.0},
            {"family": "wav2vec2-base", "provider": "trainer", "precision": "bf16", "batch": 32, "seconds": 3.0,
             "speedup_vs_trainer": 1.0, "median_ms": 220.0}]}},
    }  # fmt: skip
    gpu.add_cost_to_steps(results)
    rows = gpu.figures(results)
    assert [r["met"] for r in rows[:2]] == [True, False]  # 3.4x and 2.5x against >= 3x
    step = [r for r in rows if r["figure"].startswith("step wav2vec2-base fastctc-compiled bf16")]
    assert step[0]["met"] is True and step[0]["value"] == "2.20x"
    mfu = [r for r in rows if "MFU" in r["figure"]][0]
    flops = results["step"]["json"]["results"][0]["model_flops"]
    assert mfu["value"] == f"{flops / 0.1 / 989e12:.1%}"


@pytest.mark.slow
def test_bench_gpu_smoke_reads_every_part(tmp_path):
    """Every part at its smallest size on this device (minutes on a CPU)."""
    report = gpu.main(["--out", str(tmp_path), "--smoke"])
    status = {p["name"]: p["status"] for p in report["parts"]}
    assert all(s.startswith("ok") for s in status.values()), status
    for name in ("ctc", "encoder", "step", "cost"):
        assert report["results"][name]["json"]["bench"] == name
    assert report["results"]["train"]["summary"]["last_progress"]["step"] == 4


def test_the_gpu_training_run_config_is_wav2vec2_base():
    """The train part's overrides pass the config checks and resolve to wav2vec2-base's encoder."""
    from fastctc.config import load_config
    from fastctc.train.run import resolve_model

    cfg = load_config(gpu.REPO / "configs" / "demo.toml", gpu.train_overrides(smoke=False)[1::2])
    cfg, encoder, _ = resolve_model(cfg, print)
    assert (encoder.hidden_size, encoder.num_hidden_layers, encoder.intermediate_size) == (768, 12, 3072)
    assert encoder.feat_extract_norm == "group" and encoder.conv_dim == (512,) * 7
    assert cfg.train.precision == "bf16" and cfg.train.compile == "on" and cfg.model.freeze_feature_encoder
