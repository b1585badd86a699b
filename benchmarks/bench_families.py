"""No-hook forward and decomposition cost of HookedViT against each family's own model.

For each family, in one process, on the same random weights and inputs, the source model's own
forward (the reference), ``HookedViT.forward`` with no hooks (target <= 1.05x), and the
decomposition pipeline (``run_with_decomposition_cache`` + ``decompose_layers`` +
``decompose_heads`` + ``decompose_tokens``) as a ratio to the bare source forward. Rounds are
interleaved and medians reported. Results go to ``benchmarks/results/bench_families.json``.

    python benchmarks/bench_families.py                  # all families, batch 4, 5 rounds
    python benchmarks/bench_families.py --families dinov2 --batch 2
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from common import benchmark_parser, parse_benchmark_args

import vision_lens as vl

RESULTS = Path(__file__).resolve().parent / "results" / "bench_families.json"


def _open_clip_b16():
    import open_clip

    source = open_clip.create_model("ViT-B-16").eval()
    return source.encode_image, vl.HookedViT.from_open_clip_model(source), (224, 224)


def _timm(name: str, **kwargs):
    def build():
        import timm

        source = timm.create_model(name, pretrained=False, **kwargs).eval()
        size = tuple(source.patch_embed.img_size)
        return source, vl.HookedViT.from_timm(source), size

    return build


def _siglip_b16():
    # open_clip's ViT-B-16-SigLIP image tower is this timm trunk with its MAP head.
    source, model, size = _timm("vit_base_patch16_siglip_224", num_classes=0)()
    return source, model, size


FAMILIES = {
    "open_clip ViT-B-16": _open_clip_b16,
    "timm DINOv2-B/14 (224 px)": _timm("vit_base_patch14_dinov2", img_size=224, num_classes=0),
    "SigLIP-B/16 (MAP head)": _siglip_b16,
}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _pipeline(model, images):
    _, cache = model.run_with_decomposition_cache(images)
    cache.decompose_layers()
    cache.decompose_heads()
    cache.decompose_tokens()


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser(__doc__, RESULTS)
    parser.add_argument("--families", nargs="*", default=None, help="substrings of family names")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parse_benchmark_args(parser, argv)
    results = {}
    for name, build in FAMILIES.items():
        if args.families and not any(f.lower() in name.lower() for f in args.families):
            continue
        torch.manual_seed(0)
        source, model, size = build()
        images = torch.randn(args.batch, 3, *size, generator=torch.Generator().manual_seed(1))
        variants = {
            "source": lambda s=source, x=images: s(x),
            "hooked_vit": lambda m=model, x=images: m(x),
            "decomposition": lambda m=model, x=images: _pipeline(m, x),
        }
        with torch.no_grad():
            err = (model(images) - source(images)).abs().max().item()
            for fn in variants.values():
                fn()  # warm-up
            times = {k: [] for k in variants}
            for _ in range(args.rounds):
                for key, fn in variants.items():
                    times[key].append(_timed(fn))
        med = {k: statistics.median(v) for k, v in times.items()}
        results[name] = {
            "seconds": med,
            "ratio_forward": med["hooked_vit"] / med["source"],
            "ratio_decomposition": med["decomposition"] / med["source"],
            "max_abs_err": err,
        }
        print(
            f"{name}: source {med['source']:.3f}s, hooked {med['hooked_vit']:.3f}s "
            f"({results[name]['ratio_forward']:.2f}x), decomposition "
            f"{med['decomposition']:.3f}s ({results[name]['ratio_decomposition']:.2f}x), "
            f"max err {err:.1e}",
            flush=True,
        )
        del source, model
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "rounds": args.rounds,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
