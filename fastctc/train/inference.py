"""`fastctc transcribe` and `fastctc eval`: a trained model on audio files or an evaluation split.

MODEL is a Transformers-format CTC checkpoint directory (config.json, model.safetensors, vocab.json;
preprocessor_config.json optional), or a fastctc run directory, whose `best/` or `model/` it uses.
The checkpoint's own conventions apply: `do_normalize` from its preprocessor config (default true), and
no attention mask when the preprocessor says `return_attention_mask: false` (group-norm checkpoints).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.text import WORD_DELIMITER
from .distributed import DistInfo, device_for


@dataclass
class DecoderVocab:
    """ids -> text for any CTC vocab.json: fastctc's ([UNK], [PAD]) or other tokenizers' (<pad>, <unk>, ...)."""

    tokens: list[str]
    blank: int
    specials: frozenset[int]

    def decode(self, ids) -> str:
        chars = (self.tokens[i] for i in ids if i != self.blank and i not in self.specials)
        return " ".join("".join(" " if c == WORD_DELIMITER else c for c in chars).split())


@dataclass
class LoadedModel:
    model: torch.nn.Module
    vocab: DecoderVocab
    do_normalize: bool
    use_lengths: bool
    path: Path


def resolve_model_dir(path: str | Path) -> Path:
    path = Path(path)
    for candidate in (path, path / "best", path / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    raise SystemExit(
        f"{path}: no model here; expected a Transformers-format checkpoint (config.json + model.safetensors "
        "+ vocab.json) or a fastctc run directory holding best/ or model/"
    )


def load_model(path: str | Path, device: torch.device) -> LoadedModel:
    from ..models import load_pretrained

    path = resolve_model_dir(path)
    vocab_file = path / "vocab.json"
    if not vocab_file.is_file():
        raise SystemExit(f"{path}: no vocab.json, so the CTC head's ids cannot be turned into text")
    index = json.loads(vocab_file.read_text(encoding="utf-8"))
    tokens = sorted(index, key=index.get)
    config = json.loads((path / "config.json").read_text())
    blank = config.get("pad_token_id")
    if blank is None:
        blank = index.get("[PAD]", index.get("<pad>"))
    if blank is None:
        raise SystemExit(f"{path}: cannot tell the CTC blank: config.json has no pad_token_id and vocab.json no [PAD]/<pad>")
    specials = frozenset(i for t, i in index.items() if t in ("<s>", "</s>", "[UNK]", "<unk>"))
    pre_file = path / "preprocessor_config.json"
    pre = json.loads(pre_file.read_text()) if pre_file.is_file() else {}
    model = load_pretrained(path).to(device).eval()
    if model.config.vocab_size != len(tokens):
        raise SystemExit(f"{path}: vocab.json has {len(tokens)} tokens but the CTC head {model.config.vocab_size}")
    return LoadedModel(
        model=model,
        vocab=DecoderVocab(tokens, int(blank), specials),
        do_normalize=bool(pre.get("do_normalize", True)),
        use_lengths=bool(pre.get("return_attention_mask", model.config.feat_extract_norm == "layer")),
        path=path,
    )


@torch.no_grad()
def transcribe_arrays(lm: LoadedModel, audios: list[np.ndarray], device: torch.device) -> list[str]:
    from ..data.batching import pad_waveforms
    from ..decoding import greedy_ids

    waves, lengths = pad_waveforms(audios, lm.do_normalize)
    logits, logit_lengths = lm.model(waves.to(device), lengths.to(device) if lm.use_lengths else None)
    if not lm.use_lengths:  # padded frames are audio to this model; decode only each file's own frames
        logit_lengths = lm.model.feature_extractor.output_lengths(lengths.to(device)).clamp(max=logits.shape[1])
    return [lm.vocab.decode(ids) for ids in greedy_ids(logits, logit_lengths, lm.vocab.blank)]


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from ..data.audio import load_audio

    device = device_for(DistInfo(), args.device)
    lm = load_model(args.model, device)
    failed = 0
    for start in range(0, len(args.audio), args.batch_size):
        paths = args.audio[start : start + args.batch_size]
        audios, ok = [], []
        for p in paths:
            try:
                audios.append(load_audio(p, 16_000))
                ok.append(p)
            except Exception as e:  # one unreadable file never stops the others
                print(f"fastctc transcribe: skipping {p}: {e}", file=sys.stderr)
                failed += 1
        if not audios:
            continue
        for p, text in zip(ok, transcribe_arrays(lm, audios, device)):
            print(f"{p}\t{text}", flush=True)
    return 1 if failed else 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..config import ConfigError, load_config
    from ..data.corpora import build_datasets
    from ..metrics import cer, wer

    device = device_for(DistInfo(), args.device)
    overrides = list(args.set)
    data_path = Path(args.data)
    if data_path.suffix in (".jsonl", ".tsv"):
        overrides += ["data.corpus=manifest", f"data.eval={data_path}", f"data.train={data_path}"]
        config_path = None
    else:
        config_path = data_path
    try:
        cfg = load_config(config_path, overrides)
    except ConfigError as e:
        print(f"fastctc eval: config error: {e}", file=sys.stderr)
        return 2
    lm = load_model(args.model, device)
    _, eval_ds, _ = build_datasets(cfg.data, cfg.train.seed)
    t0 = time.time()
    refs, hyps = [], []
    order = np.argsort(eval_ds.durations)
    for start in range(0, len(order), args.batch_size):
        idx = order[start : start + args.batch_size]
        items = [it for it in (eval_ds[int(i)] for i in idx) if it.audio is not None]
        audios = [it.audio for it in items]
        refs += [it.text for it in items]
        hyps += transcribe_arrays(lm, audios, device)
    result = {"utterances": len(refs), "wer": wer(refs, hyps), "cer": cer(refs, hyps), "seconds": time.time() - t0}
    print(f"eval {lm.path} on {cfg.data.corpus}:{cfg.data.eval} | {len(refs)} utterances | "
          f"WER {result['wer']:.4f} | CER {result['cer']:.4f} | {result['seconds']:.1f} s")
    print(json.dumps(result))
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("transcribe", help="greedy CTC transcription of audio files",
                       description="Print PATH<TAB>TEXT for each audio file (any rate or channel layout soundfile reads).")
    p.add_argument("model", help="run directory or Transformers-format CTC checkpoint directory")
    p.add_argument("audio", nargs="+", help="audio files")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=_cmd_transcribe)

    p = sub.add_parser("eval", help="WER and CER of a model on an evaluation split",
                       description="Evaluate MODEL on the eval split of a config's [data] section, or on a manifest.")
    p.add_argument("model", help="run directory or Transformers-format CTC checkpoint directory")
    p.add_argument("--data", required=True, help="a TOML config (its [data] section) or a .jsonl/.tsv manifest")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=_cmd_eval)
