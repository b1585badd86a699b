"""Cost of the direct-effect decomposition against a bare open_clip forward pass.

ViT-B-16 with random (perturbed) weights, batch 8, float32, CPU, ``torch.no_grad()``:

* (a) ``open_clip``: ``CLIP.encode_image`` (the reference),
* (b) the decomposition pipeline: ``HookedViT.run_with_decomposition_cache`` + ``decompose_heads``
  + ``decompose_tokens`` + ``decompose_heads_tokens(directions=<k random unit directions>)``
  (k = 1000), timed step by step; target (b)/(a) <= 1.5,
* ``decompose_heads_tokens`` with 100 directions, for scale.

**Time.** After warm-up, (a) and the steps of (b) run interleaved round by round, so slow drift
on a shared machine hits all alike; medians over rounds are reported, plus the median of per-round
ratios (each (b) paired with the (a) measured just before it).

**Memory.** Each measurement runs in a fresh subprocess: it builds the model and inputs (and, for a
``decompose_*`` step, the cache it reads), runs the step once as warm-up and frees its result,
then resets the kernel's resident-set high-water mark (``/proc/self/clear_refs``, Linux), runs the
step again and reads ``VmHWM`` from ``/proc/self/status``. ``peak extra`` = high-water mark minus
the resident set just before the step: every byte the step touched at its peak, torch's CPU
allocations included (which ``tracemalloc`` does not see), measured by the kernel rather than by
sampling. The subprocesses run with ``MALLOC_MMAP_THRESHOLD_`` fixed at 128 KiB and call
``malloc_trim(0)`` before the reset, so freed buffers go back to the OS and cannot hide a peak by
being reused. ``beyond output`` subtracts the bytes of what the step returns (alive at the peak).
Repetitions are interleaved across steps; medians are reported.

Usage::

    python benchmarks/bench_decompose.py                 # ViT-B-16, batch 8, 5 rounds
    python benchmarks/bench_decompose.py --rounds 7 --memory-reps 3 --threads 2
    # On a busy shared CPU, one thread avoids waiting on descheduled pool workers at every op:
    python benchmarks/bench_decompose.py --threads 1 \\
        --out benchmarks/results/bench_decompose_1thread.json
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import open_clip
import torch
from common import benchmark_parser, parse_benchmark_args

import vision_lens as vl

RESULTS = Path(__file__).resolve().parent / "results" / "bench_decompose.json"
STEPS_B = ("decomposition_cache", "decompose_heads", "decompose_tokens", "heads_tokens")
MEMORY_PROBES = (
    "encode_image",
    "decomposition_cache",
    "decompose_heads",
    "decompose_tokens",
    "heads_tokens",
    "heads_tokens_small",
    "pipeline",
)
MiB = 2**20


# --------------------------------------------------------------------------------- setup
@torch.no_grad()
def _perturb(module: torch.nn.Module, seed: int = 1) -> None:
    """Randomise what open_clip initialises to constants (LayerNorms, biases, layer scale), as in
    the tests, so that every term of the decomposition is nonzero."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        noise = torch.randn(p.shape, generator=gen)
        if leaf == "gamma":
            p.copy_(0.5 * noise)
        elif p.ndim == 1 and leaf == "weight":
            p.copy_(1.0 + 0.2 * noise)
        elif p.ndim == 1 and leaf.endswith("bias"):
            p.add_(0.1 * noise)


def build(model_name: str, batch: int, k: int, k_small: int):
    torch.manual_seed(0)
    clip = open_clip.create_model(model_name).eval()
    _perturb(clip.visual)
    model = vl.HookedViT.from_open_clip_model(clip)
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, *model.cfg.image_size, generator=gen)
    directions = torch.nn.functional.normalize(
        torch.randn(k, model.cfg.d_embed, generator=gen), dim=-1
    )
    return clip, model, images, directions, directions[:k_small].clone()


def _nbytes(obj) -> int:
    """Bytes of the distinct tensor storages in ``obj`` (what it keeps alive, views included)."""
    storages: dict[int, int] = {}

    def visit(o) -> None:
        if isinstance(o, torch.Tensor):
            storage = o.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        elif isinstance(o, dict):
            for v in o.values():
                visit(v)
        elif isinstance(o, list | tuple):
            for v in o:
                visit(v)
        elif isinstance(o, vl.ActivationCache):
            visit(o.cache_dict)

    visit(obj)
    return sum(storages.values())


# ------------------------------------------------------------------------------ memory
def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _release() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


