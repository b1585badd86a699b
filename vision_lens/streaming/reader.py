"""Reading a collection back: :func:`open_collected` and :class:`CollectedRun`.

Per-image products load lazily, shard by shard (``safetensors.safe_open``), through
:class:`LazyProduct` (index it over images like a tensor, or ``load()`` it whole); statistics
are the float64 sums over all shards.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from vision_lens.streaming.shards import MANIFEST, STATISTICS_FILE, read_manifest, shard_name

__all__ = ["CollectedRun", "LazyProduct", "open_collected"]


class LazyProduct:
    """One per-image product over every shard, read on access: ``len``, ``shape``, ``dtype``,
    indexing over images (an int, a slice, a list or tensor of indices) and :meth:`load`.

    Example:
        >>> run = open_collected("runs/heads")  # doctest: +SKIP
        >>> run["heads"][10:20].shape  # reads the shards of images 10..19  # doctest: +SKIP
        torch.Size([10, 12, 12, 512])
    """

    def __init__(self, name: str, files: list[Path], starts: list[int], n_images: int):
        self.name, self.files, self.starts, self.n_images = name, files, starts, n_images
        with safe_open(str(files[0]), framework="pt") as f:
            first = f.get_slice(name)
            self._row_shape = tuple(first.get_shape()[1:])
            self.dtype = first[0:1].dtype

    def __len__(self) -> int:
        return self.n_images

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.n_images, *self._row_shape))

    def __repr__(self) -> str:
        shape, shards = tuple(self.shape), len(self.files)
        return f"LazyProduct({self.name!r}, {shape=}, dtype={self.dtype}, {shards=})"

    def _read(self, shard: int, lo: int, hi: int) -> Tensor:
        with safe_open(str(self.files[shard]), framework="pt") as f:
            return f.get_slice(self.name)[lo:hi]

    def iter_shards(self) -> Iterator[Tensor]:
        """Each shard's block of rows, in order (bounded memory)."""
        for shard in range(len(self.files)):
            with safe_open(str(self.files[shard]), framework="pt") as f:
                yield f.get_tensor(self.name)

    def load(self) -> Tensor:
        """Every image's rows, concatenated: ``[n_images, ...]``."""
        return torch.cat(list(self.iter_shards()))

    def __getitem__(self, index: Any) -> Tensor:
        n = self.n_images
        if isinstance(index, tuple):
            return self[index[0]][(slice(None), *index[1:])]
        if isinstance(index, int):
            if not -n <= index < n:
                raise IndexError(f"image {index} out of range: the run holds {n} images.")
            index %= n
            shard = bisect.bisect_right(self.starts, index) - 1
            return self._read(shard, index - self.starts[shard], index - self.starts[shard] + 1)[0]
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step != 1:
                return self[torch.arange(start, stop, step)]
            parts = []
            ends = [*self.starts[1:], n]
            for shard, (lo, hi) in enumerate(zip(self.starts, ends, strict=True)):
                a, b = max(lo, start), min(hi, stop)
                if a < b:
                    parts.append(self._read(shard, a - lo, b - lo))
            return (
                torch.cat(parts) if parts else torch.empty((0, *self._row_shape), dtype=self.dtype)
            )
        indices = torch.as_tensor(index)
        if indices.dtype == torch.bool:
            indices = indices.nonzero().flatten()
        indices = indices.long().flatten()
        if len(indices) and not bool(((indices >= -n) & (indices < n)).all()):
            raise IndexError(f"an index is out of range: the run holds {n} images.")
        indices = indices % n
        out = torch.empty((len(indices), *self._row_shape), dtype=self.dtype)
        shards = torch.as_tensor([bisect.bisect_right(self.starts, int(i)) - 1 for i in indices])
        for shard in shards.unique().tolist():
            mask = shards == shard
            block = self._read(shard, 0, (self.starts + [n])[shard + 1] - self.starts[shard])
            out[mask] = block[indices[mask] - self.starts[shard]]
        return out


