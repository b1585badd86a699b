"""Time and memory cost of caching activations: HookedViT against its source and TransformerLens.

Measures, on a Hugging Face ``ViTForImageClassification`` of ViT-B/16 shape (``ViTConfig``
defaults: width 768, 12 layers, 12 heads, 224 px images, 16 px patches; random weights, seed 0),
a batch of 8 random images (``--batch``), float32, 2 torch threads (``--threads``), every call
under ``torch.no_grad()``:

* ``plain``: the Hugging Face model's forward (the reference every ratio is taken against),
* ``ours_forward``: ``HookedViT.from_hf`` of the same weights, forward with no hooks,
* ``ours_cache_all``: ``HookedViT.run_with_cache(images)`` (every hook point),
* ``ours_cache_no_result``: ``run_with_cache`` without the per-head ``hook_result`` entries,
* ``ours_decomposition_cache``: ``HookedViT.run_with_decomposition_cache(images)``,
* ``ours_cache_bf16``: ``run_with_cache(images, cache_dtype=torch.bfloat16)``, only where
  ``run_with_cache`` has that keyword (otherwise recorded as skipped),
* ``tl_bridge``: TransformerLens' ``TransformerBridge`` wrapping the same HF model, built offline
  (``TransformerBridge.boot_transformers(..., hf_model=hf_model)``), ``run_with_cache`` with its
  default (every hook) cache.

For each variant it reports:

* wall time of one call, as a ratio to ``plain`` timed in the same round (median and min-max over
  the rounds),
* memory added by the call: on CPU the peak resident set size during the call (``VmHWM``, reset
  through ``/proc/self/clear_refs`` just before it) minus the resident set size just before it;
  on CUDA ``max_memory_allocated`` minus ``memory_allocated`` before it,
* allocated peak: the most memory torch's CPU allocator holds during one more call (live
  allocations replayed from the profiler's memory events; on CUDA the same as memory added).
  The gap between the two memory columns is the C allocator's fragmentation (freed temporaries
  it keeps between cached tensors), not memory anyone holds; ``MALLOC_MMAP_THRESHOLD_=131072``
  makes glibc return such memory at once, and then the two agree,
* cache size: the bytes of the distinct storages the cached tensors hold alive (views of one
  storage counted once), and the number of cache keys. Entries a vision_lens cache derives on
  first read instead of storing (``cache.derived_names()``) are counted as keys ("N derived")
  but hold no memory until read, and are not read here.

Every measurement runs in a fresh process, so allocator state left by one variant cannot help
another: a new interpreter (``--isolation subprocess``, the default) or a ``fork`` of a parent
that has imported the libraries but run nothing (``--isolation fork``: same isolation, without
paying the imports each time; used by the test). In it the model is built, the variant is called
once to warm up and its result freed (``gc.collect()``, ``malloc_trim(0)`` so freed pages go back
to the OS), then the timed, measured call runs. Rounds are interleaved (every variant once per
round) so drift in the load of a shared machine hits all of them alike. MB here are 2**20 bytes.

Results go to ``benchmarks/results/bench_cache.json`` (``bench_cache_quick.json`` with
``--quick``); a markdown table is printed.

Usage::

    python benchmarks/bench_cache.py                      # ViT-B/16, batch 8, 5 rounds
    python benchmarks/bench_cache.py --quick              # tiny ViT, batch 2, 2 rounds
    python benchmarks/bench_cache.py --isolation fork --rounds 2   # faster: imports paid once
    python benchmarks/bench_cache.py --device cuda --threads 8
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

# Before transformers / huggingface_hub are imported (they read it once): the bridge is given the
# model, so nothing may be fetched from the Hub.
os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from common import (
    benchmark_parser,
    parse_benchmark_args,
    reset_peak_rss,
    run_in_fork,
    status_kb,
    trim_memory,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULTS = RESULTS_DIR / "bench_cache.json"
QUICK_RESULTS = RESULTS_DIR / "bench_cache_quick.json"

VARIANTS = (
    "plain",
    "ours_forward",
    "ours_cache_all",
    "ours_cache_no_result",
    "ours_decomposition_cache",
    "ours_cache_bf16",
    "tl_bridge",
)
# ViT-B/16 (ViTConfig's defaults) and the tiny model of --quick.
FULL = {"hidden": 768, "layers": 12, "heads": 12, "image": 224, "patch": 16, "batch": 8}
QUICK = {"hidden": 64, "layers": 2, "heads": 2, "image": 32, "patch": 8, "batch": 2}
MB = 2**20
# A worker's stdout line carrying its result (anything else it prints is ignored).
MARK = "BENCH_CACHE_RESULT "
# The hub name handed to the bridge: with hf_model= and HF_HUB_OFFLINE=1 nothing is downloaded,
# the name only labels the bridge.
BRIDGE_NAME = "google/vit-base-patch16-224"


class Skip(Exception):
    """A variant that cannot run here (the reason is recorded instead of a measurement)."""


def build_parser():
    parser = benchmark_parser(__doc__, RESULTS)
    parser.set_defaults(threads=2)
    parser.add_argument("--batch", type=int, default=None, help="images per call (default 8)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny ViT (width 64, 2 layers, 2 heads, 32 px, patch 8), batch 2, 2 rounds",
    )
    parser.add_argument(
        "--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="a subset"
    )
    parser.add_argument("--isolation", choices=["subprocess", "fork"], default="subprocess")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per measurement")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    return parser


def shape(args) -> dict:
    """The model and batch of this run (``--quick`` or ViT-B/16, ``--batch`` overriding)."""
    cfg = dict(QUICK if args.quick else FULL)
    if args.batch is not None:
        cfg["batch"] = args.batch
    cfg["mlp"] = 4 * cfg["hidden"]
    return cfg


# ------------------------------------------------------------------ worker (one measurement)
class _RssSampler:
    """Fallback peak-RSS tracker: a thread reading ``VmRSS`` every millisecond."""

    def __init__(self) -> None:
        self.peak = status_kb("VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, status_kb("VmRSS"))
            time.sleep(0.001)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, status_kb("VmRSS"))


def _cache_stats(cache) -> dict:
    """Keys and bytes of the distinct storages behind the tensors the cache holds.

    A vision_lens cache may hold some entries as derivations computed on first read (its
    ``cache_dict`` then has ``stored_items()`` and ``derived_names()``): only the held tensors
    are counted, and reading none of the derived ones keeps them unmaterialised."""
    if cache is None:
        return {"keys": 0, "derived_keys": 0, "cache_mb": 0.0, "distinct_storages": 0}
    entries = getattr(cache, "cache_dict", cache)
    if hasattr(entries, "stored_items"):
        held = entries.stored_items()
        derived = len(entries.derived_names())
    else:
        held = list(entries.items())
        derived = 0
    storages: dict[tuple[str, int], int] = {}
    for _, value in held:
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            key = (str(value.device), storage.data_ptr())
            storages[key] = max(storages.get(key, 0), storage.nbytes())
    return {
        "keys": len(entries),
        "derived_keys": derived,
        "cache_mb": sum(storages.values()) / MB,
        "distinct_storages": len(storages),
    }


def _logits(out) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out


def _variant(variant: str, cfg: dict, device: torch.device, check: bool):
    """``(call, info)``: ``call()`` runs the variant once and returns ``(output, cache)``."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    hf_cfg = ViTConfig(
        hidden_size=cfg["hidden"],
        num_hidden_layers=cfg["layers"],
        num_attention_heads=cfg["heads"],
        intermediate_size=cfg["mlp"],
        image_size=cfg["image"],
        patch_size=cfg["patch"],
    )
    hf = ViTForImageClassification(hf_cfg).eval().to(device)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(cfg["batch"], 3, cfg["image"], cfg["image"], generator=generator)
    images = images.to(device)
    info: dict = {"hf_attn_implementation": hf.config._attn_implementation}
    reference = None
    if check and variant != "plain":
        with torch.no_grad():
            reference = hf(pixel_values=images).logits

    if variant == "plain":

        def call():
            return hf(pixel_values=images).logits, None

    elif variant.startswith("ours_"):
        import vision_lens as vl

        model = vl.HookedViT.from_hf(hf, device=device)
        del hf
        if variant == "ours_forward":

            def call():
                return model(images), None

        elif variant == "ours_cache_all":

            def call():
                return model.run_with_cache(images)

        elif variant == "ours_cache_no_result":

            def call():
                return model.run_with_cache(
                    images, names_filter=lambda name: not name.endswith("hook_result")
                )

        elif variant == "ours_decomposition_cache":

            def call():
                return model.run_with_decomposition_cache(images)

        elif variant == "ours_cache_bf16":
            if "cache_dtype" not in inspect.signature(model.run_with_cache).parameters:
                raise Skip("HookedViT.run_with_cache has no cache_dtype keyword in this version")

            def call():
                return model.run_with_cache(images, cache_dtype=torch.bfloat16)

        else:
            raise ValueError(variant)
    elif variant == "tl_bridge":
        try:
            from transformer_lens.model_bridge import TransformerBridge

            bridge = TransformerBridge.boot_transformers(
                BRIDGE_NAME,
                hf_model=hf,
                device=device,
                hf_config_overrides={"architectures": ["ViTForImageClassification"]},
            )
        except Exception as err:  # anything that stops the bridge from being built offline
            reason = f"TransformerBridge could not be built offline: {type(err).__name__}: {err}"
            raise Skip(reason) from err
        info["bridge_attn_implementation"] = hf.config._attn_implementation

        def call():
            out, cache = bridge.run_with_cache(images)
            return _logits(out), cache

    else:
        raise ValueError(variant)

    if reference is not None:
        with torch.no_grad():
            out, _ = call()
        info["max_abs_error_vs_plain"] = (out.float() - reference.float()).abs().max().item()
        del out, _
    return call, info