@torch.no_grad()
def memory_probe(args) -> dict:
    """Runs in a subprocess: peak resident memory of one step, as described in the docstring."""
    clip, model, images, directions, small = build(args.model, args.batch, args.k, args.k_small)
    cache = None
    if args.memory_probe.startswith("decompose") or args.memory_probe.startswith("heads_tokens"):
        _, cache = model.run_with_decomposition_cache(images)
    if args.memory_probe != "encode_image":
        del clip
    steps = {
        "encode_image": lambda: clip.encode_image(images),
        "decomposition_cache": lambda: model.run_with_decomposition_cache(images),
        "decompose_heads": lambda: cache.decompose_heads(),
        "decompose_tokens": lambda: cache.decompose_tokens(),
        "heads_tokens": lambda: cache.decompose_heads_tokens(directions=directions),
        "heads_tokens_small": lambda: cache.decompose_heads_tokens(directions=small),
        "pipeline": lambda: _pipeline(model, images, directions),
    }
    step = steps[args.memory_probe]
    result = step()  # warm-up (one-time allocations: thread pools, kernels)
    del result
    _release()
    before = _status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    result = step()
    peak = _status_bytes("VmHWM")
    out_bytes = _nbytes(result)
    return {
        "rss_before_mib": before / MiB,
        "peak_extra_mib": (peak - before) / MiB,
        "output_mib": out_bytes / MiB,
        "beyond_output_mib": (peak - before - out_bytes) / MiB,
    }


def _pipeline(model, images, directions):
    _, cache = model.run_with_decomposition_cache(images)
    heads = cache.decompose_heads()
    tokens = cache.decompose_tokens()
    scores = cache.decompose_heads_tokens(directions=directions)
    return cache, heads, tokens, scores


