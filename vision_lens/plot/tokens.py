"""Per-patch scores drawn on images: one heatmap overlay, a grid of them (images x texts), and
the bilinear upsampling of a patch grid to pixels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from vision_lens.plot._common import (
    check_flag,
    check_number,
    check_texts,
    heat_trace,
    image_array,
    image_trace,
    numbers_array,
    patch_grid,
)
from vision_lens.utils.grids import as_square_grid, upsample_grid

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from PIL.Image import Image


def _check_size(size: object) -> tuple[int, int]:
    """``size`` as ``(H, W)``: two positive ints."""
    if isinstance(size, Tensor | np.ndarray):
        size = size.tolist()
    if isinstance(size, str | bytes) or not isinstance(size, Sequence):
        raise TypeError(f"size must be (H, W), two positive ints, got {size!r}.")
    if len(size) != 2:
        raise ValueError(
            f"size must be (H, W), two positive ints, got {len(size)} values {size!r}."
        )
    for value in size:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"size must be (H, W), two positive ints, got {value!r} in {size!r}.")
        if value < 1:
            raise ValueError(f"size must be (H, W), two positive ints, got {value!r} in {size!r}.")
    return int(size[0]), int(size[1])


def upsample_patch_scores(scores: Tensor | ArrayLike, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly upsample a patch grid ``[rows, cols]`` of scores to ``size`` (H, W).

    Args:
        scores: ``[rows, cols]`` patch scores, or flat ones that fill a square grid.
        size: ``(H, W)`` in pixels.

    Returns:
        A float32 ``[H, W]`` array (``align_corners=False`` bilinear interpolation).

    Example:
        >>> import numpy as np
        >>> upsample_patch_scores(np.zeros((4, 4)), (32, 32)).shape
        (32, 32)
    """
    grid = torch.as_tensor(
        numbers_array(scores, "scores", layout="[rows, cols]"), dtype=torch.float32
    )
    size = _check_size(size)
    if grid.dim() == 1:
        grid = as_square_grid(grid)
    return upsample_grid(grid, size).numpy()


def token_heatmap(
    image: Image | Tensor | np.ndarray,
    scores: Tensor | ArrayLike,
    title: str | None = None,
    opacity: float = 0.55,
    signed: bool | None = None,
) -> go.Figure:
    """Patch scores overlaid on the image, smoothly upsampled to its size.

    Args:
        image: PIL image, uint8 ``[H, W, 3]`` array or ``[3, H, W]`` tensor.
        scores: ``[rows, cols]`` (or flat, square) patch scores, e.g. ``decompose_tokens`` patch
            terms dotted with a text embedding.
        title: Figure title.
        opacity: Opacity of the heatmap over the image.
        signed: Centre the colour scale at zero (default: when scores take both signs).

    Returns:
        A figure with an ``image`` trace and a ``heatmap`` trace whose ``z`` is the score grid.

    Raises:
        TypeError: ``image`` is not an image, ``scores`` not numbers, ``opacity`` not a number,
            ``signed`` not a bool.
        ValueError: Not one RGB image, scores that are not a (square) grid, empty or
            non-finite values, ``opacity`` outside ``[0, 1]``.

    Example:
        >>> import numpy as np
        >>> fig = token_heatmap(np.zeros((32, 32, 3), np.uint8), np.random.randn(4, 4))
        >>> [trace.type for trace in fig.data]
        ['image', 'heatmap']
    """
    pixels = image_array(image)
    grid = patch_grid(scores)
    opacity = check_number(opacity, "opacity", low=0.0, high=1.0)
    signed = check_flag(signed, "signed")
    fig = go.Figure()
    fig.add_trace(image_trace(pixels))
    fig.add_trace(heat_trace(grid, pixels.shape[:2], opacity, signed))
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False)
    return fig


def token_heatmap_grid(
    images: Sequence[Image | Tensor | np.ndarray],
    scores: Tensor | ArrayLike,
    texts: Sequence[str],
    opacity: float = 0.55,
    title: str | None = None,
) -> go.Figure:
    """A grid of token heatmaps: one row per image, one column per text.

    Args:
        images: ``n_images`` images (see :func:`token_heatmap`).
        scores: ``[n_images, n_texts, rows, cols]`` patch scores.
        texts: Column titles.
        opacity: Heatmap opacity.
        title: Figure title.

    Returns:
        A figure with, per row, the image alone, then per text the image and its heatmap
        (always on a zero-centred scale).

    Example:
        >>> import numpy as np
        >>> fig = token_heatmap_grid([np.zeros((16, 16, 3), np.uint8)] * 2,
        ...                          np.random.randn(2, 3, 4, 4), ["a", "b", "c"])
        >>> len(fig.data)  # per row: the image, then image + heatmap per text
        14
    """
    if images is None or isinstance(images, str | bytes) or not hasattr(images, "__len__"):
        raise TypeError(
            "images must be a list of images (or a [n, 3, H, W] tensor / [n, H, W, 3] array), "
            f"got {type(images).__name__} {images!r:.60}."
        )
    texts = check_texts(texts, "texts")
    scores = numbers_array(scores, "scores", ndim=(3, 4), layout="[n_images, n_texts, rows, cols]")
    n_images, n_texts = scores.shape[:2]
    if n_images != len(images) or n_texts != len(texts):
        raise ValueError(
            f"scores {scores.shape[:2]} do not match {len(images)} images x {len(texts)} texts: "
            "scores must be [n_images, n_texts, rows, cols], one image and one text each."
        )
    opacity = check_number(opacity, "opacity", low=0.0, high=1.0)
    fig = make_subplots(
        rows=n_images,
        cols=n_texts + 1,
        column_titles=["image", *texts],
        horizontal_spacing=0.01,
        vertical_spacing=0.01,
    )
    for row, image in enumerate(images, start=1):
        pixels = image_array(image, f"images[{row - 1}]")
        fig.add_trace(image_trace(pixels), row=row, col=1)
        for col in range(n_texts):
            grid = patch_grid(scores[row - 1, col], f"scores[{row - 1}, {col}]")
            fig.add_trace(image_trace(pixels), row=row, col=col + 2)
            fig.add_trace(
                heat_trace(grid, pixels.shape[:2], opacity, signed=True, showscale=False),
                row=row,
                col=col + 2,
            )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, height=170 * n_images + 80, width=170 * (n_texts + 1) + 40)
    return fig
