"""Long audio in overlapping chunks (fastctc.inference.chunking) against whole-file decoding."""

import numpy as np
import pytest
import torch

from fastctc.data.synthetic import make_utterance
from fastctc.decoding import greedy_ids
from fastctc.inference.chunking import ChunkingError, chunked_logits, plan_windows
from fastctc.inference.model import load_model


def saved_model(tmp_path, local: bool):
    """Saved and loaded back as `fastctc transcribe` loads it."""
    from tiny_inference_model import save_tiny_model

    return load_model(save_tiny_model(tmp_path / f"m{local}", layers=2, local=local), torch.device("cpu"))


def stitched(n: int) -> np.ndarray:
    """A long recording: n generated utterances back to back (~1-2 s each)."""
    return np.concatenate([make_utterance(3, "train", i).audio for i in range(n)])


@torch.no_grad()
def whole_logits(lm, audio):
    from fastctc.data.batching import pad_waveforms

    waves, lengths = pad_waveforms([audio], lm.do_normalize)
    return lm.model(waves, lengths if lm.attention_mask else None)[0][0]


def test_windows_cover_every_frame_once_inside_the_strides():
    hop, chunk, stride = 320, 320 * 50, 320 * 8
    for n in [16_000 * 7 + 123, 320 * 50 + 1, 16_000 * 3, 999_999]:
        n_frames = (n - 400) // 320 + 1
        ws = plan_windows(n, n_frames, chunk, stride, hop)
        assert ws[0].keep_from == 0 and ws[-1].keep_to == n_frames and ws[-1].end == n
        for a, b in zip(ws, ws[1:]):
            assert a.keep_to == b.keep_from  # contiguous, no frame twice
            assert b.keep_from * hop >= b.start + stride  # left stride dropped
            assert (a.keep_to - 1) * hop + 400 <= a.end - stride + 80  # right stride dropped (frame = 400 samples)
        for w in ws:  # every kept frame lies inside its window
            assert w.start <= w.keep_from * hop and (w.keep_to - 1) * hop + 400 <= w.end


def test_chunked_equals_whole_file_for_a_model_that_sees_less_than_the_stride(tmp_path):
    # attention silenced: the receptive field (conv features + 8-frame positional conv) is under 0.2 s,
    # inside the 1 s stride, so every kept frame must equal the whole-file frame
    lm = saved_model(tmp_path, local=True)
    audio = stitched(8)
    assert len(audio) > 16_000 * 10
    whole = whole_logits(lm, audio)
    calls = []
    chunked = chunked_logits(
        lm.model,
        audio,
        torch.device("cpu"),
        lm.do_normalize,
        chunk_s=4.0,
        stride_s=1.0,
        batch_size=3,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-4)
    n = torch.tensor([whole.shape[0]])
    assert greedy_ids(chunked[None], n, lm.blank) == greedy_ids(whole[None], n, lm.blank)
    assert calls[-1][0] == calls[-1][1] > 1


def test_file_within_one_chunk_is_the_whole_file_computation(tmp_path):
    lm = saved_model(tmp_path, local=False)  # global attention: only a single window can match exactly
    audio = stitched(2)
    chunked = chunked_logits(lm.model, audio, torch.device("cpu"), lm.do_normalize, chunk_s=len(audio) / 16_000 + 0.5)
    assert torch.equal(chunked, whole_logits(lm, audio).float())


@pytest.mark.parametrize(
    "chunk, stride, message", [(2.0, 1.0, "chunk > 2 x stride"), (2.0, 0.0, "stride >= one frame")]
)
def test_bad_chunk_settings(tmp_path, chunk, stride, message):
    lm = saved_model(tmp_path, local=True)
    with pytest.raises(ChunkingError, match=message):
        chunked_logits(lm.model, stitched(3), torch.device("cpu"), lm.do_normalize, chunk_s=chunk, stride_s=stride)


def test_audio_shorter_than_a_frame(tmp_path):
    lm = saved_model(tmp_path, local=True)
    with pytest.raises(ChunkingError, match="shorter than one frame"):
        chunked_logits(lm.model, np.zeros(100, dtype=np.float32), torch.device("cpu"), lm.do_normalize)


def test_cli_transcribe_in_chunks_equals_whole_file(tmp_path, capsys):
    from tiny_inference_model import long_recording, save_tiny_model

    from fastctc.cli import main

    model = save_tiny_model(tmp_path / "model", local=True)  # local model: chunking must not change anything
    wav = tmp_path / "long.wav"
    long_recording(wav, n=8)
    assert main(["transcribe", str(model), str(wav), "--chunk-s", "1000"]) == 0
    whole = capsys.readouterr().out
    assert main(["transcribe", str(model), str(wav), "--chunk-s", "4", "--stride-s", "1"]) == 0
    out = capsys.readouterr()
    assert out.out == whole and len(whole.split("\t")[1].strip()) > 0
    assert "chunks" in out.err  # progress for a long input
