"""Private helpers the figure modules share: arrays from tensors, images as embedded PNG traces,
patch-score grids laid over images, colour ranges and HTML escaping. Not public API."""

from __future__ import annotations

import base64
import html
import io
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


def image_array(image: ImageLike) -> np.ndarray:
    """A uint8 ``[H, W, 3]`` array from a PIL image, a uint8 HWC array or a float CHW tensor."""
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("RGB"))
    array = as_numpy(image)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"Expected an RGB image [H, W, 3], got shape {array.shape}.")
    if array.dtype != np.uint8:
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


def patch_grid(scores: Numbers) -> np.ndarray:
    """Float32 ``[rows, cols]`` patch scores; flat scores must fill a square grid."""
    grid = as_numpy(scores).astype(np.float32)
    if grid.ndim == 1:
        grid = as_square_grid(torch.from_numpy(grid)).numpy()
    if grid.ndim != 2:
        raise ValueError(f"Patch scores must be [rows, cols], got shape {grid.shape}.")
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
