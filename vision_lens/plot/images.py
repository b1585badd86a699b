"""Image panels: segmentation examples (image, ground truth, each method's heatmap) and
retrieval grids (a query and its neighbours, with titles and scores)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from vision_lens.plot._common import (
    check_int,
    check_number,
    check_texts,
    escape_html,
    image_array,
    image_trace,
    numbers_array,
)

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from PIL.Image import Image


def _colormap(name: str = "Jet") -> np.ndarray:
    """A ``uint8 [256, 3]`` lookup table of a plotly colour scale."""
    from plotly.colors import sample_colorscale

    colors = sample_colorscale(name, list(np.linspace(0, 1, 256)), colortype="rgb")
    return np.array(
        [[float(v) for v in c[c.index("(") + 1 : -1].split(",")] for c in colors]
    ).astype(np.uint8)


def _overlay(pixels: np.ndarray, values: np.ndarray, alpha: float, cmap: np.ndarray) -> np.ndarray:
    """Blend ``values`` in ``[0, 1]`` (``[H, W]``), colour-mapped, over an RGB image."""
    index = np.clip(np.nan_to_num(values) * 255, 0, 255).astype(np.int64)
    blended = (1 - alpha) * pixels.astype(np.float32) + alpha * cmap[index].astype(np.float32)
    return blended.round().clip(0, 255).astype(np.uint8)


def _shrink(pixels: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale an RGB array so that its longer side is at most ``max_side``."""
    from PIL import Image

    h, w = pixels.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return pixels
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.BILINEAR))


def _check_images(images: object) -> int:
    """How many images ``images`` holds: a sequence of images or a batch tensor/array."""
    if (
        images is None
        or isinstance(images, str | bytes | Mapping)
        or not hasattr(images, "__len__")
    ):
        raise TypeError(
            "images must be a list of images (PIL images, uint8 [H, W, 3] arrays or [3, H, W] "
            "tensors) or one [n, 3, H, W] tensor / [n, H, W, 3] array, got "
            f"{type(images).__name__} {images!r:.60}."
        )
    if getattr(images, "ndim", 4) == 3:
        raise ValueError(
            f"images has shape {tuple(images.shape)}: that is one image, not a batch; pass "
            "[image] or image[None]."
        )
    return len(images)


