"""`fastctc bench NAME [ARGS...]`: run one of the benchmarks in fastctc.bench with its own arguments."""

from __future__ import annotations

import argparse
import importlib

from . import BENCHMARKS
from . import __doc__ as OVERVIEW

EPILOG = """\
examples:
  fastctc bench encoder --families wav2vec2-base --repeats 7
  fastctc bench step --precision bf16          (on a GPU)
  fastctc bench data --part padding
  fastctc bench NAME --help                    each benchmark's own options
"""


def _main(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"fastctc.bench.{args.name}")
    module.main(args.args)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench",
        help="run a benchmark: " + ", ".join(BENCHMARKS),
        description=(OVERVIEW or "").strip(),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", choices=BENCHMARKS, help="which benchmark")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own arguments (NAME --help lists them)")
    p.set_defaults(func=_main)
    return p
