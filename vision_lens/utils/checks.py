"""Input checks shared by the whole library: layer and head indices, batch sizes, image tensors.

Each check either returns the canonical value or raises an error that names the problem and the
fix. One implementation per job, so that ``layers="10"`` or ``heads=[0.9]`` is refused the same way
in the cache, ablation, TextSpan, segmentation and the figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

IndexLike = int | Sequence[int] | Tensor | None


def _indices(values: IndexLike, n: int, what: str, *, unique: bool) -> list[int]:
    if values is None:
        return list(range(n))
    if isinstance(values, str | bytes):
        # list("10") would silently read as indices 1 and 0.
        raise TypeError(f"{what} must be an int or a sequence of ints, got {values!r}.")
    if isinstance(values, Tensor | np.ndarray):
        values = values.tolist()
    values = [values] if isinstance(values, int | np.integer) else list(values)
    if not values:
        raise ValueError(f"{what} is empty: select at least one (or None for all).")
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            # int(True) == 1 and int(0.9) == 0: refuse rather than guess.
            raise TypeError(f"{what} must be ints, got {value!r} in {values!r}.")
        index = int(value)
        if not -n <= index < n:
            noun = what.rstrip("s")
            raise IndexError(
                f"{noun.capitalize()} {value} does not exist: the model has {n} {noun}s "
                f"(valid indices {-n}..{n - 1})."
            )
        out.append(index % n)
    if unique and len(set(out)) != len(out):
        raise ValueError(f"{what} {values!r} names the same index twice; each counts once.")
    return out


def layer_indices(layers: IndexLike, n_layers: int, *, unique: bool = True) -> list[int]:
    """Canonical non-negative layer indices, in the order given (``None``: every layer).

    Args:
        layers: An int, a sequence of ints (negative counts from the end), a 1-d tensor, or
            ``None`` for all layers.
        n_layers: How many layers the model has.
        unique: Refuse a layer named twice (it would count twice in a sum).

    Returns:
        Indices in ``0..n_layers-1``.

    Raises:
        TypeError: For strings, bools, floats.
        IndexError: For a layer the model does not have.
        ValueError: For an empty selection or a repeated layer.

    Example:
        >>> layer_indices([-1, 0], 4)
        [3, 0]
        >>> layer_indices(None, 2)
        [0, 1]
    """
    return _indices(layers, n_layers, "layers", unique=unique)


def head_indices(heads: IndexLike, n_heads: int, *, unique: bool = True) -> list[int]:
    """Canonical non-negative head indices within one layer (``None``: every head).

    Same rules as :func:`layer_indices`.

    Example:
        >>> head_indices(-1, 8)
        [7]
    """
    return _indices(heads, n_heads, "heads", unique=unique)


def check_batch_size(batch_size: object) -> int:
    """Return ``batch_size`` if it is a positive int, else raise ``ValueError``.

    Example:
        >>> check_batch_size(32)
        32
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return int(batch_size)


def check_images(images: object, image_size: tuple[int, int]) -> Tensor:
    """Check a batch of preprocessed images ``[batch, 3, H, W]`` for a model of ``image_size``.

    Args:
        images: What the user passed.
        image_size: ``(H, W)`` the model takes.

    Returns:
        ``images`` unchanged (a float tensor of the right shape).

    Example:
        >>> import torch
        >>> check_images(torch.zeros(2, 3, 16, 16), (16, 16)).shape
        torch.Size([2, 3, 16, 16])
    """
    if not isinstance(images, Tensor):
        raise TypeError(
            f"Expected a float tensor [batch, 3, H, W], got {type(images).__name__}. "
            "Turn PIL images into tensors with model.preprocess and torch.stack."
        )
    if images.ndim == 3:
        raise ValueError(
            f"Got a single image of shape {tuple(images.shape)}; add a batch dimension "
            "(images.unsqueeze(0))."
        )
    expected = tuple(image_size)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"Expected images of shape [batch, 3, {expected[0]}, {expected[1]}], got "
            f"{tuple(images.shape)}."
        )
    if tuple(images.shape[-2:]) != expected:
        raise ValueError(
            f"Images are {tuple(images.shape[-2:])} pixels but this model takes {expected}. "
            "Resize/crop them with model.preprocess (or open_clip's transform for this model)."
        )
    if not images.is_floating_point():
        raise TypeError(
            f"Images must be a float tensor (normalised as in model.preprocess), got "
            f"{images.dtype}."
        )
    return images


__all__ = ["check_batch_size", "check_images", "head_indices", "layer_indices"]