def run_memory(args) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    samples: dict[str, list[dict]] = {name: [] for name in MEMORY_PROBES}
    base = [sys.executable, str(Path(__file__).resolve())]
    common = ["--model", args.model, "--batch", str(args.batch), "--k", str(args.k)]
    common += ["--k-small", str(args.k_small)]
    for rep in range(args.memory_reps):
        for name in MEMORY_PROBES:  # interleaved: every probe once per repetition
            out = subprocess.run(
                [*base, *common, "--memory-probe", name],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            samples[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  memory rep {rep + 1}/{args.memory_reps} {name}: {samples[name][-1]}")
    return {
        name: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
        for name, runs in samples.items()
    }


# -------------------------------------------------------------------------------- time
def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


@torch.no_grad()
def run_times(args, clip, model, images, directions, small) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {
        n: [] for n in ("encode_image", *STEPS_B, "heads_tokens_k_small")
    }

    def one_round(record: bool) -> None:
        start = time.perf_counter()
        clip.encode_image(images)
        marks = [start, time.perf_counter()]
        _, cache = model.run_with_decomposition_cache(images)
        marks.append(time.perf_counter())
        heads = cache.decompose_heads()
        marks.append(time.perf_counter())
        tokens = cache.decompose_tokens()
        marks.append(time.perf_counter())
        scores = cache.decompose_heads_tokens(directions=directions)
        marks.append(time.perf_counter())
        del heads, tokens, scores
        gc.collect()
        start_small = time.perf_counter()
        scores = cache.decompose_heads_tokens(directions=small)
        elapsed_small = time.perf_counter() - start_small
        del scores, cache
        gc.collect()
        if record:
            values = [b - a for a, b in zip(marks, marks[1:], strict=False)] + [elapsed_small]
            for name, value in zip(times, values, strict=True):
                times[name].append(value)

    for _ in range(args.warmup):
        one_round(record=False)
    for i in range(args.rounds):
        one_round(record=True)
        print(
            f"  round {i + 1}/{args.rounds}: "
            + ", ".join(f"{n} {v[-1]:.3f}s" for n, v in times.items())
        )
    return times


def main(argv: list[str] | None = None) -> dict | None:
    parser = benchmark_parser(__doc__, RESULTS)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--k", type=int, default=1000, help="directions for (b)")
    parser.add_argument("--k-small", type=int, default=100, help="directions, for comparison")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--memory-reps", type=int, default=3)
    parser.add_argument("--memory-probe", choices=MEMORY_PROBES, help=argparse.SUPPRESS)
    args = parse_benchmark_args(parser, argv)
    if args.memory_probe:
        print(json.dumps(memory_probe(args)))
        return None

    clip, model, images, directions, small = build(args.model, args.batch, args.k, args.k_small)
    with torch.no_grad():  # the pipeline is exact: check before timing it
        ref = clip.encode_image(images)
        _, cache = model.run_with_decomposition_cache(images)
        terms, _ = cache.decompose_layers()
        max_err = (terms.sum(0) - ref).abs().max().item()
        del cache, terms
    load_before = os.getloadavg()[0]
    print(f"timing {args.rounds} interleaved rounds (+{args.warmup} warm-up)")
    times = run_times(args, clip, model, images, directions, small)
    load_after = os.getloadavg()[0]
    cfg = model.cfg
    del clip, model
    gc.collect()
    print(f"memory: {len(MEMORY_PROBES)} probes x {args.memory_reps} interleaved repetitions")
    memory = run_memory(args)

    median = {name: statistics.median(ts) for name, ts in times.items()}
    pipeline = [sum(ts) for ts in zip(*(times[s] for s in STEPS_B), strict=True)]
    median["pipeline"] = statistics.median(pipeline)
    base = median["encode_image"]
    ratio = median["pipeline"] / base
    paired = statistics.median(p / a for p, a in zip(pipeline, times["encode_image"], strict=True))
    b, h, n_layers, n_pos, d_embed = args.batch, cfg.n_heads, cfg.n_layers, cfg.n_pos, cfg.d_embed
    result = {
        "model": args.model,
        "batch": args.batch,
        "dtype": "float32",
        "device": "cpu",
        "k": args.k,
        "k_small": args.k_small,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "memory_reps": args.memory_reps,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average_1min_before_after": [load_before, load_after],
        "max_abs_error_decompose_layers_vs_encode_image": max_err,
        "median_s": median,
        "times_s": times,
        "pipeline_times_s": pipeline,
        "ratio_pipeline_to_encode_image": ratio,
        "paired_ratio_pipeline_to_encode_image": paired,
        "target_ratio": 1.5,
        "within_target": ratio <= 1.5,
        "memory_mib": memory,
        "memory_method": (
            "per step, fresh subprocess, one warm-up run; peak extra = VmHWM (reset via "
            "/proc/self/clear_refs) minus VmRSS just before the step; "
            "MALLOC_MMAP_THRESHOLD_=128KiB and malloc_trim(0) so freed memory is returned to the "
            "OS; median of interleaved reps"
        ),
        "d_embed_wide_heads_tokens_mib": b * n_layers * h * n_pos * d_embed * 4 / MiB,
        "d_embed_wide_heads_tokens_one_layer_mib": b * h * n_pos * d_embed * 4 / MiB,
    }
    print(_markdown(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")
    return result


def _markdown(r: dict) -> str:
    med, mem = r["median_s"], r["memory_mib"]
    base = med["encode_image"]
    rows = [
        ("(a) open_clip `encode_image`", "encode_image", "encode_image"),
        ("(b) total", "pipeline", "pipeline"),
        ("(b1) `run_with_decomposition_cache`", "decomposition_cache", "decomposition_cache"),
        ("(b2) `decompose_heads`", "decompose_heads", "decompose_heads"),
        ("(b3) `decompose_tokens`", "decompose_tokens", "decompose_tokens"),
        (f"(b4) `decompose_heads_tokens`, k={r['k']}", "heads_tokens", "heads_tokens"),
        (
            f"`decompose_heads_tokens`, k={r['k_small']}",
            "heads_tokens_k_small",
            "heads_tokens_small",
        ),
    ]
    lines = [
        f"{r['model']}, batch {r['batch']}, float32, CPU ({r['threads']} threads), torch "
        f"{r['torch']}; median of {r['rounds']} interleaved rounds; memory: median of "
        f"{r['memory_reps']} subprocess runs (kernel RSS high-water mark)",
        "",
        "| step | median s | x (a) | peak extra MiB | output MiB | beyond output MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, t_key, m_key in rows:
        m = mem[m_key]
        lines.append(
            f"| {label} | {med[t_key]:.3f} | {med[t_key] / base:.2f} | {m['peak_extra_mib']:.1f} "
            f"| {m['output_mib']:.1f} | {m['beyond_output_mib']:.1f} |"
        )
    lines += [
        "",
        f"(b)/(a) = {r['ratio_pipeline_to_encode_image']:.2f} (median of per-round ratios "
        f"{r['paired_ratio_pipeline_to_encode_image']:.2f}; target <= {r['target_ratio']}). "
        f"A d_embed-wide head x token tensor would be {r['d_embed_wide_heads_tokens_mib']:.0f} MiB "
        f"({r['d_embed_wide_heads_tokens_one_layer_mib']:.0f} MiB per layer). "
        f"max |sum(decompose_layers) - encode_image| = "
        f"{r['max_abs_error_decompose_layers_vs_encode_image']:.1e}. "
        f"Load average before/after timing: {r['load_average_1min_before_after']}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
