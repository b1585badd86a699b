"""Plotly figures of layers, heads and tokens. Every function returns a ``go.Figure``."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from plotly.subplots import make_subplots
from torch import Tensor


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def _image_array(image: Any) -> np.ndarray:
    """A uint8 ``[H, W, 3]`` array from a PIL image, a uint8 HWC array or a float CHW tensor."""
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("RGB"))
    array = _numpy(image)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"Expected an RGB image [H, W, 3], got shape {array.shape}.")
    if array.dtype != np.uint8:
        lo, hi = float(array.min()), float(array.max())
        array = ((array - lo) / (hi - lo + 1e-12) * 255).round().astype(np.uint8)
    return array


def upsample_patch_scores(scores: Any, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly upsample a patch grid ``[rows, cols]`` of scores to ``size`` (H, W).

    Example:
        >>> upsample_patch_scores(np.zeros((4, 4)), (32, 32)).shape
        (32, 32)
    """
    grid = torch.as_tensor(_numpy(scores), dtype=torch.float32)
    if grid.dim() == 1:
        side = int(round(grid.numel() ** 0.5))
        if side * side != grid.numel():
            raise ValueError(
                f"{grid.numel()} patch scores do not form a square grid; pass [rows, cols]."
            )
        grid = grid.view(side, side)
    up = F.interpolate(grid[None, None], size=size, mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


def _signed_range(values: np.ndarray) -> tuple[float, float]:
    bound = float(np.abs(values).max()) or 1.0
    return -bound, bound


def _image_trace(pixels: np.ndarray, **kw: Any) -> go.Image:
    """An image trace carrying a PNG data URI (compact in HTML, unlike a pixel array)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return go.Image(source=uri, **kw)


def _patch_grid(scores: Any) -> np.ndarray:
    grid = _numpy(scores).astype(np.float32)
    if grid.ndim == 1:
        side = int(round(grid.size**0.5))
        if side * side != grid.size:
            raise ValueError(
                f"{grid.size} patch scores do not form a square grid; pass [rows, cols]."
            )
        grid = grid.reshape(side, side)
    if grid.ndim != 2:
        raise ValueError(f"Patch scores must be [rows, cols], got shape {grid.shape}.")
    return grid


def _heat_trace(
    grid: np.ndarray, image_hw: tuple[int, int], opacity: float, signed: bool | None, **kw: Any
) -> go.Heatmap:
    """A patch-resolution heatmap stretched over the image, smoothed (bilinearly) by plotly."""
    signed = bool(grid.min() < 0 < grid.max()) if signed is None else signed
    zmin, zmax = _signed_range(grid) if signed else (float(grid.min()), float(grid.max()))
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


def token_heatmap(
    image: Any,
    scores: Any,
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

    Example:
        >>> fig = token_heatmap(np.zeros((32, 32, 3), np.uint8), np.random.randn(4, 4))
        >>> [trace.type for trace in fig.data]
        ['image', 'heatmap']
    """
    pixels = _image_array(image)
    fig = go.Figure()
    fig.add_trace(_image_trace(pixels))
    fig.add_trace(_heat_trace(_patch_grid(scores), pixels.shape[:2], opacity, signed))
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False)
    return fig


