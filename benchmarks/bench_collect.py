"""Throughput and memory of ``vl.collect`` against a bare forward pass of the same model.

On one of two models (``--model``), float32, every call under ``torch.no_grad()``:

* ``shapes`` (default): the shipped shapes-world CLIP (``vl.load_shapes_clip()``: 6 layers,
  4 heads, width 128, 64 px images, 65 tokens), batches of 64 (``--batch``), 256 / 1,024 /
  4,096 images (``--quick``: 32 / 64 / 128 in batches of 16); the images are 256 shapes-world
  scenes (``vl.shapes.generate(256, seed=0)``, preprocessed once);
* ``vit-b16``: a ViT-B/16-sized tower as open_clip's ``ViT-B-16`` image tower (224 px, 16 px
  patches, 12 layers x 12 heads, width 768, MLP 3,072, output 512, 197 tokens), randomly
  initialised (``HookedViT(config).init_weights(seed=0)``: nothing to download), batches of 16,
  16 / 64 / 256 images (``--quick``: 4 / 8 / 16 in batches of 4); the images are 16 (4)
  standard-normal ``[3, 224, 224]`` tensors (seed 0).

It measures over the same images:

* ``forward``: the bare forward ``model(images)``, batch by batch, the batches assembled from the
  dataset exactly as ``collect`` assembles them;
* ``collect``: ``vl.collect(model, data, ["heads", "tokens"], out, directions=D)`` with ``D``
  100 random unit text directions ``[100, d_embed]`` (seed 0): every head's and every token's
  direct effect projected on them, written to shards in a temporary folder (default
  ``shard_size`` = 8 batches, no progress bar).

Images/s of each and their ratio (``collect / forward``; the target is >= 0.9), and the peak
resident set size during ``collect`` (``VmHWM``, reset through ``/proc/self/clear_refs`` just
before it; on CUDA also ``max_memory_allocated``) at 1x, 4x and 16x dataset sizes: per-image
products go to disk shard by shard, so the peak stays flat as the dataset grows.

The image bank is read in a cycle by a lazy dataset, so the data in memory is the same at every
size. Each size runs in
a fresh ``fork`` of a parent that has only imported the libraries (no computation, no CUDA), so
one size's allocator state cannot help another; in it the model loads, one batch of each call
warms up, then ``forward`` and ``collect`` alternate ``--rounds`` times (the ratio is the median
of the per-round ratios). MB are 2**20 bytes.

Results go to ``benchmarks/results/bench_collect.json`` (``bench_collect_vit_b16.json`` for
``--model vit-b16``; ``_quick`` before ``.json`` with ``--quick``); a markdown table is printed.

Usage::

    python benchmarks/bench_collect.py                  # 256 / 1,024 / 4,096 images, batch 64
    python benchmarks/bench_collect.py --quick          # 32 / 64 / 128 images, batch 16
    python benchmarks/bench_collect.py --model vit-b16  # 16 / 64 / 256 images, batch 16
    python benchmarks/bench_collect.py --device cuda    # records the GPU's name
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import (
    benchmark_parser,
    parse_benchmark_args,
    reset_peak_rss,
    run_in_fork,
    status_kb,
    trim_memory,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULTS = RESULTS_DIR / "bench_collect.json"
MODELS = {
    "shapes": {
        "full": {"sizes": [256, 1024, 4096], "batch": 64, "bank": 256},
        "quick": {"sizes": [32, 64, 128], "batch": 16, "bank": 32},
        "describe": "vl.load_shapes_clip() (6 layers, 4 heads, d_model 128, 64 px, 65 tokens)",
        "short": "shapes CLIP",
        "results": "bench_collect",
    },
    "vit-b16": {
        "full": {"sizes": [16, 64, 256], "batch": 16, "bank": 16},
        "quick": {"sizes": [4, 8, 16], "batch": 4, "bank": 4},
        "describe": (
            "ViT-B/16-sized tower, random init (12 layers, 12 heads, d_model 768, d_mlp 3072, "
            "d_embed 512, 224 px, 16 px patches, 197 tokens)"
        ),
        "short": "ViT-B/16 (random init)",
        "results": "bench_collect_vit_b16",
    },
}
N_DIRECTIONS = 100
WHAT = ["heads", "tokens"]
MB = 2**20


def build_parser():
    parser = benchmark_parser(__doc__, RESULTS)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--model", choices=sorted(MODELS), default="shapes", help="the model (default shapes)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (shapes: 32/64/128)")
    parser.add_argument("--batch", type=int, default=None, help="images per batch (shapes: 64)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=None, help="dataset sizes (shapes: 256 1024 4096)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="forward/collect alternations")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per size")
    return parser


# ------------------------------------------------------------------ memory
# ------------------------------------------------------------------ one size (in a fork)
class CycledImages(torch.utils.data.Dataset):
    """``n`` images read in a cycle from a fixed bank of preprocessed images (the data in memory
    does not grow with ``n``)."""

    def __init__(self, bank: torch.Tensor, n: int):
        self.bank, self.n = bank, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.bank[index % len(self.bank)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load(name: str, bank_size: int, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model (eval mode, on ``device``) and its bank of preprocessed images."""
    import vision_lens as vl

    if name == "shapes":
        from vision_lens.shapes.encoding import images_to_tensor

        model, _ = vl.load_shapes_clip(device=device)
        bank = images_to_tensor(vl.shapes.generate(bank_size, seed=0).images)
    else:
        cfg = vl.HookedViTConfig(
            n_layers=12,
            d_model=768,
            n_heads=12,
            d_mlp=3072,
            d_embed=512,
            image_size=224,
            patch_size=16,
            model_name="ViT-B-16 (random init)",
        )
        model = vl.HookedViT(cfg).init_weights(seed=0).to(device)
        generator = torch.Generator().manual_seed(0)
        bank = torch.randn(bank_size, 3, 224, 224, generator=generator)
    return model.eval(), bank


