"""Smoke tests of the benchmarks at their smallest configurations, through `fastctc bench`: each runs
and ends with one JSON line holding the keys the README table is built from. No time is asserted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fastctc.cli import main


def _last_json(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1])


def _timed(row: dict) -> None:
    assert {"median_ms", "p20_ms", "p80_ms", "runs"} <= set(row)
    assert row["p20_ms"] <= row["median_ms"] <= row["p80_ms"]


def test_bench_encoder_smallest(capsys):
    pytest.importorskip("transformers")
    assert (
        main(
            [
                "bench",
                "encoder",
                "--families",
                "wav2vec2-base",
                "hubert-large",
                "--size",
                "tiny",
                "--batch",
                "2",
                "--seconds",
                "0.2",
                "--repeats",
                "2",
                "--warmup",
                "0",
                "--compile",
                "off",
            ]
        )
        == 0
    )
    report = _last_json(capsys)
    assert report["bench"] == "encoder" and report["torch"] and report["size"] == "tiny"
    rows = report["results"]
    assert {(r["family"], r["mode"], r["provider"]) for r in rows} == {
        (f, m, p)
        for f in ("wav2vec2-base", "hubert-large")
        for m in ("forward", "forward+backward")
        for p in ("native", "transformers")
    }
    for r in rows:
        _timed(r)
        assert r["speedup_vs_transformers"] > 0
    assert set(report["goals"]) == {"fwd_bwd_native_vs_transformers"}  # no compiled provider with --compile off
    assert {"worst", "family", "target", "met"} <= set(report["goals"]["fwd_bwd_native_vs_transformers"])


def test_bench_step_smallest(capsys):
    pytest.importorskip("transformers")
    assert (
        main(
            [
                "bench",
                "step",
                "--families",
                "wav2vec2-base",
                "--size",
                "tiny",
                "--batch",
                "2",
                "--seconds",
                "0.2",
                "--repeats",
                "2",
                "--warmup",
                "1",
                "--compile",
                "off",
                "--precision",
                "fp32",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    report = _last_json(capsys)
    assert report["bench"] == "step" and report["precision"] == "fp32"
    # wav2vec2-base is group-norm: its cached step is padding-invariant, timed beside the uncached one
    providers = ["fastctc", "fastctc-invariant", "fastctc-cached", "trainer"]
    assert [r["provider"] for r in report["results"]] == providers
    for r in report["results"]:
        _timed(r)
        assert r["speedup_vs_trainer"] > 0 and r["peak_mb"] > 0
        assert (r["cache_speedup"] is not None) == (r["provider"] == "fastctc-cached")
    cached, invariant = report["results"][2], report["results"][1]
    assert cached["cache_speedup"] == pytest.approx(invariant["median_ms"] / cached["median_ms"])
    assert set(report["goals"]) == {"step_fastctc_vs_trainer"}


def test_bench_data_smallest(capsys):
    assert (
        main(
            [
                "bench",
                "data",
                "--data-root",
                "",
                "--audio",
                "generated",
                "--files",
                "2",
                "--batch",
                "2",
                "--repeats",
                "1",
                "--seeds",
                "2",
                "--scale",
                "0.05",
            ]
        )
        == 0
    )
    report = _last_json(capsys)
    assert report["bench"] == "data" and report["data_root"] is None
    assert {r["durations"] for r in report["padding"]} == {"timit-like", "librispeech-like"}
    for r in report["padding"]:
        for batching in ("fastctc", "group_by_length", "random"):
            assert 0.0 <= r[batching]["p20"] <= r[batching]["median"] <= r[batching]["p80"] < 1.0
    sources = {r["source"] for r in report["loader"]}
    assert len(sources) == 2 and all("generated" in s for s in sources)
    for r in report["loader"]:
        _timed(r)
        assert r["realtime_x"] > 0
    assert set(report["goals"]) == {"padding_vs_group_by_length_at_32", "loader_realtime_per_core"}


def test_bench_augment_smallest(capsys):
    args = ["bench", "augment", "--size", "tiny", "--batch", "2", "--seconds", "0.3", "--repeats", "2", "--warmup", "0"]
    assert main(args) == 0
    report = _last_json(capsys)
    assert report["bench"] == "augment" and report["size"] == "tiny"
    assert [r["provider"] for r in report["results"]] == ["step", "speed", "reverb", "noise", "all"]
    for r in report["results"]:
        _timed(r)
        assert r["share_of_step"] > 0


def test_bench_ctc_without_a_gpu_reports_the_bytes_model(capsys):
    assert main(["bench", "ctc", "--cards", "timit", "--dtype", "float32"]) == 0
    report = _last_json(capsys)
    assert report["bench"] == "ctc" and len(report["shapes"]) == 3
    assert all({"fastctc", "torch"} == set(s["bytes_model"]) for s in report["shapes"])
    assert "correctness" in report


def test_bench_onnx_smallest(capsys):
    pytest.importorskip("transformers")
    pytest.importorskip("onnxruntime")
    argv = ["bench", "onnx", "--size", "tiny", "--batch", "2", "--seconds", "0.2", "--repeats", "2", "--warmup", "0"]
    assert main(argv) == 0
    report = _last_json(capsys)
    assert report["bench"] == "onnx" and report["onnxruntime"] and report["size"] == "tiny"
    rows = report["results"]
    assert [r["provider"] for r in rows] == ["onnxruntime", "fastctc", "transformers"]
    for r in rows:
        _timed(r)
        assert r["audio_s_per_s"] > 0 and r["speedup_vs_transformers"] > 0
    assert rows[0]["max_abs_diff_vs_fastctc"] <= 1e-4  # the graph timed is the model timed


def test_bench_rejects_an_unknown_name(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "nope"])
    assert "invalid choice" in capsys.readouterr().err


def test_benchmarks_ship_in_the_package():
    """`fastctc bench` must run from a wheel, where the repository's bench/ folder is absent."""
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    (packages,) = re.findall(r"^packages = \[(.*)\]$", pyproject, re.MULTILINE)
    assert '"fastctc.bench"' in packages


