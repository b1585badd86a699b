"""Batched iteration over images with one progress bar: the loop every dataset-sized pass uses."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from torch import Tensor
from tqdm.auto import tqdm

from vision_lens.utils.checks import check_batch_size


def iter_batches(images: Tensor | Iterable[Any], batch_size: int) -> Iterator[Tensor]:
    """Yield image batches from a ``[N, 3, H, W]`` tensor, or pass an iterable of batches through
    (e.g. a DataLoader yielding tensors or ``(images, labels)`` tuples: the images are kept).

    Example:
        >>> import torch
        >>> [b.shape[0] for b in iter_batches(torch.zeros(5, 3, 4, 4), 2)]
        [2, 2, 1]
    """
    check_batch_size(batch_size)
    if isinstance(images, Tensor):
        if images.dim() != 4:
            raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}.")
        if images.shape[0] == 0:
            raise ValueError("images is empty.")
        yield from images.split(batch_size)
        return
    for batch in images:
        yield batch[0] if isinstance(batch, list | tuple) else batch


def batch_count(images: Tensor | Iterable[Any]) -> int | None:
    """How many images a pass over ``images`` will see, when it is known in advance."""
    if isinstance(images, Tensor):
        return int(images.shape[0])
    dataset = getattr(images, "dataset", None)  # a DataLoader
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


def progress_bar(total: int | None, desc: str, *, enabled: bool = True, unit: str = "img") -> Any:
    """The library's progress bar (tqdm, notebook-aware); a no-op bar when ``enabled`` is False.

    Example:
        >>> bar = progress_bar(3, "demo", enabled=False)
        >>> bar.update(3); bar.close()
    """
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled)


def batched(
    images: Tensor | Iterable[Any], batch_size: int, desc: str, *, progress: bool = True
) -> Iterator[Tensor]:
    """:func:`iter_batches` with a progress bar counting images; the bar closes when the loop ends.

    Example:
        >>> import torch
        >>> sum(b.shape[0] for b in batched(torch.zeros(5, 3, 4, 4), 2, "demo", progress=False))
        5
    """
    bar = progress_bar(batch_count(images), desc, enabled=progress)
    try:
        for batch in iter_batches(images, batch_size):
            yield batch
            bar.update(batch.shape[0])
    finally:
        bar.close()
