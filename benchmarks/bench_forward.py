"""Forward-pass cost of HookedViT against open_clip.

Times, in one process and on the same random weights and inputs:

* ``open_clip``: ``CLIP.encode_image`` (the reference),
* ``hooked_vit``: ``HookedViT.forward`` with no hooks attached (target: <= 1.10x open_clip),
* ``run_with_cache``: ``HookedViT.run_with_cache`` caching every hook point.

After warm-up runs the three are interleaved round by round (A B C, A B C, ...) and the median
per variant is reported, so slow drift on a shared machine hits all of them alike. Results go to
``benchmarks/results/bench_forward.json``.

Usage::

    python benchmarks/bench_forward.py               # ViT-B-16, batch 8, 7 rounds
    python benchmarks/bench_forward.py --model ViT-B-32 --batch 4 --rounds 9
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

import open_clip
import torch
from common import benchmark_parser, parse_benchmark_args

import vision_lens as vl

RESULTS = Path(__file__).resolve().parent / "results" / "bench_forward.json"


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser(__doc__, RESULTS)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    args = parse_benchmark_args(parser, argv)
    torch.manual_seed(0)
    clip = open_clip.create_model(args.model).eval()
    model = vl.HookedViT.from_open_clip_model(clip)
    size = model.cfg.image_size
    images = torch.randn(args.batch, 3, *size, generator=torch.Generator().manual_seed(1))

    load_before = os.getloadavg()[0]
    variants = {
        "open_clip": lambda: clip.encode_image(images),
        "hooked_vit": lambda: model(images),
        "run_with_cache": lambda: model.run_with_cache(images),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.no_grad():
        ref = clip.encode_image(images)
        max_err = (model(images) - ref).abs().max().item()
        for _ in range(args.warmup):
            for fn in variants.values():
                fn()
        for _ in range(args.rounds):
            for name, fn in variants.items():
                times[name].append(_timed(fn))

    median = {name: statistics.median(ts) for name, ts in times.items()}
    base = median["open_clip"]
    ratios = {name: m / base for name, m in median.items()}
    # Best case (least disturbed run) of each, also robust to bursts of load from other users.
    min_ratios = {name: min(ts) / min(times["open_clip"]) for name, ts in times.items()}
    # Per-round ratios pair each measurement with the open_clip one taken right before it, which
    # is more robust to load changes on a shared machine than the ratio of medians.
    paired = {
        name: statistics.median(t / b for t, b in zip(ts, times["open_clip"], strict=True))
        for name, ts in times.items()
    }
    result = {
        "model": args.model,
        "batch": args.batch,
        "dtype": "float32",
        "device": "cpu",
        "rounds": args.rounds,
        "warmup": args.warmup,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "median_s": median,
        "times_s": times,
        "ratio_to_open_clip": ratios,
        "paired_ratio_to_open_clip": paired,
        "min_ratio_to_open_clip": min_ratios,
        "target_hooked_vit_ratio": 1.10,
        "hooked_vit_within_target": ratios["hooked_vit"] <= 1.10,
        "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
        "max_abs_error_vs_open_clip": max_err,
    }

    print(
        f"{args.model}, batch {args.batch}, float32, CPU, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; median of {args.rounds} interleaved rounds"
    )
    print(
        f"{'variant':<16}{'median s':>10}{'min s':>10}{'max s':>10}{'x open_clip':>13}"
        f"{'paired x':>10}{'min x':>10}"
    )
    for name in variants:
        ts = times[name]
        print(
            f"{name:<16}{median[name]:>10.3f}{min(ts):>10.3f}{max(ts):>10.3f}"
            f"{ratios[name]:>13.3f}{paired[name]:>10.3f}{min_ratios[name]:>10.3f}"
        )
    print(f"max |HookedViT - open_clip| = {max_err:.2e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")
    return result


if __name__ == "__main__":
    main()
