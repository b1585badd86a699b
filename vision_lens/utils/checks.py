"""Input checks shared by the whole library: layer and head indices, batch sizes, image tensors.

Each check either returns the canonical value or raises an error that names the problem and the
fix. One implementation per job, so that ``layers="10"`` or ``heads=[0.9]`` is refused the same way
in the cache, ablation, TextSpan, segmentation and the figures.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from vision_lens.errors import InputWarning

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


def neuron_indices(neurons: IndexLike, d_mlp: int, *, unique: bool = True) -> list[int]:
    """Canonical non-negative MLP neuron indices within one layer (``None``: every neuron).

    Same rules as :func:`layer_indices`.

    Example:
        >>> neuron_indices([0, -1], 16)
        [0, 15]
    """
    return _indices(neurons, d_mlp, "neurons", unique=unique)


def check_directions(directions: object, d_embed: int) -> Tensor | None:
    """Directions in the output space as a finite ``[k, d_embed]`` tensor (one ``[d_embed]``
    direction becomes ``[1, d_embed]``; ``None`` passes).

    Raises:
        TypeError: ``directions`` is not a tensor.
        ValueError: Another width (made by another model?), no direction, NaN or infinity.

    Example:
        >>> import torch
        >>> check_directions(torch.ones(4), 4).shape
        torch.Size([1, 4])
    """
    if directions is None:
        return None
    if not isinstance(directions, Tensor):
        raise TypeError(f"directions must be a tensor [k, d_embed], got {type(directions)}.")
    if directions.dim() == 1:
        directions = directions[None]
    if directions.dim() != 2 or directions.shape[1] != d_embed:
        raise ValueError(
            f"directions must have shape [k, {d_embed}] (the image embedding width), got "
            f"{tuple(directions.shape)}. Were they made by the same CLIP model?"
        )
    if directions.shape[0] == 0:
        raise ValueError("directions is empty: pass at least one direction.")
    return check_finite(directions, "directions")


def check_batch_size(batch_size: object) -> int:
    """Return ``batch_size`` if it is a positive int.

    Raises:
        TypeError: Not an int (``"8"``, ``2.5``, ``True``).
        ValueError: An int below 1.

    Example:
        >>> check_batch_size(32)
        32
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise TypeError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return int(batch_size)


# Values a preprocessed (mean/std-normalised) natural image never reaches: CLIP's and ImageNet's
# normalisations map 0..1 pixels to about -2.1..+2.7, so anything beyond this is raw 0..255 input.
RAW_PIXEL_THRESHOLD = 10.0
# A 0..1 batch whose spread is at least this is read as un-normalised pixels; a constant batch
# (e.g. zeros, a normalised mean-grey image) is not.
UNIT_RANGE_MIN_SPREAD = 0.25

_SILENCE = (
    'Silence with warnings.filterwarnings("ignore", category=vision_lens.InputWarning) if this '
    "is intended."
)


def _package_dir(module: str) -> str | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.abspath(next(iter(spec.submodule_search_locations))) + os.sep


# Frames in these packages are skipped when attributing a warning (transformer_lens: the
# run_with_cache/hooks machinery HookedViT builds on).
_INTERNAL_DIRS = tuple(
    d for d in map(_package_dir, ("vision_lens", "torch", "transformer_lens")) if d is not None
)