def measure(n: int, args, cfg: dict) -> dict:
    import vision_lens as vl

    device = torch.device(args.device)
    model, bank = load(args.model, cfg["bank"], device)
    data = CycledImages(bank, n)
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(N_DIRECTIONS, model.cfg.d_embed, generator=generator)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    batch = cfg["batch"]

    def forward(count: int) -> None:
        with torch.no_grad():
            for lo in range(0, count, batch):
                images = torch.stack([data[i] for i in range(lo, min(count, lo + batch))])
                model(images.to(device, model.dtype))
        _sync(device)

    def run_collect(folder: str, source) -> None:
        vl.collect(
            model, source, WHAT, folder, batch_size=batch, directions=directions, progress=False
        )
        _sync(device)

    with tempfile.TemporaryDirectory() as tmp:  # warm-up: one batch of each
        forward(min(n, batch))
        run_collect(tmp, CycledImages(bank, min(n, batch)))
    trim_memory()

    forward_s, collect_s, peaks, peaks_cuda = [], [], [], []
    rss_before = None
    for r in range(args.rounds):
        t = time.perf_counter()
        forward(n)
        forward_s.append(time.perf_counter() - t)
        trim_memory()
        with tempfile.TemporaryDirectory() as tmp:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            before = status_kb("VmRSS") * 1024
            rss_before = before if rss_before is None else rss_before
            exact = reset_peak_rss()
            t = time.perf_counter()
            run_collect(str(Path(tmp) / f"run{r}"), data)
            collect_s.append(time.perf_counter() - t)
            peaks.append(status_kb("VmHWM") * 1024 if exact else status_kb("VmRSS") * 1024)
            if device.type == "cuda":
                peaks_cuda.append(torch.cuda.max_memory_allocated(device) / MB)
            stored = sum(p.stat().st_size for p in Path(tmp).rglob("*.safetensors"))
        trim_memory()
    ratios = [f / c for f, c in zip(forward_s, collect_s, strict=True)]
    out = {
        "images": n,
        "forward_s": forward_s,
        "collect_s": collect_s,
        "forward_images_per_s": n / statistics.median(forward_s),
        "collect_images_per_s": n / statistics.median(collect_s),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "peak_rss_mb": statistics.median(peaks) / MB,
        "rss_before_mb": rss_before / MB,
        "peak_added_mb": statistics.median(p - rss_before for p in peaks) / MB,
        "stored_mb": stored / MB,
        "memory_method": "VmHWM (reset via /proc/self/clear_refs)" if exact else "VmRSS after",
    }
    if peaks_cuda:
        out["cuda_max_allocated_mb"] = statistics.median(peaks_cuda)
    return out


