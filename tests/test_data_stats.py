"""`fastctc data stats CONFIG` on a small LibriSpeech-layout corpus, through the CLI entry point."""

from data_corpus_builders import librispeech

from fastctc.cli import main


def test_data_stats_prints_each_split_skips_vocabulary_and_padding(tmp_path, capsys):
    librispeech(tmp_path / "ls")
    config = tmp_path / "ls.toml"
    config.write_text(
        f'[data]\ncorpus = "librispeech"\nroot = "{tmp_path / "ls"}"\ntrain = "train-clean-100+train-clean-360"\n'
        f'eval = "dev-clean"\ncache_dir = "{tmp_path / "cache"}"\n[train]\nbatch_size = 2\n'
    )
    assert main(["data", "stats", str(config)]) == 0
    out = capsys.readouterr().out
    assert "[train] train-clean-100+train-clean-360" in out and "[eval] dev-clean" in out
    assert "utterances    5 (3 speakers)" in out and "utterances    2 (1 speakers)" in out
    assert "duration s    min 0.80 / median 1.00 / max 1.50" in out
    assert "2 skipped (1 audio file missing, 1 audio without a transcript)" in out
    assert "fastctc (3 batches of 2 utterances" in out and "group_by_length" in out and "random (batch 2)" in out
    assert "vocabulary    " in out and "(blank = [PAD] =" in out


def test_data_stats_reports_a_bad_root_in_one_line(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text(f'[data]\ncorpus = "timit"\nroot = "{tmp_path / "none"}"\ntrain = "train"\neval = "test"\n')
    assert main(["data", "stats", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastctc data stats: data.root: TIMIT folder") and "TRAIN/DR1..DR8" in err and "\n" not in err
