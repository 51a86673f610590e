"""The `fastctc` command line."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from . import __version__

EXAMPLES = """\
examples:
  fastctc train configs/demo.toml
      train the built-in demo (synthetic speech, from scratch, on a CPU; its time is in the README)
  fastctc train configs/demo.toml --set train.max_steps=50 --set optim.lr=3e-4 --out runs/try
      override config keys (type-checked) and choose the run directory
  fastctc train runs/try/config.toml --resume runs/try
      continue an interrupted run exactly (Ctrl-C saves a checkpoint and prints this command)
  torchrun --nproc_per_node 8 -m fastctc train configs/hubert-large-librispeech100.toml --set data.root=/data/LibriSpeech
      multi-GPU training; train.batch_size is per GPU
  fastctc transcribe runs/try a.wav b.flac
  fastctc eval runs/try --data configs/demo.toml
  fastctc export runs/try --onnx try.onnx
"""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a batch size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as e:
        print(f"fastctc train: config error: {e}", file=sys.stderr)
        return 2
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        print("fastctc train: --resume continues in its own run directory; drop --out", file=sys.stderr)
        return 2
    out = Path(args.resume or args.out or Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    from .train.loop import train

    result = train(cfg, out, resume=bool(args.resume))  # checks the run directory before any data is read
    return 128 + result.get("signal", signal.SIGINT) if "stopped" in result else 0  # 130 Ctrl-C, 143 SIGTERM


def _beam_options(args):
    from .inference.lm import BeamOptions

    return BeamOptions(beam_threshold=args.beam_threshold, lm_weight=args.lm_weight, word_score=args.word_score)


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from .device import device_for
    from .inference.lm import decoder_for
    from .inference.model import load_model
    from .inference.transcribe import transcribe

    device = device_for(args.device)
    model = load_model(args.model, device)
    decoder = decoder_for(model, args.lm, args.lexicon, args.beam, _beam_options(args))

    def progress(path, done, total):  # only for files long enough to need several chunks
        if total > 1:
            print(f"fastctc transcribe: {path}: {done}/{total} chunks", file=sys.stderr, flush=True)

    options = dict(batch_size=args.batch_size, chunk_s=args.chunk_s, stride_s=args.stride_s, decoder=decoder)
    failed = 0
    for path, text, error in transcribe(model, args.audio, device, progress=progress, **options):
        if error is not None:
            print(f"fastctc transcribe: skipping {path}: {error.problem}", file=sys.stderr)
            failed += 1
        else:
            print(f"{path}\t{text}", flush=True)
    return 0 if not failed else 2 if failed == len(args.audio) else 1  # 2: nothing could be read


def _eval_usage_problem(args: argparse.Namespace, cfg) -> str | None:
    from .data.phones import score_fold

    if score_fold(cfg.data) is not None and (args.lm or args.beam or args.lm_sweep):
        return (
            "--lm, --beam and --lm-sweep decode words; phone targets (data.targets=phones) are scored greedily, "
            "drop those options"
        )
    if args.lm_sweep and args.lm is None:
        return "--lm-sweep needs --lm FILE"
    return None


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from .inference.evaluate import eval_config, evaluate_model, score_text
    from .inference.report import check_report_dir

    cfg = eval_config(args.data, args.set)
    problem = _eval_usage_problem(args, cfg)
    if problem:
        print(f"fastctc eval: {problem}", file=sys.stderr)
        return 2
    if args.report:
        check_report_dir(args.report)  # before anything runs: a bad --report never costs an evaluation
    model_dir, result = evaluate_model(
        args.model,
        cfg,
        args.device,
        batch_size=args.batch_size,
        lm=args.lm,
        lexicon=args.lexicon,
        beam=args.beam,
        beam_options=_beam_options(args),
        sweep=(_floats(args.lm_weights), _floats(args.word_scores)) if args.lm_sweep else None,
        report_dir=args.report,
        chunk_s=args.chunk_s,
    )
    if "sweep" in result:
        print(f"{'lm_weight':>9} {'word_score':>10} {'WER':>7} {'CER':>7}")
        for r in result["sweep"]:
            print(f"{r['lm_weight']:9.2f} {r['word_score']:10.2f} {r['wer']:7.4f} {r['cer']:7.4f}")
        print(f"best: --lm-weight {result['lm_weight']} --word-score {result['word_score']} (WER {result['wer']:.4f})")
    skipped = f" | {result['skipped']} skipped (named above)" if result["skipped"] else ""
    print(
        f"eval {model_dir} on {cfg.data.corpus}:{cfg.data.eval} | {result['utterances']} utterances{skipped} | "
        f"{result['decoder']} | {score_text(result, cfg.data.score_phone_set)} | "
        f"{result['audio_s_per_s'] or 0:.0f} audio-s/s"
    )
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result) + "\n")
    return 0


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def _add_decoder_options(p) -> None:
    p.add_argument(
        "--lm", metavar="FILE", help="word n-gram LM (ARPA or KenLM binary) for beam search; needs fastctc[lm]"
    )
    p.add_argument("--lexicon", metavar="FILE", help="the LM's words, one per line (required for a KenLM binary)")
    p.add_argument("--beam", type=int, metavar="N", help="beam search with N hypotheses (default 50 with --lm)")
    p.add_argument("--lm-weight", type=float, default=2.0, help="LM weight (default 2.0)")
    p.add_argument("--word-score", type=float, default=0.0, help="score added per word (default 0.0)")
    p.add_argument(
        "--beam-threshold",
        type=float,
        default=50.0,
        help="drop hypotheses this far (log-prob) below the best; lower is faster (default 50)",
    )


def _cmd_align(args: argparse.Namespace) -> int:
    import json

    from .device import device_for
    from .inference.align import align_file, align_manifest, write_alignments
    from .inference.model import load_model

    if (args.manifest is None) == (args.audio is None or args.transcript is None):
        print("fastctc align: give AUDIO and TRANSCRIPT, or --manifest FILE --out DIR", file=sys.stderr)
        return 2
    if args.manifest is not None and not args.out:
        print("fastctc align: --manifest needs --out DIR (alignments.jsonl and words.ctm go there)", file=sys.stderr)
        return 2
    device = device_for(args.device)
    model = load_model(args.model, device)
    if args.manifest is None:
        al = align_file(model, args.audio, args.transcript, device, chunk_s=args.chunk_s)
        if args.ctm:
            Path(args.ctm).write_text(al.ctm(Path(args.audio).stem), encoding="utf-8")
        doc = json.dumps(al.to_json(), ensure_ascii=False, indent=1)
        if args.out:
            Path(args.out).write_text(doc + "\n", encoding="utf-8")
        else:
            print(doc)
        return 0
    from .data.manifest import read_manifest
    from .data.report import DataReport

    skipped = []

    def skip(uid, error):
        print(f"fastctc align: skipping {uid}: {error}", file=sys.stderr)
        skipped.append(uid)

    utterances = read_manifest("", args.manifest, DataReport(), "align")
    done = align_manifest(model, utterances, device, chunk_s=args.chunk_s, on_skip=skip)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_alignments(done, out / "alignments.jsonl", out / "words.ctm")
    print(
        f"fastctc align: {len(done)} aligned, {len(skipped)} skipped -> {out / 'alignments.jsonl'}, {out / 'words.ctm'}"
    )
    return 0 if not skipped else 2 if not done else 1


def _add_inference_commands(sub) -> None:
    _add_transcribe_command(sub)
    _add_eval_command(sub)
    _add_align_command(sub)


def _add_transcribe_command(sub) -> None:
    p = sub.add_parser(
        "transcribe",
        help="greedy CTC transcription of audio files",
        description="Print PATH<TAB>TEXT for each audio file (any rate or channel layout soundfile reads).",
    )
    p.add_argument("model", help="run directory or Transformers-format CTC checkpoint directory")
    p.add_argument("audio", nargs="+", help="audio files")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    _add_decoder_options(p)
    p.add_argument(
        "--chunk-s",
        type=float,
        default=30.0,
        help="files longer than this run in overlapping chunks of this many seconds (default 30)",
    )
    p.add_argument(
        "--stride-s",
        type=float,
        default=None,
        help="context dropped on each side of a chunk, in seconds (default chunk / 6)",
    )
    p.set_defaults(func=_cmd_transcribe)


def _add_eval_command(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="WER and CER (PER for phone targets) of a model on an evaluation split",
        description="Evaluate MODEL on the eval split of a config's [data] section, or on a manifest.",
    )
    p.add_argument("model", help="run directory or Transformers-format CTC checkpoint directory")
    p.add_argument("--data", required=True, help="a TOML config (its [data] section) or a .jsonl/.tsv manifest")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=8,
        help="utterances per batch (default 8); any size scores exactly as one at a time",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--chunk-s",
        type=float,
        default=30.0,
        help="utterances longer than this run alone in overlapping chunks (default 30)",
    )
    _add_decoder_options(p)
    p.add_argument(
        "--lm-sweep",
        action="store_true",
        help="grid-search --lm-weights x --word-scores, print the table, then score with the best pair",
    )
    p.add_argument("--lm-weights", default="0,0.5,1,1.5,2,3", help="LM weights of the sweep (comma-separated)")
    p.add_argument("--word-scores", default="-2,-1,0,1", help="word scores of the sweep (comma-separated)")
    p.add_argument(
        "--report",
        metavar="DIR",
        help="write per-utterance errors, the .pra alignment, confusions and the worst utterances into DIR",
    )
    p.add_argument("--json", metavar="FILE", help="also write the result JSON (the last line printed) to FILE")
    p.set_defaults(func=_cmd_eval)


def _add_align_command(sub) -> None:
    p = sub.add_parser(
        "align",
        help="forced alignment: character and word times of a transcript in audio",
        description="Align TRANSCRIPT (text, or a text file) to AUDIO and print JSON with per-character "
        "and per-word start/end times and scores; or a whole manifest with --manifest.",
    )
    p.add_argument("model", help="run directory or Transformers-format CTC checkpoint directory")
    p.add_argument("audio", nargs="?", help="audio file")
    p.add_argument("transcript", nargs="?", help="the words spoken (text, or a file holding it)")
    p.add_argument("--manifest", help="a .jsonl/.tsv manifest (audio, text) to align utterance by utterance")
    p.add_argument("--out", help="JSON file (one audio), or directory (--manifest)")
    p.add_argument("--ctm", help="also write word times as CTM to this file (one audio)")
    p.add_argument("--chunk-s", type=float, default=30.0, help="logits of longer files in chunks (default 30 s)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=_cmd_align)


def _cmd_convert(args: argparse.Namespace) -> int:
    from .models.convert import convert

    for path in convert(args.in_dir, args.out_dir):
        print(path)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import torch

    from .inference.model import load_model
    from .inference.onnx_export import export_onnx, require_onnx

    require_onnx()  # before the model loads: a missing package costs nothing
    done = export_onnx(load_model(args.model, torch.device("cpu")), args.onnx)
    print(
        f"fastctc export: {done.path} ({done.bytes / 2**20:.1f} MiB); onnxruntime vs fastctc on {len(done.check_rows)} "
        f"padded rows of {'/'.join(map(str, done.check_rows))} samples: max |logit difference| {done.max_abs_diff:.2g} "
        f"({done.rel_diff:.2g} of the largest logit)"
    )
    return 0


def _cmd_parity(args: argparse.Namespace) -> int:
    import json

    from .errors import MissingHeadError
    from .models.parity import compare

    options = dict(
        seconds=args.seconds,
        batch=args.batch,
        repeats=args.repeats,
        seed=args.seed,
        per_tensor=not args.summary,
        float64=args.float64,
    )
    try:
        result = compare(args.checkpoint, args.vocab_size, **options)
    except MissingHeadError:  # only raised when no --vocab-size was given
        print("checkpoint has no CTC head: using a fresh one of 32 tokens (set --vocab-size)")
        result = compare(args.checkpoint, 32, **options)
    print(json.dumps(result))
    return 0


def _cmd_data_stats(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config
    from .data.dataset import CorpusError
    from .data.stats import stats

    try:
        print(stats(load_config(args.config, args.set)))
    except (ConfigError, CorpusError) as e:
        print(f"fastctc data stats: {e}", file=sys.stderr)
        return 2
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .plot import plot_run

    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir / "curves.png"
    print(plot_run(run_dir, out, say=lambda message: print(f"fastctc plot: {message}", file=sys.stderr)))
    return 0


def _add_tool_commands(sub) -> None:
    p = sub.add_parser("convert", help="turn a pytorch_model.bin checkpoint into safetensors (no unpickling of code)")
    p.add_argument("in_dir", help="checkpoint directory with pytorch_model.bin (or its sharded index)")
    p.add_argument("out_dir", help="directory to write model.safetensors and copies of the other files")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser(
        "export",
        help="export a finished model to ONNX (dynamic batch and length, checked by onnxruntime)",
        description="Write MODEL as an ONNX graph: input_values (B, N) and input_lengths (B,) -> logits (B, T, V) "
        "and logit_lengths (B,), with the normalisation, attention-mask convention and vocabulary in its "
        "metadata. Needs fastctc[onnx].",
    )
    p.add_argument("model", help="run directory (its best/ or model/) or Transformers-format CTC checkpoint directory")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "parity", help="compare the native model with transformers on a checkpoint (logits, gradients, time)"
    )
    p.add_argument("checkpoint", help="Transformers checkpoint directory (config.json + safetensors)")
    p.add_argument(
        "--vocab-size", type=int, default=None, help="CTC head size for a checkpoint without one (default 32)"
    )
    p.add_argument("--seconds", type=float, default=2.0, help="audio length of the longest row (default 2.0)")
    p.add_argument("--batch", type=int, default=2, help="rows; with padding they shrink to 60%% (default 2)")
    p.add_argument("--repeats", type=int, default=1, help="timed repetitions per side, median reported (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--summary", action="store_true", help="omit the per-tensor gradient lines")
    p.add_argument(
        "--float64", action="store_true", help="also measure both sides' gradients against transformers in float64"
    )
    p.set_defaults(func=_cmd_parity)

    p = sub.add_parser("data", help="inspect a config's corpus (fastctc data stats CONFIG)")
    data_sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    s = data_sub.add_parser(
        "stats", help="per split: utterances, hours, durations, transcripts, skips, vocabulary, padding"
    )
    s.add_argument("config", help="TOML config file whose [data] section names the corpus")
    s.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config key (repeatable), e.g. --set data.root=/data/timit",
    )
    s.set_defaults(func=_cmd_data_stats)

    p = sub.add_parser("plot", help="plot loss, WER/CER and lr curves of a run to a PNG (needs matplotlib)")
    p.add_argument("run_dir", help="a run directory written by fastctc train")
    p.add_argument("--out", help="PNG path (default RUN_DIR/curves.png)")
    p.set_defaults(func=_cmd_plot)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastctc",
        description="Fine-tune self-supervised speech encoders with a CTC head, fast.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fastctc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a CTC model from a TOML config",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="TOML config file, e.g. configs/demo.toml")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config key (repeatable), e.g. --set optim.lr=3e-4",
    )
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/CONFIG-TIMESTAMP)")
    p.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly where its last checkpoint left off"
    )
    p.set_defaults(func=_cmd_train)

    _add_inference_commands(sub)
    _add_tool_commands(sub)
    from .bench import cli as bench

    bench.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    import pickle
    import re

    from .errors import FastCTCError

    command = " ".join(a for a in (args.command, getattr(args, "data_command", None)) if a)
    try:
        return args.func(args)
    except FastCTCError as e:  # what the user gave is wrong: one line that names it, no traceback
        message = str(e)
    except UnicodeDecodeError as e:  # a text file that is not UTF-8 (a library reader names its file itself)
        message = (
            f"a file is not UTF-8 ({e.reason} at byte {e.start}); convert it, e.g. "
            "iconv -f latin1 -t utf-8 FILE > FILE.utf8"
        )
    except pickle.UnpicklingError as e:  # torch.load(weights_only=True) refused code; never repeat its advice
        called = re.search(r"GLOBAL (\S+)", str(e))
        message = (
            f"refused to unpickle a file that calls {called.group(1) if called else 'code'}, not only tensors: "
            "fastctc never runs code from a file"
        )
    except OSError as e:  # a missing file or folder, permissions, a full or read-only disk
        where = f"{e.filename}: " if e.filename else ""
        message = f"{where}{e.strerror or e}"
    print(f"fastctc {command}: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