def segmentation_examples(
    images: Sequence[Image | Tensor | np.ndarray] | Tensor | np.ndarray,
    masks: Tensor | ArrayLike,
    heatmaps: Mapping[str, Tensor | ArrayLike],
    texts: Sequence[str] | None = None,
    alpha: float = 0.6,
    title: str | None = None,
    max_side: int = 128,
) -> go.Figure:
    """Rows of examples: the image, its ground-truth mask, then each method's heatmap.

    Every panel is a small embedded PNG (not a numeric heatmap trace, and downscaled to at most
    ``max_side`` pixels), so figures stay small.
    Heatmaps are shown as the protocol sees them: clipped at 0 and min-max normalised per image.

    Args:
        images: ``n`` images (uint8 ``[n, H, W, 3]``, a list of PIL images or CHW tensors).
        masks: ``[n, H, W]`` ground-truth masks at the images' resolution.
        heatmaps: Method name -> ``[n, H, W]`` heatmaps at the images' resolution.
        texts: Row labels (e.g. each image's class text).
        alpha: Heatmap opacity over the image.
        title: Figure title.
        max_side: Panels larger than this are downscaled (bilinear) to it.

    Returns:
        A figure with one ``image`` trace per panel, row by row.

    Raises:
        TypeError: ``images`` not images, ``heatmaps`` not a mapping, ``texts`` not a list.
        ValueError: Counts or resolutions that differ, masks/heatmaps not ``[n, H, W]``, empty
            or non-finite values, ``alpha`` outside ``[0, 1]``, ``max_side < 1``.

    Example:
        >>> import numpy as np
        >>> fig = segmentation_examples(np.zeros((2, 8, 8, 3), np.uint8), np.ones((2, 8, 8)),
        ...                             {"ours": np.random.rand(2, 8, 8)}, ["a", "b"])
        >>> len(fig.data)  # per row: image, mask, one heatmap
        6
    """
    n_images = _check_images(images)
    masks = numbers_array(masks, "masks", ndim=3, layout="[n, H, W]").astype(bool)
    n = len(masks)
    if not isinstance(heatmaps, Mapping):
        raise TypeError(
            "heatmaps must be a mapping of method name -> [n, H, W] heatmaps, got "
            f"{type(heatmaps).__name__}; e.g. {{'ours': heatmaps}}."
        )
    maps = {
        name: numbers_array(h, f"heatmaps[{name!r}]", ndim=3, layout="[n, H, W]").astype(np.float32)
        for name, h in heatmaps.items()
    }
    for name, h in maps.items():
        if h.shape != masks.shape:
            raise ValueError(
                f"heatmaps[{name!r}] is {h.shape} but masks are {masks.shape}: upsample the "
                "heatmaps to the masks' resolution (upsample_patch_scores), one per image."
            )
    if n_images != n:
        raise ValueError(f"{n_images} images but {n} masks: pass one mask per image.")
    if texts is not None:
        texts = check_texts(texts, "texts", n, "images")
    alpha = check_number(alpha, "alpha", low=0.0, high=1.0)
    max_side = check_int(max_side, "max_side")
    cmap = _colormap()
    fig = make_subplots(
        rows=n,
        cols=2 + len(maps),
        column_titles=["image", "ground truth", *maps],
        row_titles=list(texts) if texts is not None else None,
        horizontal_spacing=0.01,
        vertical_spacing=0.01,
    )
    for row in range(n):
        pixels = image_array(images[row], f"images[{row}]")
        if pixels.shape[:2] != masks.shape[1:]:
            raise ValueError(
                f"images[{row}] is {pixels.shape[:2]} pixels but masks are "
                f"{masks.shape[1:]}: masks and heatmaps must be at the images' resolution."
            )
        gray = np.repeat(pixels.mean(-1, keepdims=True), 3, -1).astype(np.uint8)
        panels = [pixels, _overlay(gray, masks[row].astype(np.float32), 0.5, cmap)]
        for h in maps.values():
            values = np.clip(h[row], 0, None)
            span = values.max() - values.min()
            values = (values - values.min()) / span if span > 0 else np.zeros_like(values)
            panels.append(_overlay(gray, values, alpha, cmap))
        for col, panel in enumerate(panels, start=1):
            fig.add_trace(image_trace(_shrink(panel, max_side)), row=row + 1, col=col)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, height=150 * n + 80, width=150 * (2 + len(maps)) + 60)
    return fig


def _scores(scores: object) -> list[float | None]:
    """Scores to show: numbers, with ``None`` or NaN for none; infinities are refused."""
    if isinstance(scores, str | bytes) or not hasattr(scores, "__len__"):
        raise TypeError(f"scores must be a list of numbers, one per image, got {scores!r:.60}.")
    if not isinstance(scores, list | tuple):
        scores = numbers_array(scores, "scores", ndim=1, layout="[n]", finite=False).tolist()
    values: list[float | None] = []
    for s in scores:
        if (isinstance(s, Tensor) and s.numel() == 1) or (
            isinstance(s, np.ndarray | np.generic) and s.size == 1
        ):
            s = s.item()  # a one-value tensor or a numpy scalar
        if s is None:
            values.append(None)
            continue
        if isinstance(s, bool) or not isinstance(s, numbers.Real):
            raise TypeError(f"scores must be numbers (None or NaN: no score), got {s!r}.")
        if math.isinf(s):
            raise ValueError(f"scores contains {s!r}: pass finite numbers (None or NaN: no score).")
        values.append(None if math.isnan(s) else float(s))
    return values