def _run_forked(n: int, args, cfg: dict) -> dict:
    return run_in_fork(lambda: measure(n, args, cfg), args.timeout, {"images": n})


# ------------------------------------------------------------------ parent
def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "vision_lens"):
        try:
            out[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            out[name] = None
    return out


def _table(rows: list[dict]) -> str:
    lines = [
        "| images | forward img/s | collect img/s | collect / forward | peak RSS MB "
        "| added MB | stored MB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if "error" in row:
            reason = row["error"].strip().splitlines()[-1][:200]
            lines.append(f"| {row['images']} | error: {reason} | | | | | |")
            continue
        lines.append(
            f"| {row['images']:,} | {row['forward_images_per_s']:.0f} "
            f"| {row['collect_images_per_s']:.0f} | {row['ratio']:.2f} "
            f"| {row['peak_rss_mb']:.0f} | {row['peak_added_mb']:.0f} | {row['stored_mb']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parse_benchmark_args(parser, argv)
    spec = MODELS[args.model]
    if args.out == RESULTS:
        args.out = RESULTS_DIR / (spec["results"] + ("_quick" if args.quick else "") + ".json")
    cfg = dict(spec["quick"] if args.quick else spec["full"])
    if args.batch is not None:
        cfg["batch"] = args.batch
    if args.sizes is not None:
        cfg["sizes"] = args.sizes
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    import vision_lens  # noqa: F401 - imported once here, before the forks (no computation)
    from vision_lens.shapes.encoding import images_to_tensor  # noqa: F401

    gc.freeze()
    load_before = os.getloadavg()[0]
    rows = []
    for n in cfg["sizes"]:
        row = _run_forked(n, args, cfg)
        rows.append(row)
        print(
            f"{n} images: "
            + (
                f"ratio {row['ratio']:.2f}, peak {row['peak_rss_mb']:.0f} MB"
                if "error" not in row
                else row["error"].strip().splitlines()[-1]
            ),
            file=sys.stderr,
            flush=True,
        )
    gpu = None
    if torch.device(args.device).type == "cuda":
        gpu = torch.cuda.get_device_name(torch.device(args.device))
    ok = [row for row in rows if "error" not in row]
    result = {
        "config": {
            "model": spec["describe"],
            "model_option": args.model,
            "what": WHAT,
            "directions": [N_DIRECTIONS, "d_embed"],
            "batch": cfg["batch"],
            "sizes": cfg["sizes"],
            "image_bank": cfg["bank"],
            "dtype": "float32",
            "device": args.device,
            "gpu": gpu,
            "threads": args.threads or torch.get_num_threads(),
            "rounds": args.rounds,
            "isolation": "fork per size",
        },
        "versions": _versions(),
        "cpu": platform.processor() or platform.machine(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
        "mb": "2**20 bytes",
        "ratio_collect_over_forward": statistics.median(r["ratio"] for r in ok) if ok else None,
        "peak_rss_mb_by_size": {str(r["images"]): r["peak_rss_mb"] for r in ok},
        "sizes": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{spec['short']}, batch {cfg['batch']}, {args.device}{f' ({gpu})' if gpu else ''}, "
        f"{result['config']['threads']} threads; collect {WHAT} projected on {N_DIRECTIONS} "
        "directions vs a bare forward\n"
    )
    print(_table(rows))
    print(f"\nsaved {args.out}")
    return result


if __name__ == "__main__":
    main()
