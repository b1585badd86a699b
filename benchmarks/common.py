"""What every benchmark script shares: the command line (``--threads``, ``--out``) and applying
the thread count before anything is timed."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def benchmark_parser(doc: str, results: Path) -> argparse.ArgumentParser:
    """A parser described by the first line of ``doc``, with ``--threads`` and ``--out``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--out", type=Path, default=results, help="where the JSON results go")
    return parser


def parse_benchmark_args(parser: argparse.ArgumentParser, argv: list[str] | None):
    """Parse ``argv`` and set torch's thread count when ``--threads`` is given."""
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args
