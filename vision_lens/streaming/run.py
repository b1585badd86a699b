"""The pass itself: :func:`collect`."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from vision_lens._version import __version__
from vision_lens.streaming import distributed as dist
from vision_lens.streaming.capture import BatchCapture
from vision_lens.streaming.data import ImageSource, as_image_source, data_fingerprint
from vision_lens.streaming.products import (
    Products,
    batch_products,
    check_directions,
    describe,
    parse_products,
)
from vision_lens.streaming.projections import FoldedProjection
from vision_lens.streaming.reader import CollectedRun
from vision_lens.streaming.shards import (
    MANIFEST,
    STATISTICS_FILE,
    check_identity,
    file_sha256,
    model_fingerprint,
    read_manifest,
    read_shard_metadata,
    run_id,
    shard_name,
    tensor_hash,
    write_manifest,
    write_tensors,
)
from vision_lens.streaming.writer import ShardWriter
from vision_lens.utils.batching import progress_bar
from vision_lens.utils.checks import check_batch_size

if TYPE_CHECKING:
    from vision_lens.hooked_vit import HookedViT

__all__ = ["collect"]


def collect(
    model: HookedViT,
    data: Any,
    what: str | Sequence[str],
    out: str | os.PathLike,
    *,
    batch_size: int = 32,
    shard_size: int | None = None,
    directions: Tensor | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    ln_mode: str = "center",
    overwrite: bool = False,
    progress: bool = True,
) -> CollectedRun:
    """Run ``model`` over a dataset once and store the named products in shards with a manifest:
    resumable, and split across processes under torch.distributed.

    Images go in fixed global batches of ``batch_size`` (``[i * batch_size, (i + 1) *
    batch_size)``); shard ``j`` holds the whole batches of images ``[j * shard_size, (j + 1) *
    shard_size)``. Rerunning the same call skips the complete shards, so an interrupted run ends
    bit-identical to an uninterrupted one, and a finished one returns at once. Under
    torch.distributed shard ``j`` is rank ``j % world_size``'s (see
    :mod:`vision_lens.streaming`).

    Args:
        model: The model (its ``preprocess`` is applied to PIL images).
        data: A torch ``Dataset`` or anything with ``__len__`` and ``__getitem__`` (items: an
            image tensor ``[3, H, W]``, a PIL image, ``(image, label)``, or a dict with
            ``"image"`` as in a Hugging Face ``datasets`` split), or an image folder path.
        what: Product names, a list or one comma-separated string: ``"heads"``
            ``[n, layer, head, d_embed]``, ``"layers"`` ``[n, component, d_embed]``,
            ``"tokens"`` ``[n, pos, d_embed]`` (each ``[..., k]`` with ``directions``),
            ``"embed"`` ``[n, d_embed]``, ``"labels"`` ``[n]``, ``"hook:<hook name>"``
            ``[n, ...]``; statistics (float64 sums) ``"head_moments"`` and
            ``"mean:<hook name>"`` (see :mod:`vision_lens.streaming.products`).
        out: The folder to write (made if missing).
        batch_size: Images per forward pass.
        shard_size: Images per shard, a multiple of ``batch_size`` (default ``8 * batch_size``).
        directions: ``[k, d_embed]``: store ``heads``/``layers``/``tokens`` projected on them.
        device: Where the model runs (the model is moved there; default: where it is).
        dtype: The stored dtype of per-image products (default: the model's).
        ln_mode: The decompositions' LayerNorm treatment (``"center"`` or ``"split"``).
        overwrite: Replace a collection already in ``out`` instead of resuming it.
        progress: Show a progress bar (images/s; rank 0 only).

    Returns:
        A :class:`~vision_lens.streaming.CollectedRun` over ``out``.

    Raises:
        ValueError: An unknown product (with close matches), ``directions`` of another width,
            empty data, a ``shard_size`` that is not a multiple of ``batch_size``, or an ``out``
            holding another run (another model, weights, data, products or batching).
        TypeError: ``batch_size`` not an int, ``data`` not indexable.

    Example:
        >>> import tempfile, torch, vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> images = torch.randn(10, 3, 16, 16)
        >>> run = vl.collect(model, images, "heads,embed,head_moments", tempfile.mkdtemp(),
        ...                  batch_size=4, progress=False)
        >>> run["heads"].shape, run.head_moments()["outer"].shape
        (torch.Size([10, 2, 4, 16]), torch.Size([2, 4, 16, 16]))
    """
    batch_size = check_batch_size(batch_size)
    shard_size = _check_shard_size(shard_size, batch_size)
    if ln_mode not in ("center", "split"):
        raise ValueError(f"ln_mode must be 'center' or 'split', got {ln_mode!r}.")
    products = parse_products(what, model)
    directions = check_directions(directions, model.cfg.d_embed)
    if device is not None:
        model = model.to(device)
    dtype = _check_dtype(dtype, model.dtype)
    source = as_image_source(data, getattr(model, "preprocess", None))
    out = _check_out(out)

    n = len(source)
    n_shards = math.ceil(n / shard_size)
    identity = {
        "model": {
            "name": getattr(model.cfg, "model_name", None),
            "config": json.loads(json.dumps(model.cfg.to_dict(), sort_keys=True, default=str)),
            "weights": model_fingerprint(model),
        },
        "data": data_fingerprint(source),
        "products": list(products.names),
        "directions": None if directions is None else tensor_hash(directions),
        "dtype": str(dtype).removeprefix("torch."),
        "batch_size": batch_size,
        "shard_size": shard_size,
        "ln_mode": ln_mode,
    }
    rid = run_id(identity)
    rank, world = dist.rank(), dist.world_size()

    if overwrite and rank == 0:
        _clear(out)
    if rank == 0:
        _remove_temporaries(out)
    dist.barrier()
    existing = read_manifest(out)
    if existing is not None:
        check_identity(out, existing["identity"], identity)
        if existing.get("complete") and all((out / s["file"]).exists() for s in existing["shards"]):
            dist.barrier()
            return CollectedRun(out)
    elif rank == 0:
        write_manifest(
            out, _manifest(identity, rid, products, directions, model, source, None, world)
        )
    dist.barrier()

    mine = dist.owned_shards(n_shards, rank, world)
    total = sum(min(n, (j + 1) * shard_size) - j * shard_size for j in mine)
    bar = progress_bar(total, "collecting", enabled=progress and rank == 0)
    # The weights folded with the readout and the directions once for the whole pass.
    projection = FoldedProjection(model, directions, ln_mode)
    # What each forward pass keeps for these products, in buffers reused batch after batch.
    capture = BatchCapture(model, products)
    # Shard j is written on a background thread while shard j + 1 is computed.
    writer = ShardWriter()
    try:
        with writer:
            for j in mine:
                start, stop = j * shard_size, min(n, (j + 1) * shard_size)
                path = out / shard_name(j)
                if path.exists() and (read_shard_metadata(path) or {}).get("run") == rid:
                    bar.update(stop - start)
                    continue
                tensors = _shard(
                    model,
                    source,
                    products,
                    start,
                    stop,
                    batch_size,
                    dtype,
                    projection,
                    capture,
                    bar,
                )
                writer.submit(path, tensors, {"run": rid, "start": start, "stop": stop})
                del tensors
    finally:
        bar.close()
    dist.barrier()
    if rank == 0:
        _finish(
            out,
            identity,
            rid,
            products,
            directions,
            model,
            source,
            (n_shards, shard_size, world),
            writer.sha256,
        )
    dist.barrier()
    return CollectedRun(out)


def _check_shard_size(shard_size: object, batch_size: int) -> int:
    if shard_size is None:
        return 8 * batch_size
    if isinstance(shard_size, bool) or not isinstance(shard_size, int | np.integer):
        raise TypeError(f"shard_size must be a positive integer, got {shard_size!r}.")
    if shard_size < 1 or shard_size % batch_size:
        raise ValueError(
            f"shard_size must be a positive multiple of batch_size ({batch_size}), got "
            f"{shard_size!r}: a shard holds whole batches. Use e.g. {8 * batch_size}."
        )
    return int(shard_size)


def _check_dtype(dtype: object, default: torch.dtype) -> torch.dtype:
    if dtype is None:
        return default
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(
            f"dtype must be a torch floating dtype (torch.float16, ...), got {dtype!r}."
        )
    return dtype


def _check_out(out: object) -> Path:
    if not isinstance(out, str | os.PathLike) or not str(out).strip():
        raise TypeError(f"out must be a folder path (str or Path), got {out!r}.")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"out {str(out)!r} is a file; pass a folder for the shards.")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _clear(out: Path) -> None:
    """Remove what a collection wrote in ``out`` (its files only)."""
    for file in [out / MANIFEST, out / STATISTICS_FILE, *out.glob("shard-*.safetensors")]:
        file.unlink(missing_ok=True)


def _remove_temporaries(out: Path) -> None:
    for file in out.glob(".*.tmp"):
        if file.name.startswith((".shard-", f".{MANIFEST}.", f".{STATISTICS_FILE}.")):
            file.unlink(missing_ok=True)


def _shard(
    model: HookedViT,
    source: ImageSource,
    products: Products,
    start: int,
    stop: int,
    batch_size: int,
    dtype: torch.dtype,
    projection: FoldedProjection,
    capture: BatchCapture,
    bar: Any,
) -> dict[str, Tensor]:
    """Every product of images ``[start, stop)``, batch by batch: rows concatenated, statistics
    summed in batch order."""
    rows: dict[str, list[Tensor]] = {}
    stats: dict[str, Tensor] = {}
    for lo in range(start, stop, batch_size):
        hi = min(stop, lo + batch_size)
        images, labels = source.batch(lo, hi, labels="labels" in products.names)
        images = images.to(model.device, model.dtype)
        kept = capture.run(images, products.hooks)
        part_rows, part_stats = batch_products(
            products, kept, labels, projection=projection, dtype=dtype
        )
        for key, value in part_rows.items():
            rows.setdefault(key, []).append(value)
        for key, value in part_stats.items():
            stats[key] = stats[key] + value if key in stats else value
        bar.update(hi - lo)
    return {**{key: torch.cat(value) for key, value in rows.items()}, **stats}


def _manifest(
    identity: dict[str, Any],
    rid: str,
    products: Products,
    directions: Tensor | None,
    model: HookedViT,
    source: ImageSource,
    shards: list[dict[str, Any]] | None,
    world: int,
) -> dict[str, Any]:
    layer_labels = None
    if "layers" in products.names:
        images, _ = source.batch(0, 1)
        _, cache = model.run_with_decomposition_cache(images.to(model.device, model.dtype))
        layer_labels = [str(label) for label in cache.decompose_layers().labels]
    return {
        "identity": identity,
        "run": rid,
        "complete": shards is not None,
        "products": describe(products, directions, layer_labels),
        "shards": shards or [],
        "data_source": source.name,
        "world_size": world,
        "versions": {
            "vision_lens": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def _finish(
    out: Path,
    identity: dict[str, Any],
    rid: str,
    products: Products,
    directions: Tensor | None,
    model: HookedViT,
    source: ImageSource,
    layout: tuple[int, int, int],
    known_sha256: dict[str, str],
) -> None:
    """Rank 0, after every rank wrote its shards: check them, merge the statistics (summed in
    shard order) into ``statistics.safetensors`` and mark the manifest complete.

    ``layout`` is ``(n_shards, shard_size, world_size)``; ``known_sha256`` the checksums of the
    shards this process wrote (the others, from earlier runs or other ranks, are read back)."""
    from safetensors import safe_open

    n_shards, shard_size, world = layout
    n = len(source)
    shards = []
    merged: dict[str, Tensor] = {}
    for j in range(n_shards):
        path = out / shard_name(j)
        meta = read_shard_metadata(path) if path.exists() else None
        if meta is None or meta.get("run") != rid:
            raise RuntimeError(
                f"shard {path} is missing or from another run after every rank finished."
            )
        start, stop = j * shard_size, min(n, (j + 1) * shard_size)
        shards.append(
            {
                "file": path.name,
                "start": start,
                "stop": stop,
                "sha256": known_sha256.get(path.name) or file_sha256(path),
            }
        )
        if products.statistics:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                    if "/" in key:
                        value = f.get_tensor(key)
                        merged[key] = merged[key] + value if key in merged else value
    if merged:
        write_tensors(out / STATISTICS_FILE, merged, {"run": rid})
    write_manifest(
        out, _manifest(identity, rid, products, directions, model, source, shards, world)
    )
