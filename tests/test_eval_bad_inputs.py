"""`fastctc eval` on bad inputs (NaN samples, long files, references the model cannot spell, wrong
arguments): every utterance is scored or named, and a wrong argument is one line before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from tiny_inference_model import save_tiny_model, write_corpus

from fastctc.cli import main


def _manifest(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_nan_samples_are_counted_and_named(tmp_path, capsys):
    model = save_tiny_model(tmp_path / "model")
    manifest, utts = write_corpus(tmp_path / "corpus", n=3)
    bad = np.full(8000, np.nan, dtype=np.float32)
    sf.write(tmp_path / "corpus" / "nan.wav", bad, 16_000, subtype="FLOAT")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()] + [
        {"id": "nan", "audio": "nan.wav", "text": "a b"}
    ]
    _manifest(manifest, rows)
    assert main(["eval", str(model), "--data", str(manifest)]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["utterances"] == 3 and result["skipped"] == 1
    assert "nan.wav" in captured.err and "1 skipped" in captured.out
    assert "nothing skipped" not in result["data"]


def test_an_eval_manifest_of_long_files_keeps_every_utterance(tmp_path, capsys):
    """The 20 s cap is the training split's; eval scores files of any length (longer than --chunk-s in
    chunks), and never reads the training split."""
    model = save_tiny_model(tmp_path / "model")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(2):
        sf.write(tmp_path / f"long{i}.wav", (rng.standard_normal(16_000 * 21) * 0.1).astype(np.float32), 16_000)
        rows.append({"audio": f"long{i}.wav", "text": "a b c"})
    manifest = _manifest(tmp_path / "long.jsonl", rows)
    assert main(["eval", str(model), "--data", str(manifest), "--chunk-s", "10"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["utterances"] == 2 and result["skipped"] == 0
    assert result["audio_s"] == pytest.approx(42.0)


@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_batch_size_must_be_a_positive_integer(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as e:
        main(["eval", str(tmp_path), "--data", str(tmp_path / "m.jsonl"), "--batch-size", value])
    assert e.value.code == 2
    assert "--batch-size" in capsys.readouterr().err


def test_report_at_an_existing_file_is_refused_before_the_model_loads(tmp_path, capsys):
    (tmp_path / "report").write_text("not a folder")
    # no model and no data there: a refusal before the model loads names the report, not them
    assert (
        main(
            [
                "eval",
                str(tmp_path / "no-model"),
                "--data",
                str(tmp_path / "m.jsonl"),
                "--report",
                str(tmp_path / "report"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastctc eval: --report") and "a file is in the way" in err and len(err.splitlines()) == 1


def test_references_the_model_cannot_spell_are_reported(tmp_path, capsys):
    model = save_tiny_model(tmp_path / "model")
    manifest, utts = write_corpus(tmp_path / "corpus", n=2)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[0]["text"] = rows[0]["text"] + " zzz9"
    _manifest(manifest, rows)
    assert main(["eval", str(model), "--data", str(manifest)]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert "cannot output" in captured.err and "9" in captured.err and result["utterances"] == 2


def test_json_writes_the_printed_result_to_a_file(tmp_path, capsys):
    """`--json FILE` is how another program (fastctc bench recipe) reads a result: the same document as
    the last line printed, scored independently here with jiwer."""
    jiwer = pytest.importorskip("jiwer")
    model = save_tiny_model(tmp_path / "model")
    manifest, _ = write_corpus(tmp_path / "corpus", n=3)
    out = tmp_path / "result.json"
    assert main(["eval", str(model), "--data", str(manifest), "--json", str(out), "--report", str(tmp_path / "r")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    written = json.loads(out.read_text())
    assert written == printed and written["utterances"] == 3
    rows = [json.loads(line) for line in (tmp_path / "r" / "utterances.jsonl").read_text().splitlines()]
    refs, hyps = [r["ref"] for r in rows], [r["hyp"] for r in rows]
    assert written["wer"] == pytest.approx(jiwer.wer(refs, hyps))
