"""Decompositions over whole datasets, in batches with bounded memory and a progress bar.

:func:`map_batches` is the one loop every dataset-sized decomposition runs
(:func:`decompose_dataset`, :func:`~vision_lens.analysis.direct_effects.decompose_components`,
:func:`~vision_lens.analysis.textspan.head_outputs_dataset`): a decomposition cache per batch,
one progress bar (:func:`vision_lens.utils.batching.batched`), what each batch gave, in order.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor

from vision_lens.cache import LnMode
from vision_lens.utils.batching import batched, iter_batches  # iter_batches: the old home

if TYPE_CHECKING:
    from vision_lens.cache import ActivationCache
    from vision_lens.hooked_vit import HookedViT

__all__ = ["DatasetDecomposition", "decompose_dataset", "iter_batches", "map_batches"]

T = TypeVar("T")


def map_batches(
    model: HookedViT,
    images: Tensor | Iterable[Any],
    step: Callable[[Tensor, ActivationCache], T],
    *,
    batch_size: int,
    desc: str,
    progress: bool = True,
) -> list[T]:
    """``step(embed, cache)`` of every batch, where ``embed, cache`` is
    :meth:`HookedViT.run_with_decomposition_cache` of the batch.

    Args:
        model: The model.
        images: Preprocessed images ``[N, 3, H, W]`` or an iterable of batches (a DataLoader
            yielding tensors or ``(images, labels)`` tuples).
        step: What to keep of each batch (move it off the accelerator here if it is large).
        batch_size: Images per forward pass when ``images`` is a tensor.
        desc: The progress bar's label.
        progress: Show the progress bar.

    Returns:
        One ``step`` result per batch, in order.

    Raises:
        ValueError: ``images`` yielded no batch.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny(n_layers=1, n_heads=2)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> map_batches(model, torch.randn(5, 3, 16, 16), lambda embed, cache: len(embed),
        ...             batch_size=2, desc="demo", progress=False)
        [2, 2, 1]
    """
    out = []
    for batch in batched(images, batch_size, desc, progress=progress):
        embed, cache = model.run_with_decomposition_cache(batch)
        out.append(step(embed, cache))
    if not out:
        raise ValueError("No images: the iterable yielded no batches.")
    return out


class DatasetDecomposition(dict):
    """What :func:`decompose_dataset` returns: a dict of tensors. The model's output is under
    ``"image_embed"``; ``"embed"``, its key before 0.2, still reads it with a
    ``DeprecationWarning`` until 0.3 ("embed" names the patch-embedding stage).

    Example:
        >>> out = DatasetDecomposition(image_embed=torch.zeros(2, 4))
        >>> out["image_embed"].shape
        torch.Size([2, 4])
    """

    def __missing__(self, key: str) -> Any:
        if key == "embed":
            warnings.warn(
                'decompose_dataset(...)["embed"] is now ["image_embed"] (removed in 0.3).',
                DeprecationWarning,
                stacklevel=2,
            )
            return self["image_embed"]
        raise KeyError(key)


def decompose_dataset(
    model: HookedViT,
    images: Tensor | Iterable[Any],
    *,
    layers: bool = True,
    heads: bool = False,
    tokens: bool = False,
    ln_mode: LnMode = "center",
    batch_size: int = 64,
    progress: bool = True,
    device: str | torch.device | None = "cpu",
) -> DatasetDecomposition:
    """Run :meth:`HookedViT.run_with_decomposition_cache` over a dataset and keep the requested
    decompositions (moved to ``device``).

    Args:
        model: A :class:`vision_lens.HookedViT`.
        images: Preprocessed images ``[N, 3, H, W]`` or an iterable of batches.
        layers: Keep ``decompose_layers`` terms (``"layers"`` ``[component, N, d_embed]`` and
            ``"labels"``).
        heads: Keep ``decompose_heads`` (``"heads"`` ``[N, layer, head, d_embed]``).
        tokens: Keep ``decompose_tokens`` (``"tokens"`` ``[N, pos, d_embed]``).
        ln_mode: LayerNorm treatment (see :mod:`vision_lens.cache`).
        batch_size: Images per forward pass when ``images`` is a tensor.
        progress: Show a tqdm progress bar.
        device: Where the results are gathered.

    Returns:
        A :class:`DatasetDecomposition` (a dict) with ``"image_embed"`` ``[N, d_embed]`` (the
        model's output) and the requested entries.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny()
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> out = decompose_dataset(model, torch.randn(5, 3, 16, 16), heads=True, batch_size=2,
        ...                         progress=False)
        >>> out["layers"].shape, out["heads"].shape
        (torch.Size([6, 5, 16]), torch.Size([5, 2, 4, 16]))
    """

    def step(embed: Tensor, cache: ActivationCache) -> dict[str, Any]:
        part: dict[str, Any] = {"image_embed": embed.to(device)}
        if layers:
            part["layers"], part["labels"] = cache.decompose_layers(ln_mode=ln_mode)
            part["layers"] = part["layers"].to(device)
        if heads:
            part["heads"] = cache.decompose_heads(ln_mode=ln_mode).to(device)
        if tokens:
            part["tokens"] = cache.decompose_tokens(ln_mode=ln_mode).to(device)
        return part

    parts = map_batches(
        model, images, step, batch_size=batch_size, desc="decomposing", progress=progress
    )
    out = DatasetDecomposition(image_embed=torch.cat([p["image_embed"] for p in parts]))
    if layers:
        out["layers"] = torch.cat([p["layers"] for p in parts], dim=1)
        out["labels"] = parts[-1]["labels"]
    if heads:
        out["heads"] = torch.cat([p["heads"] for p in parts])
    if tokens:
        out["tokens"] = torch.cat([p["tokens"] for p in parts])
    return out