def test_bench_steps_fastctc_provider_is_the_loops_step():
    """The timed fastctc step is train.steps' forward_backward + optimizer_step: its loss is torch's own CTC
    loss ("mean": per target length, then over the batch) in float64 at the weights it starts from, and the
    linear warmup's schedule applies (lr 0 at the first step, then the weights move)."""
    import torch

    pytest.importorskip("transformers")
    from fastctc.bench.pairs import build_pair
    from fastctc.bench.step import fastctc_step, step_inputs
    from fastctc.train.precision import resolve_precision

    cpu = torch.device("cpu")
    _, native = build_pair("wav2vec2-base", "tiny")
    native.eval()  # no SpecAugment draw: the reference sees the same forward
    x = step_inputs(native, 2, 0.2, cpu)
    with torch.no_grad():
        logits, frames = native(x["waves"], x["lengths"] if x["use_mask"] else None)
        expected = torch.nn.functional.ctc_loss(
            logits.double().log_softmax(-1).transpose(0, 1),
            x["targets"],
            frames,
            x["target_lengths"],
            blank=native.config.vocab_size - 1,
            reduction="mean",
            zero_infinity=True,
        )
    before = [p.detach().clone() for p in native.parameters() if p.requires_grad]
    step = fastctc_step(
        native,
        native,
        *(x[k] for k in ("waves", "lengths", "targets", "target_lengths", "use_mask")),
        resolve_precision("fp32", cpu),
        cpu,
    )
    assert float(step()) == pytest.approx(float(expected), rel=1e-5)
    after = [p.detach() for p in native.parameters() if p.requires_grad]
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # warmup's first lr is 0, as in the loop
    step()
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    assert all(p.grad is None for p in native.parameters())  # the loop's zero_grad(set_to_none=True)
