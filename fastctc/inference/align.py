"""Forced alignment of a transcript to audio (`fastctc align`): per-character and per-word times.

The model's logits for the file (in chunks for long audio, fastctc.inference.chunking) go through
the CTC Viterbi pass (fastctc.kernels.ctc_align: the Triton kernel on CUDA, the PyTorch path on CPU).
A character's span is the frames its CTC state holds on the best path ([start, end) in seconds,
frame k covering [k, k+1) x frame_s); its score is the mean posterior probability of the character
over those frames (torchaudio's merge_tokens convention). A word spans its characters; its score is the
mean over the frames of its characters. Words are the transcript's space-separated words; the model
sees the space as its word delimiter `|`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import kernels
from ..data.audio import AudioError, check_waveform, load_audio
from ..data.text import WORD_DELIMITER
from ..errors import FastCTCError
from .chunking import SAMPLE_RATE, chunked_logits, frame_samples
from .model import LoadedModel


class AlignmentError(FastCTCError, ValueError):
    """A transcript that cannot be aligned to its audio (the message says which and why)."""


@dataclass
class Segment:
    text: str
    start: float  # seconds
    end: float
    score: float  # mean posterior probability over its frames


@dataclass
class Alignment:
    audio: str
    transcript: str
    frames: int
    frame_s: float
    log_prob: float  # log-probability of the best path
    chars: list[Segment] = field(default_factory=list)
    words: list[Segment] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    def ctm(self, utt_id: str, channel: str = "1") -> str:
        """Word times as NIST CTM lines: `utt channel start duration word confidence`."""
        return "".join(
            f"{utt_id} {channel} {w.start:.3f} {w.end - w.start:.3f} {w.text} {w.score:.4f}\n" for w in self.words
        )


def encode_transcript(text: str, tokens: list[str], name: str = "transcript") -> tuple[str, list[int]]:
    """(normalised text, label ids): words joined by the word delimiter (just joined when the vocabulary
    has none, as one trained on one-word transcripts); the text as written, else lower- or upper-cased to
    the vocabulary's case. Raises AlignmentError naming what is missing."""
    words = text.split()
    if not words:
        raise AlignmentError(f"{name}: the transcript is empty; give the words spoken in the audio")
    index = {t: i for i, t in enumerate(tokens)}
    for form in (" ".join(words), " ".join(words).lower(), " ".join(words).upper()):
        missing = sorted({c for c in form if c != " " and c not in index})
        if not missing:
            return form, [
                index[c] if c != " " else index[WORD_DELIMITER] for c in form if c != " " or WORD_DELIMITER in index
            ]
    missing = sorted({c for c in " ".join(words) if c != " " and c not in index and c.lower() not in index})
    known = "".join(t for t in tokens if len(t) == 1 and t != WORD_DELIMITER)
    raise AlignmentError(
        f"{name}: characters the model's vocabulary lacks: {' '.join(repr(c) for c in missing)} "
        f"(it has {known!r}); normalise the transcript as the training transcripts were (e.g. drop punctuation)"
    )


def min_frames(ids: list[int]) -> int:
    return len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))


