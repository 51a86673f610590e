"""bench features without training: each row's overrides are a valid config that turns on its feature
(and only it), `all together` is every row at once, and the table's mean ± sd is statistics'."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from fastctc.bench import features
from fastctc.config import load_config

BASE = str(Path(__file__).resolve().parents[1] / "configs" / "mini-fsdd-scratch.toml")


def config_of(row: str):
    return load_config(BASE, features.row_sets(row, "/corpus", []), check_paths=False)


def switched_on(cfg) -> set[str]:
    on = set()
    if cfg.augment.speed_prob > 0:
        on.add("speed")
    if cfg.augment.noise_prob > 0:
        on.add("noise")
    if cfg.augment.rir_prob > 0:
        on.add("reverb")
    if cfg.model.encoder.mask_feature_prob:
        on.add("channel mask")
    if cfg.optim.schedule == "tri_stage" and cfg.train.freeze_finetune_steps > 0:
        on.add("fairseq schedule")
    if cfg.train.weight_average == "ema":
        on.add("weight averaging (ema)")
    return on


@pytest.mark.parametrize("row", list(features.ROWS))
def test_each_row_is_a_valid_config_with_its_feature_alone(row):
    cfg = config_of(row)
    expected = set(features.ROWS) - {"none", "all together"} if row == "all together" else {row} - {"none"}
    assert switched_on(cfg) == expected
    assert (cfg.train.epochs, cfg.train.eval_every, cfg.train.max_steps) == (3, 0, 0)  # the same steps everywhere
    if "noise" in expected:
        assert cfg.augment.noise_dir == "/corpus/noise/train"  # training never reads the test noise
    if "reverb" in expected:
        assert cfg.augment.rir_dir == "/corpus/rir/train"


def test_table_gives_mean_sd_per_seed_and_the_step_time_against_none():
    rng = np.random.default_rng(0)
    results = [
        {"row": row, "seed": s, "clean_wer": float(rng.uniform()), "noisy_wer": float(rng.uniform()), "step_s": step}
        for row, step in (("none", 0.1), ("speed", 0.12))
        for s in (1, 2, 3)
    ]
    lines = features.table(results, ["none", "speed"])
    speed = [r for r in results if r["row"] == "speed"]
    noisy = [r["noisy_wer"] for r in speed]
    assert lines[3].startswith("| speed |")
    assert f"{statistics.fmean(noisy):.3f} ± {np.std(noisy, ddof=1):.3f}" in lines[3]
    assert ", ".join(f"{v:.3f}" for v in noisy) in lines[3]
    assert "120.0 ms (+20%)" in lines[3]


def test_final_event_is_the_last_final_line(tmp_path):
    assert features.final_event(tmp_path) is None
    events = [{"event": "log", "step": 1}, {"event": "final", "step": 9, "wer": 0.5}, {"event": "skip", "step": 3}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    assert features.final_event(tmp_path) == events[1]


def test_an_unknown_row_and_a_missing_corpus_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        features.main([BASE, "--corpus", str(tmp_path), "--out", str(tmp_path), "--rows", "speeed"])
    assert "unknown row 'speeed'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        features.main([BASE, "--corpus", str(tmp_path), "--out", str(tmp_path)])
    assert "has no test.jsonl" in capsys.readouterr().err