def measure(variant: str, args) -> dict:
    """One measurement of ``variant`` in this (fresh) process."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    try:
        call, info = _variant(variant, shape(args), device, args.check)
    except Skip as skip:
        return {"variant": variant, "skipped": str(skip)}
    with torch.no_grad():
        result = call()  # warm-up
        del result
        trim_memory()
        sampler = None
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            method = "cuda max_memory_allocated - memory_allocated before"
        else:
            before = status_kb("VmRSS") * 1024
            if reset_peak_rss():
                method = "VmHWM (reset via /proc/self/clear_refs) - VmRSS before"
            else:
                sampler = _RssSampler()
                method = "sampled VmRSS every 1 ms (clear_refs not writable) - VmRSS before"
        start = time.perf_counter()
        result = call()
        if cuda:
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        if cuda:
            peak = torch.cuda.max_memory_allocated(device)
        elif sampler is not None:
            peak = sampler.stop() * 1024
        else:
            peak = status_kb("VmHWM") * 1024
        stats = _cache_stats(result[1])  # the result is still alive here
        del result
        allocated = None if cuda else _allocator_peak(call)
    return {
        "variant": variant,
        "time_s": elapsed,
        "memory_added_mb": (peak - before) / MB,
        "memory_method": method,
        "allocated_peak_mb": allocated if allocated is not None else (peak - before) / MB,
        **stats,
        **info,
    }


def _allocator_peak(call) -> float:
    """Peak bytes (MB) torch's CPU allocator holds during one more ``call``: live allocations
    replayed from the profiler's memory events. Unlike the resident set size, this leaves out
    the C allocator's fragmentation (freed memory it keeps between cached tensors)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = call()
    del result
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak / MB


