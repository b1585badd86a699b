"""Private helpers the figure modules share: arrays from tensors, images as embedded PNG traces,
patch-score grids laid over images, colour ranges and HTML escaping. Not public API."""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
import torch
from torch import Tensor

from vision_lens.utils.grids import as_square_grid

if TYPE_CHECKING:
    from typing import TypeAlias

    from numpy.typing import ArrayLike
    from PIL.Image import Image as PILImage

    #: Numbers in any array form: a tensor (any device or dtype), a numpy array, nested lists.
    Numbers: TypeAlias = Tensor | ArrayLike
    #: One image: a PIL image, a uint8 ``[H, W, 3]`` array or a ``[3, H, W]`` tensor.
    ImageLike: TypeAlias = PILImage | Tensor | np.ndarray


def as_numpy(x: Numbers) -> np.ndarray:
    """A numpy array of ``x`` (tensors are detached, cast to float32 and moved to the CPU)."""
    if isinstance(x, Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def _kind(value: object) -> str:
    return type(value).__name__


def numbers_array(
    x: object,
    name: str,
    *,
    ndim: int | tuple[int, ...] | None = None,
    layout: str = "",
    finite: bool = True,
) -> np.ndarray:
    """A float numpy array of ``x``, refused unless it is numbers of the right ndim, non-empty
    and (with ``finite``) free of NaN and infinity.

    Args:
        x: A tensor, a numpy array or nested lists of numbers.
        name: The argument's name, for the messages.
        ndim: The number(s) of dimensions allowed (``None``: any, at least 1).
        layout: The expected layout, e.g. ``"[layer, head]"``, for the messages.
        finite: Refuse NaN and infinity.

    Raises:
        TypeError: Not numbers (``None``, a string, a mapping, objects, complex numbers).
        ValueError: Wrong ndim, no values, or NaN/infinity.
    """
    expected = f" {layout}" if layout else ""
    if x is None or isinstance(x, str | bytes | Mapping):
        raise TypeError(
            f"{name} must be a tensor, numpy array or nested list of numbers{expected}, "
            f"got {_kind(x)} {x!r:.60}."
        )
    if isinstance(x, Tensor) and x.is_complex():
        raise TypeError(f"{name} must be real numbers, got a complex tensor ({x.dtype}).")
    try:
        array = as_numpy(x)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"{name} must be a tensor, numpy array or nested list of numbers{expected}, "
            f"got {_kind(x)} that numpy cannot read as one ({error})."
        ) from None
    if array.dtype.kind == "c":
        raise TypeError(f"{name} must be real numbers, got complex values ({array.dtype}).")
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must be numbers{expected}, got an array of {array.dtype} "
            f"({_kind(x)} {x!r:.60}); pass numeric values."
        )
    array = array.astype(np.float64) if array.dtype.kind != "f" else array
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if allowed is not None and array.ndim not in allowed:
        dims = " or ".join(map(str, allowed))
        raise ValueError(
            f"{name} must have {dims} dimension(s){expected}, got shape {array.shape}."
        )
    if array.ndim == 0:
        raise ValueError(f"{name} must be an array{expected}, got the scalar {array.item()!r}.")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}): there is nothing to plot.")
    if finite and not np.isfinite(array).all():
        n_nan, n_inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
        raise ValueError(
            f"{name} contains {n_nan} NaN and {n_inf} infinite value(s) out of {array.size}; a "
            "figure of them would be silently wrong (blank cells, a broken colour scale). Find "
            "where they come from and pass finite values."
        )
    return array


def check_flag(value: object, name: str) -> bool | None:
    """``value`` if it is ``True``, ``False`` or ``None``; else ``TypeError``."""
    if value is None or isinstance(value, bool | np.bool_):
        return None if value is None else bool(value)
    raise TypeError(f"{name} must be True, False or None, got {value!r}.")


def check_int(value: object, name: str, *, minimum: int = 1, none: bool = False) -> int | None:
    """``value`` as an int of at least ``minimum`` (``None`` passes with ``none``)."""
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        also = " (or None)" if none else ""
        raise TypeError(f"{name} must be an int >= {minimum}{also}, got {value!r}.")
    if value < minimum:
        also = " (or None)" if none else ""
        raise ValueError(f"{name} must be an int >= {minimum}{also}, got {value!r}.")
    return int(value)


