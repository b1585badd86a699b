"""Give segmentation masks exactly the resize and crop their images get.

An open_clip evaluation transform is ``Resize(shortest side) -> CenterCrop -> to RGB -> ToTensor
-> Normalize`` (or ``ResizeKeepRatio -> CenterCropOrPad``, or a squashing ``Resize``). The
geometric steps are extracted from ``model.preprocess`` and re-applied to the mask with
nearest-neighbour interpolation, so that mask pixel ``(y, x)`` lands exactly where image pixel
``(y, x)`` lands. (Resizing masks to a square while the images are centre-cropped, as some
reference code does, misaligns them on non-square images.)
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from jaxtyping import Bool
from PIL import Image
from torch import Tensor

# Steps of an image transform that do not move pixels: skipped for masks.
_PHOTOMETRIC = {
    "MaybeConvertMode",
    "MaybeToTensor",
    "ToTensor",
    "PILToTensor",
    "Normalize",
    "ConvertImageDtype",
    "_convert_to_rgb",
    "convert_to_rgb",
}
# Steps that move pixels and can be replayed on a mask (with nearest interpolation).
_RESIZES = {"Resize", "ResizeKeepRatio"}
_CROPS = {"CenterCrop", "CenterCropOrPad"}


def geometric_transform(
    preprocess: Callable[[Image.Image], object],
) -> Callable[[Image.Image], Image.Image]:
    """The geometric part of an image transform, replayed with nearest interpolation.

    Args:
        preprocess: A torchvision ``Compose`` (e.g. ``model.preprocess``) or a single transform.

    Returns:
        A function PIL image -> PIL image that resizes and crops as ``preprocess`` does, with
        ``NEAREST`` interpolation and padding (if any) filled with 0.

    Raises:
        ValueError: ``preprocess`` contains a step that is neither a known resize/crop nor a
            known pixel-value step (the mask's geometry cannot be guaranteed): pass your own
            mask transform instead.

    Example:
        >>> from torchvision import transforms as T
        >>> pre = T.Compose([T.Resize(4), T.CenterCrop(4), T.ToTensor()])
        >>> geo = geometric_transform(pre)
        >>> np.asarray(geo(Image.new("L", (8, 6)))).shape
        (4, 4)
    """
    from torchvision.transforms import InterpolationMode

    if not callable(preprocess):
        raise TypeError(
            f"preprocess must be an image transform (e.g. model.preprocess, a torchvision "
            f"Compose), got {type(preprocess).__name__} {preprocess!r}."
        )
    steps = list(getattr(preprocess, "transforms", [preprocess]))
    kept: list[Callable[[Image.Image], Image.Image]] = []
    for step in steps:
        name = getattr(step, "__name__", None) or type(step).__name__  # functions by name
        if name in _PHOTOMETRIC:
            continue
        if name in _RESIZES:
            step = copy.copy(step)
            step.interpolation = InterpolationMode.NEAREST
            kept.append(step)
        elif name in _CROPS:
            step = copy.copy(step)
            if hasattr(step, "fill"):
                step.fill = 0
            kept.append(step)
        else:
            raise ValueError(
                f"Cannot tell whether the preprocessing step {step!r} moves pixels, so masks "
                "cannot be guaranteed to stay aligned with their images. Pass a mask transform "
                "(PIL mask -> PIL mask, same geometry) explicitly."
            )

    def apply(mask: Image.Image) -> Image.Image:
        for step in kept:
            mask = step(mask)
        return mask

    return apply


def transform_mask(
    mask: np.ndarray | Tensor | Image.Image, preprocess: Callable[[Image.Image], object]
) -> Bool[Tensor, "height width"]:
    """Resize and crop a binary mask exactly as ``preprocess`` resizes and crops its image.

    Args:
        mask: ``[H, W]`` mask of the original image (bool, or integers where > 0 = foreground),
            or a PIL image of it.
        preprocess: The image transform (``model.preprocess``), see :func:`geometric_transform`.

    Returns:
        ``[H', W']`` bool tensor at the model's input resolution.

    Example:
        >>> from torchvision import transforms as T
        >>> pre = T.Compose([T.Resize(2), T.CenterCrop(2), T.ToTensor()])
        >>> mask = np.zeros((4, 8), bool); mask[:, 4:6] = True  # right of centre
        >>> transform_mask(mask, pre)
        tensor([[False,  True],
                [False,  True]])
    """
    if isinstance(mask, Image.Image):
        array = np.asarray(mask)
    elif isinstance(mask, Tensor):
        array = mask.detach().cpu().numpy()
    elif isinstance(mask, np.ndarray | list | tuple):
        array = np.asarray(mask)
    else:
        raise TypeError(
            f"mask must be a numpy array, tensor or PIL image [H, W], got {type(mask).__name__}."
        )
    if array.ndim != 2:
        raise ValueError(f"A mask must be [H, W], got shape {array.shape}.")
    if array.size == 0:
        raise ValueError(f"mask is empty (shape {array.shape}); a mask needs at least one pixel.")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(f"mask must hold numbers or bools, got dtype {array.dtype}.")
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        raise ValueError(
            f"mask holds {int(np.isnan(array).sum())} NaN and {int(np.isinf(array).sum())} "
            "infinite value(s); NaN would silently count as background. Pass a finite mask "
            "(> 0 = foreground)."
        )
    geometric = geometric_transform(preprocess)
    pil = Image.fromarray(((array > 0) * 255).astype(np.uint8), mode="L")
    out = np.asarray(geometric(pil))
    return torch.from_numpy(out > 127)
