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
        "ctc": {
            "json": {
                "shapes": [
                    {"card": "timit", "B": 32, "T": 250, "L": 50, "speedup_fwd_bwd_vs_torch": 3.4},
                    {"card": "librispeech", "B": 8, "T": 1750, "L": 550, "speedup_fwd_bwd_vs_torch": 2.5},
                ]
            }
        },
        "step": {
            "json": {
                "results": [
                    {
                        "family": "wav2vec2-base",
                        "provider": "fastctc-compiled",
                        "precision": "bf16",
                        "batch": 32,
                        "seconds": 3.0,
                        "speedup_vs_trainer": 2.2,
                        "median_ms": 100.0,
                    },
                    {
                        "family": "wav2vec2-base",
                        "provider": "trainer",
                        "precision": "bf16",
                        "batch": 32,
                        "seconds": 3.0,
                        "speedup_vs_trainer": 1.0,
                        "median_ms": 220.0,
                    },
                ]
            }
        },
    }
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


def test_part_limits_sum_to_at_most_the_budget(tmp_path):
    """The table fits the default budget, and a smaller budget shrinks every limit to fit; the report
    (here a --smoke run of the cost part) shows the limits against the budget."""
    assert sum(p.limit_s for p in gpu.PARTS) <= gpu.BUDGET_S
    for budget in (gpu.BUDGET_S, 300.0, 45.0):
        assert sum(gpu.part_limits(budget).values()) <= budget + 1e-9
    report = gpu.main(["--out", str(tmp_path), "--smoke", "--parts", "cost"])
    assert sum(p["limit_s"] for p in report["parts"]) <= report["budget_s"]
    assert "<= budget 480 s" in (tmp_path / "report.md").read_text()


def _fake_ctc_part(monkeypatch, code: str):
    """The ctc part runs ``python -c code`` instead of the benchmark."""
    import sys

    monkeypatch.setattr(gpu, "part_command", lambda name, smoke, out: [sys.executable, "-c", code])


SHAPE = {
    "card": "librispeech",
    "B": 8,
    "T": 1750,
    "L": 550,
    "speedup_fwd_bwd_vs_torch": 4.0,
    "vs_float64": {"loss_err": 0.3, "loss_bound": 1e-3, "grad_max_err": 0.2, "grad_worst_excess": 0.1, "ok": False},
}


def test_a_failed_correctness_check_turns_the_part_red(tmp_path, monkeypatch):
    final = {"bench": "ctc", "shapes": [SHAPE], "failed_checks": ["librispeech B=8 T=1750 L=550"]}
    _fake_ctc_part(
        monkeypatch,
        f"import json, sys; print(json.dumps({{'bench': 'ctc', 'shape': {SHAPE!r}}})); "
        f"print(json.dumps({final!r})); sys.exit(1)",
    )
    report = gpu.main(["--out", str(tmp_path), "--smoke", "--parts", "ctc"])
    part = report["parts"][0]
    assert "missed the float64 tolerance at librispeech B=8 T=1750 L=550" in part["red"]
    assert "**red**" in (tmp_path / "report.md").read_text()
    verdicts = {r["figure"].split(",")[0]: r["met"] for r in report["figures"]}
    # a 4x kernel that is wrong meets no goal
    assert verdicts == {
        "CTC kernel vs float64 (loss and gradient)": False,
        "CTC fwd+bwd vs log_softmax + torch ctc_loss": False,
    }


def test_a_timed_out_part_keeps_its_json_lines_and_stderr(tmp_path, monkeypatch):
    ok_shape = {**SHAPE, "vs_float64": {**SHAPE["vs_float64"], "ok": True}}
    _fake_ctc_part(
        monkeypatch,
        f"import json, sys, time; print(json.dumps({{'bench': 'ctc', 'shape': {ok_shape!r}}}));"
        " print('compiling the next shape', file=sys.stderr, flush=True); time.sleep(60)",
    )
    report = gpu.main(["--out", str(tmp_path), "--smoke", "--parts", "ctc", "--budget-s", "3"])
    part, res = report["parts"][0], report["results"]["ctc"]
    assert part["status"] == "timed out after 3 s" and part["red"] == part["status"]
    assert res["lines"][0]["shape"]["T"] == 1750 and "compiling the next shape" in res["tail"]
    assert "compiling the next shape" in (tmp_path / "log.txt").read_text()
    assert [r["met"] for r in report["figures"]] == [True, True]  # the shape measured before the stop


def test_pytest_counts_reads_the_junit_file_pytest_writes(tmp_path):
    """The tests part's counts come from pytest's own JUnit XML (not its console), every outcome counted."""
    import subprocess
    import sys

    (tmp_path / "test_outcomes.py").write_text(
        "import pytest\n"
        "def test_a(): pass\n"
        "def test_b(): pass\n"
        "def test_c(): assert False\n"
        "@pytest.mark.skip(reason='x')\n"
        "def test_d(): pass\n"
        "@pytest.fixture\n"
        "def broken(): raise RuntimeError\n"
        "def test_e(broken): pass\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the repository's addopts (xdist workers)
    junit = tmp_path / "out.xml"
    args = ["-q", "-p", "no:cacheprovider", f"--junitxml={junit}", str(tmp_path)]
    done = subprocess.run([sys.executable, "-m", "pytest", *args], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr  # a test failed: pytest's own verdict
    assert gpu.pytest_counts(junit) == {"passed": 2, "failed": 1, "error": 1, "skipped": 1}
    assert gpu.pytest_counts(tmp_path / "never-written.xml") == {}