def _worker_main(args) -> None:
    try:
        out = measure(args.worker, args)
    except Exception:
        out = {"variant": args.worker, "error": traceback.format_exc()}
    print(MARK + json.dumps(out), flush=True)


# ------------------------------------------------------------------ parent (interleaved rounds)
def _worker_argv(args, variant: str, check: bool) -> list[str]:
    argv = ["--worker", variant, "--device", args.device, "--threads", str(args.threads)]
    if args.quick:
        argv.append("--quick")
    if args.batch is not None:
        argv += ["--batch", str(args.batch)]
    if check:
        argv.append("--check")
    return argv


def _parse_worker_output(variant: str, stdout: str, stderr: str, rc: int) -> dict:
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    return {"variant": variant, "error": f"worker exited with {rc}: {stderr[-2000:]}"}


def _run_subprocess(args, variant: str, check: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *_worker_argv(args, variant, check)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"variant": variant, "error": f"timed out after {args.timeout} s"}
    return _parse_worker_output(variant, proc.stdout, proc.stderr, proc.returncode)


def _run_forked(args, variant: str, check: bool) -> dict:
    child_args = build_parser().parse_args(_worker_argv(args, variant, check))

    def child() -> dict:
        torch.set_num_threads(child_args.threads)
        return measure(variant, child_args)

    return run_in_fork(child, args.timeout, {"variant": variant})


