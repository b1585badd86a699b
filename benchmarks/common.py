"""What every benchmark script shares: the command line (``--threads``, ``--out``) and applying
the thread count before anything is timed."""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import signal
import traceback
from collections.abc import Callable
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


def status_kb(field: str) -> int:
    """A field of ``/proc/self/status`` in kB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS; False where ``/proc/self/clear_refs`` is not
    writable."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def trim_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so the
    next measurement starts from what is really held."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run_in_fork(measure: Callable[[], dict], timeout: float, failed: dict) -> dict:
    """``measure()`` in a forked child (a fresh allocator, the parent's imports), its JSON result
    sent back through a pipe. A child that raises, hangs past ``timeout`` seconds (``SIGALRM``)
    or dies returns ``failed`` plus an ``"error"`` entry instead."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: measure, send the result, leave without running the parent's cleanup
        code = 0
        try:
            os.close(read_fd)
            signal.alarm(max(1, int(timeout)))  # a hung child dies; the parent records it
            try:
                out = measure()
            except Exception:
                out = {**failed, "error": traceback.format_exc()}
            with os.fdopen(write_fd, "w") as pipe:
                pipe.write(json.dumps(out))
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if data:
        return json.loads(data)
    return {**failed, "error": f"worker exited with status {status}"}