def align_logits(
    logits: torch.Tensor, text: str, tokens: list[str], blank: int, frame_s: float, audio: str = ""
) -> Alignment:
    """logits (T, V) of one file and its transcript -> Alignment."""
    text, ids = encode_transcript(text, tokens, audio or "transcript")
    T = logits.shape[0]
    states, labels, frame_lp, score = kernels.ctc_align(
        logits[None], torch.tensor([ids], device=logits.device), torch.tensor([T]), torch.tensor([len(ids)]), blank
    )
    if not math.isfinite(float(score[0])):
        need = min_frames(ids)
        raise AlignmentError(
            f"{audio or 'audio'}: {T * frame_s:.2f} s of audio ({T} frames of {frame_s * 1000:g} ms) is too short "
            f"for the transcript, which needs at least {need} frames ({len(ids)} characters and word breaks, "
            f"{need - len(ids)} repeated neighbours that need a blank between); is it the right transcript?"
        )
    st = states[0].cpu().numpy()
    prob = frame_lp[0].double().exp().cpu().numpy()
    k_of_frame = np.where(st % 2 == 1, (st - 1) // 2, -1)  # target index held at each frame, -1 on blank
    first = np.full(len(ids), -1)
    last = np.full(len(ids), -1)
    frames = np.flatnonzero(k_of_frame >= 0)
    for t in frames[::-1]:
        first[k_of_frame[t]] = t
    for t in frames:
        last[k_of_frame[t]] = t
    sums = np.bincount(k_of_frame[frames], weights=prob[frames], minlength=len(ids))
    counts = np.bincount(k_of_frame[frames], minlength=len(ids))
    chars, words, word = [], [], []
    has_delimiter = len(ids) == len(text)
    for i, c in enumerate(text):
        if c == " ":
            continue  # the delimiter's frames belong to no word
        k = i if has_delimiter else i - text[:i].count(" ")  # target index of text[i]
        seg = Segment(
            c, float(round(first[k] * frame_s, 6)), float(round((last[k] + 1) * frame_s, 6)), float(sums[k] / counts[k])
        )
        chars.append(seg)
        word.append((seg, k))
        if i + 1 == len(text) or text[i + 1] == " ":
            ks = [j for _, j in word]
            words.append(
                Segment(
                    "".join(s.text for s, _ in word),
                    word[0][0].start,
                    word[-1][0].end,
                    float(sums[ks].sum() / counts[ks].sum()),
                )
            )
            word = []
    return Alignment(audio, text, T, frame_s, float(score[0]), chars, words)


def align_audio(
    loaded: LoadedModel,
    audio: np.ndarray,
    text: str,
    device: torch.device,
    name: str = "",
    chunk_s: float = 30.0,
    stride_s: float | None = None,
    progress=None,
) -> Alignment:
    """16 kHz mono audio and its transcript -> Alignment (long files in chunks of chunk_s seconds).
    Raises AudioError for audio the model cannot take (non-finite samples, shorter than one frame)."""
    encode_transcript(text, loaded.vocab.tokens, name or "transcript")  # a bad transcript fails before the model runs
    check_waveform(audio, name or "audio", loaded.model.config)
    logits = chunked_logits(loaded.model, audio, device, loaded.do_normalize, chunk_s, stride_s, progress=progress).to(
        device
    )
    return align_logits(
        logits, text, loaded.vocab.tokens, loaded.blank, frame_samples(loaded.model) / SAMPLE_RATE, name
    )


def read_transcript(text_or_file: str) -> str:
    """A transcript as the command line gives it: the text of the file of that name, else the text itself."""
    try:
        is_file = Path(text_or_file).is_file()
    except OSError:  # e.g. a long transcript is no valid file name
        is_file = False
    return Path(text_or_file).read_text(encoding="utf-8") if is_file else text_or_file


def align_file(loaded: LoadedModel, audio_path: str, transcript: str, device: torch.device, chunk_s: float = 30.0):
    """`fastctc align AUDIO TRANSCRIPT`: the Alignment of one audio file to its transcript (text, or a file)."""
    audio = load_audio(audio_path, SAMPLE_RATE)
    return align_audio(loaded, audio, read_transcript(transcript), device, name=audio_path, chunk_s=chunk_s)


def align_manifest(
    loaded: LoadedModel, utterances, device: torch.device, chunk_s: float = 30.0, on_skip=None
) -> list[tuple[str, Alignment]]:
    """`fastctc align --manifest`: (id, Alignment) per utterance that aligns; one that does not (its audio,
    its transcript) is passed to `on_skip(id, error)` and never stops the others."""
    done = []
    for u in utterances:
        try:
            done.append((u.id, align_audio(loaded, load_audio(u.path, SAMPLE_RATE), u.text, device, u.path, chunk_s)))
        except (AlignmentError, AudioError, OSError, RuntimeError) as e:
            if on_skip is not None:
                on_skip(u.id, e)
    return done


def write_alignments(alignments: list[tuple[str, Alignment]], json_path, ctm_path=None) -> None:
    with open(json_path, "w", encoding="utf-8") as f:
        for _, al in alignments:
            f.write(json.dumps(al.to_json(), ensure_ascii=False) + "\n")
    if ctm_path is not None:
        with open(ctm_path, "w", encoding="utf-8") as f:
            for uid, al in alignments:
                f.write(al.ctm(uid))
