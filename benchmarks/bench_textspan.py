"""TextSpan at the paper's size: vectorised ``vision_lens.textspan`` against the literal loop.

The paper runs TextSpan on the 64 heads of ViT-L's last four layers, with 5,000 images, a pool
of 3,498 descriptions, ``d_embed = 768``, ``m = 60`` and ``rank = 80``. This benchmark builds
random data of that size (each head: low-rank structure plus noise and an offset, like real head
outputs; unit random texts), then in one run:

* times the literal per-head loop (``tests/textspan_reference.py``: SVD, then ``m`` rounds of
  ``C @ R^T``, variances, deflation; float64) on ``--literal-heads`` heads and extrapolates
  linearly to all heads (the loop treats heads independently, so its cost is linear in them);
* times ``vision_lens.textspan`` on all heads (float32 input, float64 inside);
* checks that both chose identical texts on the heads both ran, and the largest differences of
  explained variance and reconstruction.

Results go to ``benchmarks/results/bench_textspan.json``.

Usage::

    nice -n 10 python benchmarks/bench_textspan.py
    python benchmarks/bench_textspan.py --heads 8 --images 1000 --literal-heads 1  # quick
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import torch

from vision_lens.analysis.textspan import textspan

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "bench_textspan.json"
sys.path.insert(0, str(ROOT / "tests"))
from common import benchmark_parser, parse_benchmark_args  # noqa: E402
from support.textspan_reference import textspan_literal  # noqa: E402


def make_data(
    n_heads: int, n_images: int, n_texts: int, d: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random head outputs ``[head, images, d]`` (float32) and unit texts ``[n_texts, d]``."""
    g = torch.Generator().manual_seed(seed)
    outputs = torch.empty(n_heads, n_images, d)
    latent = 96
    decay = torch.logspace(0, -1.5, latent)  # decaying variance along 96 latent directions
    for h in range(n_heads):
        directions = torch.randn(latent, d, generator=g) / d**0.5
        coefficients = torch.randn(n_images, latent, generator=g) * decay
        noise = 0.05 * torch.randn(n_images, d, generator=g) / d**0.5
        offset = 0.5 * torch.randn(d, generator=g) / d**0.5
        outputs[h] = coefficients @ directions + noise + offset
    texts = torch.randn(n_texts, d, generator=g)
    return outputs, texts / texts.norm(dim=-1, keepdim=True)


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser(__doc__, RESULTS)
    parser.add_argument("--heads", type=int, default=64)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--texts", type=int, default=3498)
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--m", type=int, default=60)
    parser.add_argument("--rank", type=int, default=80)
    parser.add_argument("--literal-heads", type=int, default=2)
    parser.add_argument("--head-chunk", type=int, default=8)
    args = parse_benchmark_args(parser, argv)

    outputs, texts = make_data(args.heads, args.images, args.texts, args.d)
    n_lit = min(args.literal_heads, args.heads)

    literal_times, literal = [], []
    for h in range(n_lit):
        start = time.perf_counter()
        literal.append(textspan_literal(outputs[h], texts, args.m, args.rank))
        literal_times.append(time.perf_counter() - start)
        print(f"literal loop, head {h}: {literal_times[-1]:.2f} s", flush=True)
    literal_per_head = sum(literal_times) / n_lit
    literal_all = literal_per_head * args.heads

    start = time.perf_counter()
    result = textspan(outputs, texts, args.m, args.rank, head_chunk=args.head_chunk)
    fast_all = time.perf_counter() - start
    print(f"vision_lens.textspan, {args.heads} heads: {fast_all:.2f} s", flush=True)

    same = [torch.equal(lit["indices"], result.indices[h]) for h, lit in enumerate(literal)]
    explained_err = max(
        float((lit["explained"] - result.explained_variance[h]).abs().max())
        for h, lit in enumerate(literal)
    )
    relative_explained_err = max(
        float(((lit["explained"] - result.explained_variance[h]) / lit["total"]).abs().max())
        for h, lit in enumerate(literal)
    )
    recon_err = max(
        float((lit["reconstruction"] - result.reconstruction[h].double()).abs().max())
        for h, lit in enumerate(literal)
    )
    fraction = result.explained_fraction[:, -1]

    out = {
        "workload": {
            "heads": args.heads,
            "images": args.images,
            "texts": args.texts,
            "d_embed": args.d,
            "m": args.m,
            "rank": args.rank,
            "data": "random: per head 96 latent directions with decaying variance + noise + offset",
        },
        "literal_heads_timed": n_lit,
        "literal_s_per_head": literal_times,
        "literal_s_all_heads_extrapolated": literal_all,
        "extrapolation": f"literal mean per head x {args.heads} heads (linear: heads independent)",
        "fast_s_all_heads": fast_all,
        "speedup": literal_all / fast_all,
        "target_fast_s": 60.0,
        "fast_within_target": fast_all <= 60.0,
        "identical_picks_on_literal_heads": all(same),
        "picks_identical_per_head": same,
        "max_abs_explained_variance_diff": explained_err,
        "max_rel_explained_variance_diff": relative_explained_err,
        "max_abs_reconstruction_diff": recon_err,
        "explained_fraction_at_m": {
            "min": float(fraction.min()),
            "median": float(fraction.median()),
            "max": float(fraction.max()),
        },
        "dtype": "float32 input, float64 compute (both)",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }

    w = out["workload"]
    print(
        f"\nTextSpan: {w['heads']} heads x {w['images']} images x {w['texts']} texts, "
        f"d_embed {w['d_embed']}, m={w['m']}, rank {w['rank']}; CPU, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'variant':<50}{'seconds':>10}")
    print(
        f"{f'literal loop ({n_lit} heads timed, x{args.heads / n_lit:g} extrapolated)':<50}"
        f"{literal_all:>10.1f}"
    )
    print(f"{'vision_lens.textspan (all heads)':<50}{fast_all:>10.1f}")
    print(
        f"speedup {out['speedup']:.0f}x; identical picks on the {n_lit} literal heads: {all(same)}"
    )
    print(
        f"max |explained variance diff| = {explained_err:.2e} (relative to total "
        f"{relative_explained_err:.1e}); max |reconstruction diff| = {recon_err:.2e}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"saved {args.out}")
    if not all(same):
        raise SystemExit("picks differ from the literal loop")
    return out


if __name__ == "__main__":
    main()
