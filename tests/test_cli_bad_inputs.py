"""Bad inputs to the inference and tool commands, through `cli.main`: each ends in one line that names the
file and the problem (exit code 2 where nothing could be done), never a traceback or a silent wrong answer.
The broken files are written by hand: NaN samples, 0 frames, 200 samples, 0 bytes, text named .wav."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from fastctc.cli import main
from fastctc.data.synthetic import make_utterance
from tiny_inference_model import save_tiny_model

FIX = "soundfile reads WAV, FLAC, NIST SPHERE and OGG: convert it, e.g. ffmpeg -i FILE -ar 16000 -ac 1 FILE.wav, or leave it out"
PROBLEMS = {  # file -> what every command says of it (the tiny model's conv stack: wav2vec2's, 400 samples)
    "nan.wav": "16000 non-finite samples (NaN or inf) of 16000; the file is damaged: export it again, or leave it out",
    "zero.wav": "shorter than one frame (0 samples; the conv stack needs 400)",
    "short.wav": "shorter than one frame (200 samples; the conv stack needs 400)",
    "empty.wav": f"an empty file (0 bytes); {FIX}",
    "text.wav": f"not audio soundfile can read (Format not recognised); {FIX}",
    "missing.wav": "no such file (check the path)",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    save_tiny_model(d / "model")
    sf.write(d / "good.wav", make_utterance(0, "eval", 0).audio, 16_000)
    nan = np.full(16_000, np.nan, dtype=np.float32)
    nan[::2] = np.inf
    sf.write(d / "nan.wav", nan, 16_000, subtype="FLOAT")
    sf.write(d / "zero.wav", np.zeros(0, dtype=np.float32), 16_000)
    sf.write(d / "short.wav", 0.1 * np.random.default_rng(0).standard_normal(200).astype(np.float32), 16_000)
    (d / "empty.wav").write_bytes(b"")
    (d / "text.wav").write_text("this is a transcript, not audio\n")
    return d


def _lines(text: str) -> list[str]:
    assert "Traceback" not in text, text
    return text.splitlines()


@pytest.mark.parametrize("chunked", [False, True])
def test_transcribe_skips_and_names_each_bad_file(files, capsys, chunked):
    paths = [str(files / name) for name in ("good.wav", *PROBLEMS)]
    extra = ["--chunk-s", "0.5"] if chunked else []  # good.wav is longer: every file goes the chunked way
    assert main(["transcribe", str(files / "model"), *paths, *extra]) == 1  # some files could not be read
    out, err = capsys.readouterr()
    assert [line.split("\t")[0] for line in _lines(out)] == [paths[0]]
    skips = [line for line in _lines(err) if not line.endswith(" chunks")]  # progress of the chunked file
    assert skips == [f"fastctc transcribe: skipping {files / name}: {problem}" for name, problem in PROBLEMS.items()]
    assert main(["transcribe", str(files / "model"), str(files / "nan.wav"), *extra]) == 2  # nothing could be read


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_align_names_the_bad_audio_in_one_line(files, capsys, name):
    assert main(["align", str(files / "model"), str(files / name), "a b"]) == 2
    assert _lines(capsys.readouterr().err) == [f"fastctc align: {files / name}: {PROBLEMS[name]}"]


def test_align_a_manifest_skips_bad_audio_and_aligns_the_rest(files, tmp_path, capsys):
    import json

    manifest = tmp_path / "m.jsonl"
    names = ["good.wav", *PROBLEMS]
    manifest.write_text("".join(json.dumps({"id": n, "audio": str(files / n), "text": "a b"}) + "\n" for n in names))
    assert main(["align", str(files / "model"), "--manifest", str(manifest), "--out", str(tmp_path / "al")]) == 1
    out, err = capsys.readouterr()
    assert _lines(err) == [f"fastctc align: skipping {n}: {files / n}: {p}" for n, p in PROBLEMS.items()]
    assert "1 aligned, 6 skipped" in out
    assert len((tmp_path / "al" / "alignments.jsonl").read_text().splitlines()) == 1