def retrieval_grid(
    images: Sequence[Image | Tensor | np.ndarray] | Tensor | np.ndarray,
    scores: Sequence[float | None] | Tensor | ArrayLike | None = None,
    titles: Sequence[str] | None = None,
    ncols: int = 5,
    *,
    title: str | None = None,
    max_side: int = 160,
    panel_size: int = 170,
) -> go.Figure:
    """A grid of images with titles and scores, e.g. a query and its nearest neighbours.

    Args:
        images: ``n`` images: a list of PIL images, uint8 ``[H, W, 3]`` arrays or float
            ``[3, H, W]`` tensors (min-max scaled for display), or one ``[n, 3, H, W]`` tensor /
            ``[n, H, W, 3]`` array.
        scores: Optional ``n`` numbers shown under the titles (``None`` or NaN: none, e.g. for
            the query).
        titles: Optional ``n`` titles.
        ncols: Images per row.
        title: Figure title.
        max_side: Images larger than this are downscaled to it (keeps figures small).
        panel_size: Size of one panel in pixels.

    Returns:
        A figure with one ``image`` trace per image, in row-major order.

    Raises:
        TypeError: ``images`` not images, ``titles`` not a list, scores not numbers, sizes
            not ints.
        ValueError: No images, one image instead of a batch, counts that differ, infinite
            scores, ``ncols``/``max_side < 1``, ``panel_size < 10``.

    Example:
        >>> import torch
        >>> from vision_lens.analysis.retrieval import image_neighbors
        >>> images = torch.rand(6, 3, 16, 16)
        >>> found = image_neighbors(images.flatten(1), queries=[0], k=3)
        >>> index = [0, *found.indices[0].tolist()]
        >>> fig = retrieval_grid(images[index], scores=[None, *found.scores[0].tolist()],
        ...                      titles=["query"] + [f"#{i}" for i in index[1:]], ncols=2)
        >>> len(fig.data), fig.layout.annotations[0].text
        (4, 'query')
    """
    n = _check_images(images)
    if n == 0:
        raise ValueError("retrieval_grid needs at least one image.")
    ncols = check_int(ncols, "ncols")
    max_side = check_int(max_side, "max_side")
    panel_size = check_int(panel_size, "panel_size", minimum=10)
    if titles is not None:
        titles = check_texts(titles, "titles")
        if len(titles) != n:
            raise ValueError(f"{len(titles)} titles for {n} images: pass one title per image.")
    values: list[float | None] = [None] * n
    if scores is not None:
        values = _scores(scores)
        if len(values) != n:
            raise ValueError(f"{len(values)} scores for {n} images: pass one score per image.")
    labels = []
    for i in range(n):
        parts = [escape_html(titles[i])] if titles is not None else []
        if values[i] is not None:
            parts.append(f"{values[i]:.3g}")
        labels.append("<br>".join(parts))
    cols = min(ncols, n)
    n_rows = math.ceil(n / cols)
    lines = max((label.count("<br>") + 1 for label in labels if label), default=0)
    label_px = 16 * lines + 6 if lines else 8  # room for the titles above each row
    plot_px = n_rows * panel_size + (n_rows - 1) * label_px
    plot_width = cols * panel_size + (cols - 1) * 8
    top = (50 if title else 10) + (label_px if lines else 0)
    fig = make_subplots(
        rows=n_rows,
        cols=cols,
        subplot_titles=labels,
        horizontal_spacing=8 / plot_width,
        vertical_spacing=label_px / plot_px if n_rows > 1 else 0.0,
    )
    for i in range(n):
        pixels = _shrink(image_array(images[i], f"images[{i}]"), max_side)
        fig.add_trace(
            image_trace(pixels, hoverinfo="skip", name=labels[i] or f"image {i}"),
            row=i // cols + 1,
            col=i % cols + 1,
        )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_annotations(font_size=12)
    fig.update_layout(
        title=title,
        width=plot_width + 20,
        height=plot_px + top + 10,
        margin={"l": 10, "r": 10, "t": top, "b": 10},
    )
    return fig