class CollectedRun:
    """A finished :func:`~vision_lens.streaming.collect` run: its manifest, lazy per-image
    products and merged statistics.

    Attributes:
        out: The run's folder.
        manifest: ``manifest.json`` as a dict.
        products: The product names, in the order collected.
        n_images: How many images the run covers.

    Example:
        >>> run = open_collected("runs/heads")  # doctest: +SKIP
        >>> run["heads"].load().shape  # [n, layer, head, d_embed]  # doctest: +SKIP
        >>> m = run.head_moments()  # {"count", "sum", "outer"}, float64  # doctest: +SKIP
        >>> mean = m["sum"] / m["count"][..., None]  # doctest: +SKIP
    """

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        manifest = read_manifest(self.out)
        if manifest is None:
            raise FileNotFoundError(
                f"{str(out)!r} holds no {MANIFEST}; run vision_lens.collect(..., out={str(out)!r}) "
                "first."
            )
        self.manifest = manifest
        if not manifest.get("complete"):
            raise ValueError(
                f"The collection in {str(out)!r} is not complete; rerun the same collect call to "
                "finish it (it resumes)."
            )
        self.products: list[str] = list(manifest["identity"]["products"])
        self.n_images: int = int(manifest["identity"]["data"]["length"])
        shards = manifest["shards"]
        self.files = [self.out / s["file"] for s in shards]
        self.starts = [int(s["start"]) for s in shards]
        self._statistics: dict[str, dict[str, Tensor]] | None = None

    def __repr__(self) -> str:
        return (
            f"CollectedRun({str(self.out)!r}, n_images={self.n_images}, products={self.products})"
        )

    def __contains__(self, name: str) -> bool:
        return name in self.products

    def _kind(self, name: str) -> str:
        if name not in self.products:
            raise KeyError(f"{name!r} was not collected; this run has {', '.join(self.products)}.")
        return self.manifest["products"][name]["kind"]

    def __getitem__(self, name: str) -> LazyProduct | dict[str, Tensor]:
        """A per-image product (:class:`LazyProduct`) or a statistic (its merged parts)."""
        if self._kind(name) == "statistic":
            return self.statistics[name]
        return LazyProduct(name, self.files, self.starts, self.n_images)

    @property
    def layer_labels(self) -> list[str]:
        """The component labels of ``"layers"`` (``embed, L0_attn, L0_mlp, ..., bias``)."""
        self._kind("layers")
        return list(self.manifest["products"]["layers"]["components"])

    @property
    def statistics(self) -> dict[str, dict[str, Tensor]]:
        """Every statistic's parts summed over all shards: ``{name: {part: tensor}}``."""
        if self._statistics is None:
            merged: dict[str, Tensor] = {}
            path = self.out / STATISTICS_FILE
            files = [path] if path.exists() else self.files
            for file in files:
                with safe_open(str(file), framework="pt") as f:
                    for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                        if "/" in key:
                            value = f.get_tensor(key)
                            merged[key] = merged[key] + value if key in merged else value
            out: dict[str, dict[str, Tensor]] = {}
            for key, value in merged.items():
                name, _, part = key.rpartition("/")
                out.setdefault(name, {})[part] = value
            self._statistics = out
        return self._statistics

    def head_moments(self) -> dict[str, Tensor]:
        """``{"count": [layer, head], "sum": [layer, head, d], "outer": [layer, head, d, d]}``
        (float64) of every head's direct effect over all images."""
        self._kind("head_moments")
        return self.statistics["head_moments"]

    def mean(self, hook: str) -> Tensor:
        """The mean activation of ``hook`` over all images (``"mean:<hook>"`` collected),
        float64."""
        stat = self[f"mean:{hook}"]
        return stat["sum"] / stat["count"]


def open_collected(out: str | os.PathLike) -> CollectedRun:
    """Open a finished collection.

    Args:
        out: The folder :func:`~vision_lens.streaming.collect` wrote.

    Returns:
        A :class:`CollectedRun`: ``run["heads"]`` a lazy ``[n, layer, head, d]``,
        ``run.head_moments()``, ``run.mean("blocks.3.hook_resid_post")``.

    Raises:
        FileNotFoundError: ``out`` holds no manifest.
        ValueError: The run is not complete.

    Example:
        >>> run = open_collected("runs/heads")  # doctest: +SKIP
        >>> run["embed"][:4].shape  # doctest: +SKIP
        torch.Size([4, 512])
    """
    return CollectedRun(out)


def shard_files(out: Path, n_shards: int) -> list[Path]:
    """The shard paths of a run of ``n_shards``."""
    return [out / shard_name(i) for i in range(n_shards)]
