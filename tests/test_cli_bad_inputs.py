"""Bad inputs to the inference and tool commands, through `cli.main`: each ends in one line that names the
file and the problem (exit code 2 where nothing could be done), never a traceback or a silent wrong answer.
The broken files are written by hand: NaN samples, 0 frames, 200 samples, 0 bytes, text named .wav."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from tiny_inference_model import save_tiny_model

from fastctc.cli import main
from fastctc.data.synthetic import make_utterance

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


class _WritesAMarker:
    """Unpickled, this would run `open(marker, "w")`: code, not a tensor."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _pickled_code(folder, marker):
    import torch

    folder.mkdir()
    torch.save({"weight": _WritesAMarker(marker)}, folder / "pytorch_model.bin")
    (folder / "config.json").write_text("{}")
    return folder


def test_convert_refuses_pickled_code_in_one_line_and_leaves_no_out_dir(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    src = _pickled_code(tmp_path / "evil", marker)
    assert main(["convert", str(src), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert _lines(err) == [
        f"fastctc convert: {src / 'pytorch_model.bin'}: refused: the pickle calls io.open, "
        "not only tensors, and fastctc never runs code from a checkpoint; get the checkpoint as "
        "model.safetensors, or a pytorch_model.bin that holds only its state_dict"
    ]
    assert "weights_only" not in err and not marker.exists() and not (tmp_path / "out").exists()


def test_convert_of_a_truncated_or_empty_bin_is_one_line(tmp_path, capsys):
    import torch

    for name, cut in (("truncated", 0.5), ("empty", 0.0)):
        src = tmp_path / name
        src.mkdir()
        torch.save({"w": torch.randn(64, 64)}, src / "pytorch_model.bin")
        data = (src / "pytorch_model.bin").read_bytes()
        (src / "pytorch_model.bin").write_bytes(data[: int(len(data) * cut)])
        assert main(["convert", str(src), str(tmp_path / f"out-{name}")]) == 2
        (line,) = _lines(capsys.readouterr().err)
        assert line.startswith(f"fastctc convert: {src / 'pytorch_model.bin'}: damaged or not a PyTorch checkpoint (")
        assert line.endswith("); download or copy it again") and not (tmp_path / f"out-{name}").exists()
    assert main(["convert", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    assert _lines(capsys.readouterr().err) == [
        f"fastctc convert: {tmp_path / 'nowhere'}: no pytorch_model.bin or pytorch_model.bin.index.json to convert"
    ]


def test_a_damaged_safetensors_header_is_named_wherever_it_is_read(files, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(files / "model", model)
    weights = model / "model.safetensors"
    weights.write_bytes(b"\xff" * 8 + weights.read_bytes()[8:])  # the header length, garbled
    expected = (
        f"{weights}: damaged or not a safetensors file (Error while deserializing header: header too large); "
        "download or copy it again"
    )
    for argv in (
        ["transcribe", str(model), str(files / "good.wav")],
        ["align", str(model), str(files / "good.wav"), "a"],
        ["parity", str(model), "--seconds", "0.1", "--summary"],
    ):
        assert main(argv) == 2
        assert _lines(capsys.readouterr().err) == [f"fastctc {argv[0]}: {expected}"]


def test_parity_on_a_folder_that_is_not_a_model_and_plot_into_a_missing_folder(tmp_path, capsys):
    (tmp_path / "not-a-model").mkdir()
    assert main(["parity", str(tmp_path / "not-a-model")]) == 2
    assert _lines(capsys.readouterr().err) == [
        f"fastctc parity: {tmp_path / 'not-a-model'}: no config.json (expected a Transformers checkpoint directory)"
    ]
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"event": "train", "step": 1, "loss": 1.0, "lr": 0.1}\n')
    out = tmp_path / "missing" / "curves.png"
    assert main(["plot", str(run), "--out", str(out)]) == 2
    assert _lines(capsys.readouterr().err) == [
        f"fastctc plot: --out {out}: the folder {out.parent} does not exist; create it (mkdir -p {out.parent}) or "
        "choose another path"
    ]


def test_main_turns_os_unicode_and_unpickling_errors_into_one_line(files, tmp_path, capsys, monkeypatch):
    good = str(files / "good.wav")
    # OSError: the JSON goes to a folder that does not exist
    assert main(["align", str(files / "model"), good, "a b", "--out", str(tmp_path / "no" / "al.json")]) == 2
    assert _lines(capsys.readouterr().err) == [
        f"fastctc align: {tmp_path / 'no' / 'al.json'}: No such file or directory"
    ]
    # UnicodeDecodeError: a latin-1 transcript file
    transcript = tmp_path / "t.txt"
    transcript.write_bytes("caf\xe9".encode("latin-1"))
    assert main(["align", str(files / "model"), good, str(transcript)]) == 2
    assert _lines(capsys.readouterr().err) == [
        "fastctc align: a file is not UTF-8 (unexpected end of data at byte 3); convert it, e.g. "
        "iconv -f latin1 -t utf-8 FILE > FILE.utf8"
    ]
    # the unpickling refusal, raised past any library message: torch's advice is never repeated
    import torch

    from fastctc.models import convert as convert_module

    marker = tmp_path / "MARKER"
    evil = _pickled_code(tmp_path / "evil", marker) / "pytorch_model.bin"
    monkeypatch.setattr(convert_module, "convert", lambda *a: torch.load(evil, weights_only=True))
    assert main(["convert", str(evil.parent), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert _lines(err) == [
        "fastctc convert: refused to unpickle a file that calls io.open, not only tensors: "
        "fastctc never runs code from a file"
    ]
    assert "weights_only" not in err and not marker.exists()
