"""Decompositions over whole datasets, in batches with bounded memory and a progress bar."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from vision_lens.cache import LnMode


def iter_batches(images: Tensor | Iterable[Any], batch_size: int) -> Iterable[Tensor]:
    """Yield image batches from a ``[N, 3, H, W]`` tensor or pass through an iterable of batches
    (e.g. a DataLoader yielding tensors or ``(images, labels)`` tuples)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if isinstance(images, Tensor):
        if images.dim() != 4:
            raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}.")
        if images.shape[0] == 0:
            raise ValueError("images is empty.")
        yield from images.split(batch_size)
        return
    for batch in images:
        yield batch[0] if isinstance(batch, list | tuple) else batch


def decompose_dataset(
    model: Any,
    images: Tensor | Iterable[Any],
    *,
    layers: bool = True,
    heads: bool = False,
    tokens: bool = False,
    ln_mode: LnMode = "center",
    batch_size: int = 64,
    progress: bool = True,
    device: str | torch.device | None = "cpu",
) -> dict[str, Any]:
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
        A dict with ``"embed"`` ``[N, d_embed]`` and the requested entries.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, d_embed=16,
        ...                          image_size=16, patch_size=8)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> out = decompose_dataset(model, torch.randn(5, 3, 16, 16), heads=True, batch_size=2,
        ...                         progress=False)
        >>> out["layers"].shape, out["heads"].shape
        (torch.Size([6, 5, 16]), torch.Size([5, 2, 4, 16]))
    """
    parts: dict[str, list[Tensor]] = {"embed": [], "layers": [], "heads": [], "tokens": []}
    labels: list[str] = []
    total = images.shape[0] if isinstance(images, Tensor) else None
    bar = tqdm(total=total, desc="decomposing", unit="img", disable=not progress)
    for batch in iter_batches(images, batch_size):
        embed, cache = model.run_with_decomposition_cache(batch)
        parts["embed"].append(embed.to(device))
        if layers:
            terms, labels = cache.decompose_layers(ln_mode=ln_mode)
            parts["layers"].append(terms.to(device))
        if heads:
            parts["heads"].append(cache.decompose_heads(ln_mode=ln_mode).to(device))
        if tokens:
            parts["tokens"].append(cache.decompose_tokens(ln_mode=ln_mode).to(device))
        bar.update(embed.shape[0])
    bar.close()
    if not parts["embed"]:
        raise ValueError("No images: the iterable yielded no batches.")
    out: dict[str, Any] = {"embed": torch.cat(parts["embed"])}
    if layers:
        out["layers"] = torch.cat(parts["layers"], dim=1)
        out["labels"] = labels
    if heads:
        out["heads"] = torch.cat(parts["heads"])
    if tokens:
        out["tokens"] = torch.cat(parts["tokens"])
    return out
