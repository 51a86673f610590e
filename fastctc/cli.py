"""The `fastctc` command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import __version__

EXAMPLES = """\
examples:
  fastctc train configs/demo.toml
      train the built-in demo (synthetic speech, from scratch, ~3 min on 2 CPU cores)
  fastctc train configs/demo.toml --set train.max_steps=50 --set optim.lr=3e-4 --out runs/try
      override config keys (type-checked) and choose the run directory
  fastctc train runs/try/config.toml --resume runs/try
      continue an interrupted run exactly (Ctrl-C saves a checkpoint and prints this command)
  torchrun --nproc_per_node 8 -m fastctc train configs/hubert-large-librispeech100.toml --set data.root=/data/LibriSpeech
      multi-GPU training; train.batch_size is per GPU
  fastctc transcribe runs/try a.wav b.flac
  fastctc eval runs/try --data configs/demo.toml
"""


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as e:
        print(f"fastctc train: config error: {e}", file=sys.stderr)
        return 2
    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            print("fastctc train: --resume continues in its own run directory; drop --out", file=sys.stderr)
            return 2
        out = Path(args.resume)
        if not (out / "checkpoint" / "state.json").is_file() and not (out / "checkpoint.old" / "state.json").is_file():
            print(f"fastctc train: --resume {out}: no checkpoint there (expected {out / 'checkpoint'})", file=sys.stderr)
            return 2
    else:
        out = Path(args.out) if args.out else Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        if out.exists() and any(out.iterdir()):
            print(f"fastctc train: run directory {out} already holds files; choose another with --out, "
                  f"or continue it with --resume {out}", file=sys.stderr)
            return 2
    from .train.loop import train

    result = train(cfg, out, resume=bool(args.resume))
    return 130 if "stopped" in result else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastctc",
        description="Fine-tune self-supervised speech encoders with a CTC head, fast.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fastctc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a CTC model from a TOML config",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="TOML config file, e.g. configs/demo.toml")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set optim.lr=3e-4")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/CONFIG-TIMESTAMP)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR exactly where its last checkpoint left off")
    p.set_defaults(func=_cmd_train)

    from .bench import cli as bench
    from .data import stats as data_stats
    from .models import convert, parity
    from .train import inference, plot

    convert.add_parser(sub)
    parity.add_parser(sub)
    data_stats.add_parser(sub)
    inference.add_parsers(sub)
    plot.add_parser(sub)
    bench.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
