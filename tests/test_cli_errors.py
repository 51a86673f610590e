"""What a user sees when the input is wrong: one line naming the file and the fix, exit code 2."""

from __future__ import annotations

import shutil
from pathlib import Path

from fastctc.cli import main

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.toml"
TINY = [
    "--set",
    "model.hidden_size=16",
    "--set",
    "model.num_attention_heads=2",
    "--set",
    "model.intermediate_size=16",
    "--set",
    "model.conv_dim=[8, 8, 8, 8, 8, 8, 8]",
    "--set",
    "model.num_conv_pos_embedding_groups=2",
    "--set",
    "model.num_hidden_layers=1",
    "--set",
    "train.threads=1",
    "--set",
    "train.eval_every=0",
    "--set",
    "data.synthetic_train_size=8",
    "--set",
    "data.synthetic_eval_size=2",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.max_steps=1",
]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.rstrip("\n")


def test_train_on_an_empty_corpus_root(tmp_path, capsys):
    (tmp_path / "timit").mkdir()
    rc = main(
        [
            "train",
            str(DEMO),
            "--set",
            "data.corpus=timit",
            "--set",
            f"data.root={tmp_path / 'timit'}",
            "--set",
            "data.train=train",
            "--set",
            "data.eval=test",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert rc == 2
    err = _one_line(capsys)
    assert err.startswith(f"fastctc train: data.root: {tmp_path / 'timit'} does not look like TIMIT")


def test_resume_from_a_truncated_checkpoint_names_the_file_and_the_previous_one(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(DEMO), *TINY, "--out", str(run)]) == 0
    weights = run / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy cut short
    capsys.readouterr()
    assert main(["train", str(run / "config.toml"), "--resume", str(run)]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"fastctc train: {weights} is damaged (")
    assert err.endswith("no earlier checkpoint is kept, so start the run again (without --resume)")

    # an intact previous checkpoint kept beside it (as a crash between save_checkpoint's renames leaves one)
    assert main(["train", str(DEMO), *TINY, "--out", str(tmp_path / "good")]) == 0
    shutil.copytree(tmp_path / "good" / "checkpoint", run / "checkpoint.old")
    capsys.readouterr()
    assert main(["train", str(run / "config.toml"), "--resume", str(run)]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"fastctc train: {weights} is damaged (")
    assert err.endswith(
        f"the previous checkpoint {run / 'checkpoint.old'} is intact: move it to {run / 'checkpoint'} to resume from it"
    )