def token_heatmap_grid(
    images: Sequence[Any],
    scores: Any,
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

    Example:
        >>> fig = token_heatmap_grid([np.zeros((16, 16, 3), np.uint8)] * 2,
        ...                          np.random.randn(2, 3, 4, 4), ["a", "b", "c"])
        >>> len(fig.data)  # per row: the image, then image + heatmap per text
        14
    """
    scores = _numpy(scores)
    n_images, n_texts = scores.shape[:2]
    if n_images != len(images) or n_texts != len(texts):
        raise ValueError(
            f"scores {scores.shape[:2]} do not match {len(images)} images x {len(texts)} texts."
        )
    fig = make_subplots(
        rows=n_images,
        cols=n_texts + 1,
        column_titles=["image", *texts],
        horizontal_spacing=0.01,
        vertical_spacing=0.01,
    )
    for row, image in enumerate(images, start=1):
        pixels = _image_array(image)
        fig.add_trace(_image_trace(pixels), row=row, col=1)
        for col in range(n_texts):
            grid = _patch_grid(scores[row - 1, col])
            fig.add_trace(_image_trace(pixels), row=row, col=col + 2)
            fig.add_trace(
                _heat_trace(grid, pixels.shape[:2], opacity, signed=True, showscale=False),
                row=row,
                col=col + 2,
            )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, height=170 * n_images + 80, width=170 * (n_texts + 1) + 40)
    return fig


def head_grid(
    scores: Any,
    labels: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
    layers: Sequence[int] | None = None,
) -> go.Figure:
    """A layer x head heatmap of any per-head score.

    Args:
        scores: ``[layer, head]`` scores (e.g. mean direct-effect norm of each head).
        labels: Optional ``[layer][head]`` hover texts (e.g. each head's TextSpan texts).
        title: Figure title.
        layers: Layer indices for the y axis (default ``0..n_layers-1``).

    Example:
        >>> head_grid(np.random.rand(2, 4)).data[0].z.shape
        (2, 4)
    """
    values = _numpy(scores)
    if values.ndim != 2:
        raise ValueError(f"scores must be [layer, head], got shape {values.shape}.")
    layer_ids = list(range(values.shape[0])) if layers is None else list(layers)
    hover = None
    if labels is not None:
        hover = [
            ["<br>".join(lab) if not isinstance(lab, str) else lab for lab in row] for row in labels
        ]
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=[f"H{h}" for h in range(values.shape[1])],
            y=[f"L{layer}" for layer in layer_ids],
            text=hover,
            hovertemplate="%{y} %{x}: %{z:.3g}"
            + ("<br>%{text}" if hover else "")
            + "<extra></extra>",
            colorscale="Viridis",
        )
    )
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer")
    fig.update_yaxes(autorange="reversed")
    return fig


def layer_contributions(
    terms: Any,
    labels: Sequence[str],
    embed: Any | None = None,
    title: str | None = None,
) -> go.Figure:
    """Bar chart of direct effects by component (from ``decompose_layers``).

    Shows the mean norm of each component's term over images and, when ``embed`` is given, its
    mean projection onto the unit image embedding (the projections sum to the embedding's norm).

    Args:
        terms: ``[component, batch, d_embed]`` terms.
        labels: Component labels.
        embed: ``[batch, d_embed]`` image embeddings (the terms' sum), optional.
        title: Figure title.

    Example:
        >>> t = torch.randn(3, 4, 8)
        >>> len(layer_contributions(t, ["embed", "L0_attn", "bias"], t.sum(0)).data)
        2
    """
    values = torch.as_tensor(_numpy(terms))
    fig = go.Figure(go.Bar(x=list(labels), y=values.norm(dim=-1).mean(1).numpy(), name="mean norm"))
    if embed is not None:
        unit = F.normalize(torch.as_tensor(_numpy(embed)), dim=-1)
        projection = (values * unit[None]).sum(-1).mean(1).numpy()
        fig.add_trace(go.Bar(x=list(labels), y=projection, name="mean projection on embedding"))
    fig.update_layout(title=title, barmode="group", xaxis_title="component", yaxis_title="size")
    return fig


def line_chart(
    curves: Mapping[str, Sequence[float]],
    x: Sequence[Any],
    title: str | None = None,
    xaxis_title: str | None = None,
    yaxis_title: str | None = None,
) -> go.Figure:
    """Several named curves over a shared x axis (e.g. accuracy vs ablated layers).

    Example:
        >>> len(line_chart({"a": [1, 2], "b": [2, 1]}, x=[0, 1]).data)
        2
    """
    fig = go.Figure()
    for name, ys in curves.items():
        fig.add_trace(go.Scatter(x=list(x), y=list(ys), mode="lines+markers", name=name))
    fig.update_layout(title=title, xaxis_title=xaxis_title, yaxis_title=yaxis_title)
    return fig


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


def segmentation_examples(
    images: Any,
    masks: Any,
    heatmaps: Mapping[str, Any],
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

    Example:
        >>> fig = segmentation_examples(np.zeros((2, 8, 8, 3), np.uint8), np.ones((2, 8, 8)),
        ...                             {"ours": np.random.rand(2, 8, 8)}, ["a", "b"])
        >>> len(fig.data)  # per row: image, mask, one heatmap
        6
    """
    masks = _numpy(masks).astype(bool)
    n = len(masks)
    maps = {name: _numpy(h).astype(np.float32) for name, h in heatmaps.items()}
    for name, h in maps.items():
        if h.shape != masks.shape:
            raise ValueError(f"heatmaps[{name!r}] is {h.shape} but masks are {masks.shape}.")
    if len(images) != n or (texts is not None and len(texts) != n):
        raise ValueError(f"{len(images)} images, {n} masks and texts must match in number.")
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
        pixels = _image_array(images[row])
        gray = np.repeat(pixels.mean(-1, keepdims=True), 3, -1).astype(np.uint8)
        panels = [pixels, _overlay(gray, masks[row].astype(np.float32), 0.5, cmap)]
        for h in maps.values():
            values = np.clip(h[row], 0, None)
            span = values.max() - values.min()
            values = (values - values.min()) / span if span > 0 else np.zeros_like(values)
            panels.append(_overlay(gray, values, alpha, cmap))
        for col, panel in enumerate(panels, start=1):
            fig.add_trace(_image_trace(_shrink(panel, max_side)), row=row + 1, col=col)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, height=150 * n + 80, width=150 * (2 + len(maps)) + 60)
    return fig