def _caller_stacklevel() -> int:
    """The ``stacklevel``, for a ``warnings.warn`` in the calling function, that points the
    warning at the first frame outside vision_lens, torch and transformer_lens (the user's
    ``model(images)`` line), so the default filter shows it once per line of user code."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
        _INTERNAL_DIRS
    ):
        frame, level = frame.f_back, level + 1
    return level


def check_finite(tensor: object, name: str) -> Tensor:
    """Return ``tensor`` if it holds no NaN or infinity, else raise ``ValueError`` naming it.

    Non-float tensors (ints, bools) are always finite and pass. One reduction over the tensor.

    Args:
        tensor: The tensor to check.
        name: The argument's name, used in the error (``"text_embeddings"``).

    Raises:
        TypeError: ``tensor`` is not a tensor.
        ValueError: It holds NaN or inf (the message says how many).

    Example:
        >>> import torch
        >>> check_finite(torch.ones(2), "directions")
        tensor([1., 1.])
        >>> check_finite(torch.tensor([1.0, float("nan")]), "directions")
        Traceback (most recent call last):
        ...
        ValueError: directions contains 1 NaN and 0 infinite value(s) out of 2; ...
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(tensor).__name__}.")
    if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.numel() == 0:
        return tensor
    if tensor.device.type == "meta":
        return tensor
    with torch.no_grad():
        if bool(torch.isfinite(tensor).all()):
            return tensor
        n_nan = int(torch.isnan(tensor).sum())
        n_inf = int(torch.isinf(tensor).sum())
    raise ValueError(
        f"{name} contains {n_nan} NaN and {n_inf} infinite value(s) out of {tensor.numel()}; "
        "every result computed from it would be NaN. Find where they come from (a division by "
        "zero norm, an overflow in float16, a failed load) and pass finite values."
    )


def _check_image_values(images: Tensor) -> None:
    """Refuse non-finite images; warn once per call site about images that look un-normalised."""
    if images.numel() == 0 or images.device.type == "meta":
        return
    with torch.no_grad():
        # One pass over the batch: NaN propagates into aminmax, inf shows as +-inf.
        low, high = (float(v) for v in torch.aminmax(images.detach()))
    if not (np.isfinite(low) and np.isfinite(high)):
        check_finite(images, "Images")
    if max(high, -low) > RAW_PIXEL_THRESHOLD:
        message = (
            f"Images have values beyond +-{RAW_PIXEL_THRESHOLD:g}: this looks like raw 0..255 "
            "pixels, not preprocessed input (normalised images range about -2..+2.7). Apply "
            "model.preprocess (or divide by 255 and normalise with the mean/std its Normalize "
            "step uses); un-normalised images give wrong results without "
            f"any error. {_SILENCE}"
        )
    elif low >= 0.0 and high <= 1.0 and high - low >= UNIT_RANGE_MIN_SPREAD:
        message = (
            "Images lie in 0..1 with no negative value: this looks like 0..1 pixels without the "
            "model's mean/std normalisation (normalised images have negatives, about "
            "-2..+2.7). Apply model.preprocess (or normalise with the model's mean/std); "
            "un-normalised images give wrong results without any error. "
            f"{_SILENCE}"
        )
    else:
        return
    # The message is constant per kind (no measured values) so that Python's default filter,
    # which deduplicates on (message, category, line), shows it once per line of user code.
    warnings.warn(message, InputWarning, stacklevel=_caller_stacklevel())


def check_images(images: object, image_size: tuple[int, int]) -> Tensor:
    """Check a batch of preprocessed images ``[batch, 3, H, W]`` for a model of ``image_size``.

    Besides type and shape, the values are checked with one ``aminmax`` over the batch:
    NaN/inf raise ``ValueError``; images that look un-normalised (any value beyond
    ±:data:`RAW_PIXEL_THRESHOLD`, i.e. raw 0..255 pixels; or all values in 0..1 with a spread of
    at least :data:`UNIT_RANGE_MIN_SPREAD`, i.e. pixels without the mean/std normalisation)
    warn with ``vision_lens.InputWarning``, attributed to the first caller outside
    vision_lens and torch, so Python's default filter shows it once per line of user code.

    Args:
        images: What the user passed.
        image_size: ``(H, W)`` the model takes.

    Returns:
        ``images`` unchanged (a float tensor of the right shape).

    Raises:
        TypeError: Not a tensor, or not floating point.
        ValueError: Wrong shape or size, or non-finite values.

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
    _check_image_values(images)
    return images


__all__ = [
    "RAW_PIXEL_THRESHOLD",
    "UNIT_RANGE_MIN_SPREAD",
    "check_batch_size",
    "check_finite",
    "check_images",
    "head_indices",
    "layer_indices",
]