def _preimport(variants) -> None:
    """Import in the parent what the forked workers need (importing runs no computation, so the
    children still start from an untouched allocator)."""
    from transformers import ViTConfig, ViTForImageClassification  # noqa: F401

    try:
        if any(v.startswith("ours_") for v in variants):
            import vision_lens  # noqa: F401
            import vision_lens.loading.hf  # noqa: F401
    except Exception:  # the workers report why
        pass
    try:
        if "tl_bridge" in variants:
            import transformer_lens.model_bridge.sources.transformers_driver  # noqa: F401
            import transformer_lens.utilities.architectures  # noqa: F401
            from transformer_lens.model_bridge import TransformerBridge  # noqa: F401
    except Exception:  # the workers report why
        pass


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "transformer_lens", "vision_lens"):
        try:
            out[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            out[name] = None
    return out


def _row(samples: list[dict], plain: list[dict | None]) -> dict:
    times = [s["time_s"] for s in samples]
    paired = [s["time_s"] / p["time_s"] for s, p in zip(samples, plain, strict=True) if p]
    added = [s["memory_added_mb"] for s in samples]
    first = samples[0]
    median_added = statistics.median(added)
    row = {
        "status": "ok",
        "times_s": times,
        "median_s": statistics.median(times),
        "ratio_to_plain_median": statistics.median(paired) if paired else None,
        "ratio_to_plain_min": min(paired) if paired else None,
        "ratio_to_plain_max": max(paired) if paired else None,
        "memory_added_mb": median_added,
        "memory_added_mb_all": added,
        "allocated_peak_mb": statistics.median(s["allocated_peak_mb"] for s in samples),
        "keys": first["keys"],
        "derived_keys": first.get("derived_keys", 0),
        "cache_mb": first["cache_mb"],
        "distinct_storages": first["distinct_storages"],
        "added_over_cache": median_added / first["cache_mb"] if first["cache_mb"] else None,
        "memory_method": first["memory_method"],
    }
    for key in ("max_abs_error_vs_plain", "hf_attn_implementation", "bridge_attn_implementation"):
        for s in samples:
            if key in s:
                row[key] = s[key]
    return row


def _table(rows: dict) -> str:
    lines = [
        "| variant | keys | cache MB | memory added MB (RSS) | added/cache "
        "| allocated peak MB | allocated/cache | wall / plain forward (median, range) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, row in rows.items():
        if row["status"] != "ok":
            reason = row["reason"].strip().splitlines()[-1][:200]
            lines.append(f"| {name} | | | | | | | {row['status']}: {reason} |")
            continue
        ratio = "n/a"
        if row["ratio_to_plain_median"] is not None:
            ratio = (
                f"{row['ratio_to_plain_median']:.2f}x "
                f"({row['ratio_to_plain_min']:.2f}-{row['ratio_to_plain_max']:.2f})"
            )
        per_cache = "" if row["added_over_cache"] is None else f"{row['added_over_cache']:.2f}"
        allocated = row["allocated_peak_mb"]
        alloc_per_cache = f"{allocated / row['cache_mb']:.2f}" if row["cache_mb"] else ""
        keys = str(row["keys"])
        if row.get("derived_keys"):
            keys += f" ({row['derived_keys']} derived)"
        lines.append(
            f"| {name} | {keys} | {row['cache_mb']:.1f} | {row['memory_added_mb']:.1f} "
            f"| {per_cache} | {allocated:.1f} | {alloc_per_cache} | {ratio} |"
        )
    return "\n".join(lines)


def _report(args, cfg: dict, samples: dict, failed: dict, rounds: int, load_before: float) -> dict:
    """The results of the rounds done so far, written to ``args.out`` (after every round, so a
    run cut short still leaves its data)."""
    done = min(len(s) for s in samples.values())
    if "plain" in failed:
        raise RuntimeError(f"the plain forward failed: {failed['plain']['reason']}")
    rows = {}
    for variant in samples:
        if variant in failed:
            rows[variant] = failed[variant]
        else:
            rows[variant] = _row(samples[variant], samples["plain"])
    result = {
        "config": {
            "model": "ViTForImageClassification (random weights, seed 0)",
            "shape": "quick (tiny)" if args.quick else "ViT-B/16",
            **cfg,
            "dtype": "float32",
            "device": args.device,
            "threads": args.threads,
            "rounds": rounds,
            "rounds_completed": done,
            "isolation": args.isolation,
            "grad": "all calls under torch.no_grad()",
            "bridge_call": (
                f'TransformerBridge.boot_transformers("{BRIDGE_NAME}", hf_model=hf_model, '
                'device=device, hf_config_overrides={"architectures": '
                '["ViTForImageClassification"]}) with HF_HUB_OFFLINE=1'
            ),
        },
        "versions": _versions(),
        "cpu": platform.processor() or platform.machine(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
        "mb": "2**20 bytes",
        "variants": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parse_benchmark_args(parser, argv)
    if args.worker:
        _worker_main(args)
        return {}
    if args.quick and args.out == RESULTS:
        args.out = QUICK_RESULTS
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 5)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    variants = [v for v in VARIANTS if v in args.variants]
    if "plain" not in variants:
        variants.insert(0, "plain")
    cfg = shape(args)
    if args.isolation == "fork":
        _preimport(variants)
        gc.freeze()  # the imported objects: the children's gc.collect() need not walk them
    run = _run_forked if args.isolation == "fork" else _run_subprocess

    load_before = os.getloadavg()[0]
    samples: dict[str, list[dict | None]] = {v: [] for v in variants}
    failed: dict[str, dict] = {}
    for r in range(rounds):
        for variant in variants:
            if variant in failed:
                samples[variant].append(None)
                continue
            out = run(args, variant, check=r == 0)
            if "skipped" in out:
                failed[variant] = {"status": "skipped", "reason": out["skipped"]}
            elif "error" in out:
                failed[variant] = {"status": "error", "reason": out["error"]}
            samples[variant].append(out if variant not in failed else None)
            print(
                f"round {r + 1}/{rounds} {variant}: "
                + (
                    f"{out['time_s']:.3f} s, +{out['memory_added_mb']:.1f} MB"
                    if variant not in failed
                    else failed[variant]["status"]
                ),
                file=sys.stderr,
                flush=True,
            )
        result = _report(args, cfg, samples, failed, rounds, load_before)
    versions = result["versions"]
    print(
        f"{result['config']['shape']} (width {cfg['hidden']}, {cfg['layers']} layers, "
        f"{cfg['heads']} heads, {cfg['image']} px, patch {cfg['patch']}), batch {cfg['batch']}, "
        f"float32, {args.device}, {args.threads} threads, torch {versions['torch']}, "
        f"transformers {versions['transformers']}, transformer_lens "
        f"{versions['transformer_lens']}; {rounds} interleaved rounds, one fresh process per "
        f"measurement ({args.isolation})\n"
    )
    print(_table(result["variants"]))
    print(f"\nsaved {args.out}")
    return result


if __name__ == "__main__":
    main()