def check_number(
    value: object, name: str, *, low: float, high: float = math.inf, low_open: bool = False
) -> float:
    """``value`` as a float in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}.")
    number = float(value)
    inside = (number > low if low_open else number >= low) and number <= high
    if not inside or math.isnan(number):
        left = "(" if low_open else "["
        raise ValueError(f"{name} must be in {left}{low:g}, {high:g}], got {value!r}.")
    return number


def check_texts(
    texts: object, name: str, n: int | None = None, what: str = "", items: str = "strings"
) -> list:
    """``texts`` as a list: a sequence (not a string itself) of ``n`` entries."""
    if isinstance(texts, Tensor | np.ndarray):
        texts = texts.tolist()
    if (
        isinstance(texts, str | bytes | Mapping)
        or not hasattr(texts, "__len__")
        or not hasattr(texts, "__iter__")
    ):
        hint = (
            " (a single string would be read letter by letter; wrap it in a list)."
            if isinstance(texts, str)
            else "."
        )
        raise TypeError(f"{name} must be a list of {items}, got {_kind(texts)} {texts!r:.60}{hint}")
    texts = list(texts)
    if n is not None and len(texts) != n:
        raise ValueError(
            f"{name} has {len(texts)} entries but there are {n} {what}; pass one each."
        )
    return texts


def image_array(image: ImageLike, name: str = "image") -> np.ndarray:
    """A uint8 ``[H, W, 3]`` array from a PIL image, a uint8 HWC array or a float CHW tensor.

    Raises:
        TypeError: Not an image (``None``, a path string, ...).
        ValueError: Not one RGB image (a batch, grey, RGBA, no pixels) or NaN/infinite pixels.
    """
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("RGB"))
    if not isinstance(image, Tensor | np.ndarray | list | tuple):
        raise TypeError(
            f"{name} must be a PIL image, a uint8 [H, W, 3] array or a [3, H, W] tensor, got "
            f"{_kind(image)} {image!r:.60}."
        )
    numbers_array(image, name, finite=False)  # numbers, non-empty
    array = as_numpy(image)
    if array.ndim == 4:
        raise ValueError(
            f"{name} is a batch of shape {array.shape}, not one image: pass one image "
            f"(e.g. {name}[0])."
        )
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(
            f"Expected an RGB image [H, W, 3] (or [3, H, W]) for {name}, got shape {array.shape}."
        )
    if array.dtype != np.uint8:
        numbers_array(array, name)  # refuses NaN and infinities
        lo, hi = float(array.min()), float(array.max())
        array = ((array - lo) / (hi - lo + 1e-12) * 255).round().astype(np.uint8)
    return array


def signed_range(values: np.ndarray) -> tuple[float, float]:
    """``(-bound, bound)`` with ``bound`` the largest magnitude (1 for all zeros)."""
    bound = float(np.abs(values).max()) or 1.0
    return -bound, bound


def image_trace(pixels: np.ndarray, **kw: Any) -> go.Image:
    """An image trace carrying a PNG data URI (compact in HTML, unlike a pixel array).

    ``kw`` are any ``go.Image`` properties (``hoverinfo``, ``name``, ...).
    """
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return go.Image(source=uri, **kw)


def patch_grid(scores: Numbers, name: str = "scores") -> np.ndarray:
    """Float32 ``[rows, cols]`` patch scores; flat scores must fill a square grid."""
    grid = numbers_array(scores, name, ndim=(1, 2), layout="[rows, cols]").astype(np.float32)
    if grid.ndim == 1:
        grid = as_square_grid(torch.from_numpy(grid)).numpy()
    return grid


def heat_trace(
    grid: np.ndarray, image_hw: tuple[int, int], opacity: float, signed: bool | None, **kw: Any
) -> go.Heatmap:
    """A patch-resolution heatmap stretched over the image, smoothed (bilinearly) by plotly.

    ``kw`` are any further ``go.Heatmap`` properties (``showscale``, ...).
    """
    signed = bool(grid.min() < 0 < grid.max()) if signed is None else signed
    zmin, zmax = signed_range(grid) if signed else (float(grid.min()), float(grid.max()))
    dy, dx = image_hw[0] / grid.shape[0], image_hw[1] / grid.shape[1]
    return go.Heatmap(
        z=grid,
        x0=dx / 2 - 0.5,
        dx=dx,
        y0=dy / 2 - 0.5,
        dy=dy,
        zsmooth="best",
        opacity=opacity,
        colorscale="RdBu_r" if signed else "Viridis",
        zmin=zmin,
        zmax=zmax,
        zmid=0.0 if signed else None,
        **kw,
    )


def escape_html(text: object) -> str:
    """Text made safe for plotly's HTML-like hover labels and table cells."""
    return html.escape(str(text), quote=False)
