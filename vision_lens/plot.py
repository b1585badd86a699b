"""Plotly figures of layers, heads, tokens and attention. Every figure function returns a
``plotly.graph_objects.Figure``.

Figures display themselves in Jupyter, VS Code and Colab (the last expression of a cell, or
``fig.show()``). :func:`set_renderer` picks how (``"notebook"``, ``"vscode"``, ``"colab"``,
``"browser"``, ``"png"``, ...), :func:`show` displays one figure interactively or as a static PNG,
and :func:`to_png` writes a PNG with kaleido (it needs a Chrome/Chromium: see
:func:`find_browser`). ``fig.write_html(path)`` saves an interactive, self-contained page.

Example:
    >>> import vision_lens as vl
    >>> fig = vl.plot.head_grid(np.random.rand(2, 4), labels=[["a"] * 4, ["b"] * 4])
    >>> fig.data[0].type
    'heatmap'
"""

from __future__ import annotations

import asyncio
import base64
import html
import io
import math
import os
import re
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import torch
import torch.nn.functional as F
from plotly.subplots import make_subplots
from torch import Tensor

__all__ = [
    "attention_pattern",
    "find_browser",
    "head_grid",
    "layer_contributions",
    "line_chart",
    "retrieval_grid",
    "segmentation_examples",
    "set_renderer",
    "show",
    "textspan_table",
    "to_png",
    "token_heatmap",
    "token_heatmap_grid",
    "upsample_patch_scores",
]


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


def _escape(text: Any) -> str:
    """Text made safe for plotly's HTML-like hover labels and table cells."""
    return html.escape(str(text), quote=False)


def _is_textspan_result(obj: Any) -> bool:
    return all(hasattr(obj, name) for name in ("indices", "texts", "heads", "explained_fraction"))


def _textspan_hover(result: Any, row: int, top: int | None) -> list[str]:
    indices = result.indices[row, :top].tolist()
    lines = [result.texts[i] if result.texts is not None else f"text #{i}" for i in indices]
    fraction = float(result.explained_fraction[row, -1])
    return [*lines, f"({fraction:.0%} of variance with m={result.m})"]


def _head_hover(
    labels: Any, shape: tuple[int, int], layer_ids: list[int], top: int | None
) -> list[list[str]]:
    """``[layer][head]`` hover strings from any of the label forms :func:`head_grid` takes."""
    n_layers, n_heads = shape
    cells: list[list[list[str] | None]] = [[None] * n_heads for _ in range(n_layers)]

    def place(layer: int, head: int, texts: Any, key: Any) -> None:
        row = layer_ids.index(layer) if layer in layer_ids else None
        if row is None and -n_layers <= layer < 0 and layer_ids == list(range(n_layers)):
            row = layer % n_layers
        if row is None or not 0 <= head < n_heads:
            raise ValueError(
                f"labels has an entry for {key!r} (layer {layer}, head {head}), which is not in "
                f"the grid: layers {layer_ids}, heads 0..{n_heads - 1}."
            )
        if isinstance(texts, str):
            cells[row][head] = [texts]
        else:
            cells[row][head] = [str(t) for t in list(texts)[:top]]

    if _is_textspan_result(labels):
        heads = labels.heads
        if heads is None:
            if labels.n_heads != n_layers * n_heads:
                raise ValueError(
                    f"This TextSpanResult has {labels.n_heads} unlabelled rows but the grid has "
                    f"{n_layers} x {n_heads} heads: make it with textspan_model(), or pass "
                    "heads=[(layer, head), ...] to textspan()."
                )
            heads = [(layer, head) for layer in layer_ids for head in range(n_heads)]
        for row, (layer, head) in enumerate(heads):
            place(int(layer), int(head), _textspan_hover(labels, row, top), (layer, head))
    elif isinstance(labels, Mapping):
        entries = labels.get("heads") if "heads" in labels else None
        if isinstance(entries, list):  # TextSpanResult.to_dict()
            for entry in entries:
                if "layer" not in entry or "texts" not in entry:
                    raise ValueError(
                        "labels looks like TextSpanResult.to_dict() but its heads lack 'layer', "
                        "'head' or 'texts' (was the result made with texts and head labels?)."
                    )
                place(int(entry["layer"]), int(entry["head"]), entry["texts"], entry["label"])
        else:
            for key, texts in labels.items():
                if isinstance(key, str):
                    match = re.fullmatch(r"L(-?\d+)H(\d+)", key)
                    if match is None:
                        raise ValueError(
                            f"labels key {key!r} is not (layer, head) or 'L{{layer}}H{{head}}'."
                        )
                    layer, head = int(match[1]), int(match[2])
                else:
                    try:
                        layer, head = (int(v) for v in key)
                    except (TypeError, ValueError):
                        raise ValueError(
                            f"labels key {key!r} is not (layer, head) or 'L{{layer}}H{{head}}'."
                        ) from None
                place(layer, head, texts, key)
    else:
        rows = list(labels)
        if len(rows) != n_layers or any(len(row) != n_heads for row in rows):
            got = [len(row) for row in rows]
            raise ValueError(
                f"labels must be [layer][head] lists matching scores ({n_layers} x {n_heads}); "
                f"got {len(rows)} rows of lengths {got}."
            )
        for row, entries in enumerate(rows):
            for head, texts in enumerate(entries):
                if texts is not None:
                    cells[row][head] = (
                        [texts] if isinstance(texts, str) else [str(t) for t in list(texts)[:top]]
                    )
    return [["<br>".join(map(_escape, cell or [])) for cell in row] for row in cells]


def head_grid(
    scores: Any,
    labels: Any | None = None,
    title: str | None = None,
    layers: Sequence[int] | None = None,
    *,
    top: int | None = 10,
    signed: bool | None = None,
) -> go.Figure:
    """A layer x head heatmap of any per-head score, with each head's texts on hover.

    Args:
        scores: ``[layer, head]`` scores, e.g. each head's mean direct-effect norm
            (``cache.decompose_heads().norm(dim=-1).mean(0)``) or an ablation's accuracy drop.
        labels: Optional hover texts per head, any of: a
            :class:`~vision_lens.analysis.textspan.TextSpanResult` (each head's TextSpan texts, in
            the order chosen, and the variance they explain; unlabelled rows are read as
            ``layer``-major over the whole grid), its ``to_dict()``, a mapping
            ``{(layer, head): texts}`` (or ``{"L{layer}H{head}": texts}``), or ``[layer][head]``
            nested lists; ``texts`` is a string or a list of strings. Heads without an entry get
            no text.
        title: Figure title.
        layers: Layer indices of the rows of ``scores`` (default ``0..n_layers-1``), e.g.
            ``[8, 9, 10, 11]`` for the scores of the last four layers of a 12-layer model.
        top: Show at most this many texts per head (``None``: all).
        signed: Diverging colour scale centred at zero (default: when scores take both signs).

    Returns:
        A figure with one ``heatmap`` trace, ``z`` equal to ``scores``.

    Example:
        >>> fig = head_grid(np.arange(8.0).reshape(2, 4), labels={(1, 2): ["red", "blue"]})
        >>> fig.data[0].z.shape, fig.data[0].text[1][2]
        ((2, 4), 'red<br>blue')
        >>> head_grid(np.random.randn(2, 4), signed=True).data[0].zmid
        0.0
    """
    values = _numpy(scores).astype(np.float64)
    if values.ndim != 2:
        raise ValueError(f"scores must be [layer, head], got shape {values.shape}.")
    layer_ids = list(range(values.shape[0])) if layers is None else [int(v) for v in layers]
    if len(layer_ids) != values.shape[0]:
        raise ValueError(f"{len(layer_ids)} layers given for {values.shape[0]} rows of scores.")
    hover = None if labels is None else _head_hover(labels, values.shape, layer_ids, top)
    signed = bool(values.min() < 0 < values.max()) if signed is None else signed
    zmin, zmax = _signed_range(values) if signed else (None, None)
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=[f"H{h}" for h in range(values.shape[1])],
            y=[f"L{layer}" for layer in layer_ids],
            text=hover,
            hovertemplate="%{y} %{x}: %{z:.3g}"
            + ("<br>%{text}" if hover else "")
            + "<extra></extra>",
            colorscale="RdBu_r" if signed else "Viridis",
            zmin=zmin,
            zmax=zmax,
            zmid=0.0 if signed else None,
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


# ---------------------------------------------------------------------- attention patterns
def _token_grid(cache: Any, n_keys: int) -> tuple[int, int]:
    """Patch grid ``(rows, cols)`` of the model behind ``cache`` (square when unknown)."""
    cfg = getattr(getattr(cache, "model", None), "cfg", None)
    grid = getattr(cfg, "grid_size", None)
    if grid is not None and grid[0] * grid[1] == n_keys - getattr(cfg, "n_prefix", 1):
        return int(grid[0]), int(grid[1])
    side = int(round((n_keys - 1) ** 0.5))
    if side * side != n_keys - 1:
        raise ValueError(
            f"Cannot lay {n_keys - 1} patch tokens out on a grid: the cache has no model config "
            "with grid_size and the count is not square."
        )
    return side, side


def _query_token(query: Any, grid: tuple[int, int], n_pos: int) -> tuple[int, str]:
    """Token index and a readable name of ``query``: an int token index or a ``(row, col)``."""
    rows, cols = grid
    if isinstance(query, bool):
        raise TypeError(f"query must be a token index or a (row, col) patch, got {query!r}.")
    if isinstance(query, (int, np.integer)) or (isinstance(query, Tensor) and query.dim() == 0):
        index = int(query)
        if not -n_pos <= index < n_pos:
            raise IndexError(
                f"query token {index} is out of range: there are {n_pos} tokens (0 = class "
                f"token, 1..{n_pos - 1} = patches row by row), or pass a (row, col) patch."
            )
        index %= n_pos
        n_prefix = n_pos - rows * cols
        if index < n_prefix:
            return index, "the class token" if index == 0 else f"prefix token {index}"
        row, col = divmod(index - n_prefix, cols)
        return index, f"token {index} (patch row {row}, col {col})"
    try:
        row, col = (int(v) for v in query)
    except (TypeError, ValueError):
        raise TypeError(
            f"query must be a token index (int) or a (row, col) patch, got {query!r}."
        ) from None
    if not (0 <= row < rows and 0 <= col < cols):
        raise IndexError(f"query patch ({row}, {col}) is outside the {rows} x {cols} patch grid.")
    return n_pos - rows * cols + row * cols + col, f"patch (row {row}, col {col})"


def attention_pattern(
    cache: Any,
    layer: int,
    head: int,
    query: int | tuple[int, int] = 0,
    *,
    image: Any | None = None,
    batch_index: int = 0,
    title: str | None = None,
    opacity: float = 0.6,
) -> go.Figure:
    """Where one query token looks: a head's attention over the patch grid, drawn on the image.

    Reads ``blocks.{layer}.attn.hook_pattern`` (``[batch, head, query_pos, key_pos]``, class
    token first, then the patches row by row) from a cache of
    :meth:`vision_lens.HookedViT.run_with_cache`. The heatmap shows the query's attention to
    each patch token; its attention to the class token is given in the title (it is not a place
    in the image). A cross marks the query patch.

    Args:
        cache: The :class:`vision_lens.ActivationCache` of ``model.run_with_cache(images)``
            (with that layer's pattern cached), or a mapping of hook names to tensors.
        layer: Layer index (negative counts from the end).
        head: Head index.
        query: Query token: ``0`` (the class token, the default), a token index
            (``1 + row * n_cols + col`` for a patch) or a ``(row, col)`` patch.
        image: The image to draw under the pattern (PIL image, uint8 ``[H, W, 3]`` array or
            ``[3, H, W]`` tensor, e.g. the preprocessed input itself). Without it the pattern is
            drawn alone, one cell per patch.
        batch_index: Which image of the batch.
        title: Figure title (default: head, query and the class-token share).
        opacity: Opacity of the heatmap over the image.

    Returns:
        A figure with a ``heatmap`` trace whose ``z`` is the ``[rows, cols]`` attention of the
        query to the patches (after an ``image`` trace when ``image`` is given).

    Raises:
        KeyError: The cache lacks the layer's ``hook_pattern`` (run ``run_with_cache`` with it).
        IndexError: ``layer``, ``head``, ``query`` or ``batch_index`` out of range.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, d_embed=16,
        ...                          image_size=32, patch_size=8)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> images = torch.randn(2, 3, 32, 32)
        >>> _, cache = model.run_with_cache(images, names_filter=lambda n: "pattern" in n)
        >>> fig = attention_pattern(cache, layer=1, head=2, query=(0, 3), image=images[1],
        ...                         batch_index=1)
        >>> [trace.type for trace in fig.data]
        ['image', 'heatmap', 'scatter']
        >>> row = cache["blocks.1.attn.hook_pattern"][1, 2, 1 + 3, 1:]
        >>> np.allclose(fig.data[1].z, row.reshape(4, 4).numpy())
        True
    """
    cfg = getattr(getattr(cache, "model", None), "cfg", None)
    n_layers = getattr(cfg, "n_layers", None)
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise TypeError(f"layer must be an int, got {layer!r}.")
    layer = int(layer)
    if n_layers is not None:
        if not -n_layers <= layer < n_layers:
            raise IndexError(
                f"Layer {layer} does not exist: the model has {n_layers} layers "
                f"(valid indices {-n_layers}..{n_layers - 1})."
            )
        layer %= n_layers
    name = f"blocks.{layer}.attn.hook_pattern"
    store = getattr(cache, "cache_dict", cache)
    if name not in store:
        cached = sorted(k for k in store if k.endswith("hook_pattern"))
        have = f" It has the patterns of: {', '.join(cached)}." if cached else ""
        raise KeyError(
            f"This cache has no {name!r}.{have} Run model.run_with_cache(images) with no "
            "names_filter, or with names_filter=lambda name: name.endswith('hook_pattern') (or "
            f"names_filter=[{name!r}])."
        )
    pattern = store[name]
    if not getattr(cache, "has_batch_dim", True):
        pattern = pattern.unsqueeze(0)
    if pattern.dim() != 4:
        raise ValueError(f"{name} should be [batch, head, query, key], got {tuple(pattern.shape)}.")
    n_batch, n_heads, n_query, n_keys = pattern.shape
    if isinstance(head, bool) or not -n_heads <= int(head) < n_heads:
        raise IndexError(f"Head {head} does not exist: layer {layer} has {n_heads} heads.")
    head = int(head) % n_heads
    if not -n_batch <= int(batch_index) < n_batch:
        raise IndexError(f"batch_index {batch_index} is out of range for {n_batch} images.")
    batch_index = int(batch_index) % n_batch
    grid = _token_grid(cache, n_keys)
    q, query_name = _query_token(query, grid, n_keys)
    if n_query != n_keys:
        if n_query == 1 and q == 0:
            pass  # a decomposition cache: only the class-token row is stored
        elif n_query == 1:
            raise ValueError(
                f"This cache keeps only the class-token query row of {name} (made by "
                "run_with_decomposition_cache); run model.run_with_cache(images) for other queries."
            )
        else:
            raise ValueError(f"{name} has {n_query} query rows for {n_keys} keys; expected equal.")
        q_row = 0
    else:
        q_row = q
    row = pattern[batch_index, head, q_row].detach().float().cpu().numpy()
    n_prefix = n_keys - grid[0] * grid[1]  # class, distillation and register tokens
    values = row[n_prefix:].reshape(grid)
    if title is None:
        title = (
            f"L{layer}H{head}: attention from {query_name}, image {batch_index}"
            f"<br><sup>{row[:n_prefix].sum():.1%} of it goes to the prefix tokens</sup>"
        )
    fig = go.Figure()
    hover = "patch row %{customdata[0]}, col %{customdata[1]}<br>attention %{z:.3g}<extra></extra>"
    cells = np.stack(np.meshgrid(range(grid[0]), range(grid[1]), indexing="ij"), -1)
    if image is not None:
        pixels = _image_array(image)
        heat = _heat_trace(values, pixels.shape[:2], opacity, signed=False)
        heat.update(zmin=0.0, customdata=cells, hovertemplate=hover, colorbar_title="attention")
        fig.add_trace(_image_trace(pixels, hoverinfo="skip"))
        fig.add_trace(heat)
        # patch centres in pixel coordinates, as _heat_trace lays the cells out
        dy, dx = pixels.shape[0] / grid[0], pixels.shape[1] / grid[1]
        y0, x0 = dy / 2 - 0.5, dx / 2 - 0.5
    else:
        fig.add_trace(
            go.Heatmap(
                z=values,
                zmin=0.0,
                colorscale="Viridis",
                customdata=cells,
                hovertemplate=hover,
                colorbar_title="attention",
            )
        )
        fig.update_yaxes(autorange="reversed", scaleanchor="x")
        dy = dx = 1.0
        y0 = x0 = 0.0
    if q > 0:  # mark the query patch
        row_q, col_q = divmod(q - 1, grid[1])
        fig.add_trace(
            go.Scatter(
                x=[x0 + col_q * dx],
                y=[y0 + row_q * dy],
                mode="markers",
                marker={"symbol": "x", "size": 12, "color": "red"},
                name="query",
                hoverinfo="name",
                showlegend=False,
            )
        )
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False)
    return fig


# ---------------------------------------------------------------------- TextSpan
def _head_rows(result: Any, heads: Any) -> list[int]:
    if heads is None:
        return list(range(result.n_heads))
    if isinstance(heads, (str, int, tuple)):
        heads = [heads]
    rows = []
    for key in heads:
        if isinstance(key, str):
            match = re.fullmatch(r"L(-?\d+)H(\d+)", key)
            if match is None:
                raise ValueError(
                    f"head {key!r} is not (layer, head), a row or 'L{{layer}}H{{head}}'."
                )
            rows.append(result.head_index(int(match[1]), int(match[2])))
        elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            rows.append(result.head_index(int(key)))
        else:
            layer, head = key
            rows.append(result.head_index(int(layer), int(head)))
    return rows


def textspan_table(
    result: Any,
    heads: Any | None = None,
    *,
    top: int | None = None,
    title: str | None = None,
    height: int | None = None,
) -> go.Figure:
    """A table of TextSpan results: per head, the chosen texts in order and the variance
    explained after each.

    Args:
        result: A :class:`~vision_lens.analysis.textspan.TextSpanResult` (from
            :func:`~vision_lens.textspan_model` it knows each row's layer and head).
        heads: Which heads: ``(layer, head)`` pairs, ``"L{layer}H{head}"`` strings or row
            indices, alone or in a list (default: all, in the result's order).
        top: At most this many texts per head (default: all ``m``).
        title: Figure title.
        height: Figure height in pixels (default: from the number of rows, at most 900; the
            table scrolls).

    Returns:
        A figure with one ``table`` trace, columns ``head``, ``#``, ``text``,
        ``variance explained`` (cumulative, after that text) and ``fraction of total``.

    Raises:
        KeyError: A requested head is not in the result.

    Example:
        >>> from vision_lens import textspan
        >>> texts = torch.eye(6, 8)
        >>> outputs = torch.randn(2, 30, 2) @ texts[[0, 3]] * torch.tensor([[[1.0]], [[2.0]]])
        >>> result = textspan(outputs, texts, m=2, rank=None, heads=[(3, 0), (3, 1)],
        ...                   texts=["red", "blue", "square", "circle", "big", "small"])
        >>> table = textspan_table(result, heads=[(3, 1)]).data[0]
        >>> table.cells.values[0], sorted(table.cells.values[2])
        (['L3H1', 'L3H1'], ['circle', 'red'])
        >>> table.cells.values[4][-1]
        '100.0%'
    """
    if not _is_textspan_result(result):
        raise TypeError(
            f"textspan_table takes a TextSpanResult (from vision_lens.textspan or textspan_model), "
            f"got {type(result).__name__}."
        )
    rows = _head_rows(result, heads)
    if top is not None and top < 1:
        raise ValueError(f"top must be >= 1 (or None for all texts), got {top}.")
    fraction = result.explained_fraction
    columns: list[list[Any]] = [[], [], [], [], []]
    fills: list[str] = []
    for n, row in enumerate(rows):
        indices = result.indices[row, :top].tolist()
        for k, index in enumerate(indices):
            text = result.texts[index] if result.texts is not None else f"text #{index}"
            columns[0].append(result.label(row))
            columns[1].append(k + 1)
            columns[2].append(_escape(text))
            columns[3].append(f"{float(result.explained_variance[row, k]):.4g}")
            columns[4].append(f"{float(fraction[row, k]):.1%}")
            fills.append("#f2f2f2" if n % 2 else "white")
    n_rows = len(columns[0])
    header = ["head", "#", "text", "variance explained", "fraction of total"]
    fig = go.Figure(
        go.Table(
            columnwidth=[60, 30, 360, 110, 100],
            header={"values": header, "fill_color": "#dde4ee", "align": "left", "height": 28},
            cells={
                "values": columns,
                "fill_color": [fills] * len(header),
                "align": ["left", "right", "left", "right", "right"],
                "height": 24,
            },
        )
    )
    if height is None:
        height = min(900, 130 + 24 * n_rows)
    m_info = f" (m={result.m}, first {top})" if top is not None and top < result.m else ""
    fig.update_layout(
        title=title if title is not None else f"TextSpan texts per head{m_info}",
        height=height,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


# ---------------------------------------------------------------------- retrieval
def retrieval_grid(
    images: Any,
    scores: Any | None = None,
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

    Example:
        >>> from vision_lens.analysis.retrieval import image_neighbors
        >>> images = torch.rand(6, 3, 16, 16)
        >>> found = image_neighbors(images.flatten(1), queries=[0], k=3)
        >>> index = [0, *found.indices[0].tolist()]
        >>> fig = retrieval_grid(images[index], scores=[None, *found.scores[0].tolist()],
        ...                      titles=["query"] + [f"#{i}" for i in index[1:]], ncols=2)
        >>> len(fig.data), fig.layout.annotations[0].text
        (4, 'query')
    """
    n = len(images)
    if n == 0:
        raise ValueError("retrieval_grid needs at least one image.")
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}.")
    if titles is not None and len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} images.")
    values: list[float | None] = [None] * n
    if scores is not None:
        flat = _numpy(scores) if not isinstance(scores, (list, tuple)) else scores
        if len(flat) != n:
            raise ValueError(f"{len(flat)} scores for {n} images.")
        values = [None if s is None or np.isnan(float(s)) else float(s) for s in flat]
    labels = []
    for i in range(n):
        parts = [_escape(titles[i])] if titles is not None else []
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
        pixels = _shrink(_image_array(images[i]), max_side)
        fig.add_trace(
            _image_trace(pixels, hoverinfo="skip", name=labels[i] or f"image {i}"),
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


# ---------------------------------------------------------------------- display
#: Executable names searched on ``PATH`` for static export, in order.
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
#: Places a Chrome/Chromium is often installed outside ``PATH``.
BROWSER_PATHS = (
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/snap/bin/chromium",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
)
_NO_BROWSER = (
    "Static export (PNG) renders figures in a headless Chrome/Chromium via kaleido, and none was "
    "found. Fix it by one of: installing Chromium (Debian/Ubuntu: `apt-get install chromium`), "
    "running `plotly_get_chrome` (or `kaleido_get_chrome`) to download a Chrome for kaleido, or "
    "setting the BROWSER_PATH environment variable (or to_png's browser_path=) to an existing "
    "Chrome/Chromium executable."
)


def find_browser() -> str | None:
    """The Chrome/Chromium executable static export will use, or ``None``.

    Looked up in this order: the ``BROWSER_PATH`` environment variable (also honoured by
    kaleido/choreographer), the names in :data:`BROWSER_NAMES` on ``PATH`` (Debian's
    ``/usr/bin/chromium`` is found here), the usual install locations in :data:`BROWSER_PATHS`,
    then a Chrome downloaded by ``plotly_get_chrome`` / ``kaleido_get_chrome``.

    Example:
        >>> path = find_browser()
        >>> path is None or os.path.isfile(path)
        True
    """
    env = os.environ.get("BROWSER_PATH")
    if env:
        return env if os.path.isfile(env) else None
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    for path in BROWSER_PATHS:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    try:  # a Chrome that kaleido_get_chrome downloaded next to choreographer
        from choreographer.browsers.chromium import Chromium

        found = Chromium.find_browser()
    except Exception:  # noqa: BLE001 (choreographer missing or changed: nothing found)
        return None
    return str(found) if found else None


def _render_with_kaleido(figure: dict, opts: dict, browser: str, timeout: float) -> bytes:
    """Render with a fresh kaleido browser in a worker thread (so it also works under a running
    event loop, as in Jupyter), killing the browser if it does not finish within ``timeout``."""
    import kaleido

    kopts: dict[str, Any] = {"path": browser, "timeout": timeout}
    # plotly.js from plotly.py's own bundle (offline); no MathJax (kaleido fetches it from a CDN
    # by default, which stalls without network) unless plotly.io.defaults asks for it.
    kopts["mathjax"] = pio.defaults.mathjax or False
    if pio.defaults.plotlyjs:
        kopts["plotlyjs"] = pio.defaults.plotlyjs
    state: dict[str, Any] = {}

    async def render() -> bytes:
        state["browser"] = browser_process = kaleido.Kaleido(**kopts)
        async with browser_process as k:
            return await k.calc_fig(figure, opts=opts)

    def work() -> None:
        try:
            state["png"] = asyncio.run(asyncio.wait_for(render(), timeout))
        except BaseException as error:  # noqa: BLE001 (re-raised in the caller's thread)
            state["error"] = error

    thread = threading.Thread(target=work, name="vision_lens.plot.to_png", daemon=True)
    thread.start()
    thread.join(timeout + 15)  # wait_for's cancellation closes the browser; allow for that
    if thread.is_alive() or isinstance(state.get("error"), (TimeoutError, asyncio.TimeoutError)):
        process = getattr(state.get("browser"), "subprocess", None)
        if process is not None and process.poll() is None:
            from choreographer.utils._kill import kill

            kill(process)  # the browser this call started, and its helper processes
        raise RuntimeError(
            f"Rendering the PNG with {browser} did not finish within {timeout:g} s: the browser "
            f"did not start or did not answer. Check that it runs (`{browser} --headless "
            "--no-sandbox --dump-dom about:blank`), or pass a larger timeout= on a busy machine."
        )
    if "error" in state:
        raise state["error"]
    return state["png"]


def to_png(
    fig: go.Figure,
    path: str | os.PathLike | None = None,
    *,
    width: int | None = None,
    height: int | None = None,
    scale: float = 1.0,
    browser_path: str | os.PathLike | None = None,
    timeout: float = 120,
) -> bytes:
    """Render a figure to PNG bytes (and write them to ``path``), with kaleido.

    kaleido >= 1 drives a headless Chrome/Chromium; the executable is ``browser_path`` or the one
    :func:`find_browser` finds (``BROWSER_PATH``, then ``chromium``/``google-chrome`` on
    ``PATH``, e.g. Debian's ``/usr/bin/chromium``). Each call starts the browser (1 to 3 s) and
    closes it. No network is needed.

    Args:
        fig: The figure.
        path: Where to write the PNG (optional).
        width: Width in layout pixels (default: the figure's, else 700).
        height: Height in layout pixels (default: the figure's, else 500).
        scale: Pixel density: ``2`` gives an image twice as wide and high.
        browser_path: Chrome/Chromium executable (default: :func:`find_browser`).
        timeout: Seconds allowed for starting the browser and rendering; the browser is
            stopped after that.

    Returns:
        The PNG bytes.

    Raises:
        ImportError: kaleido is not installed (``pip install "kaleido>=1"``).
        RuntimeError: No Chrome/Chromium was found, it failed to start or it did not finish in
            time; the message says how to fix it.

    Example:
        >>> png = to_png(head_grid(np.random.rand(2, 3)), "heads.png")  # doctest: +SKIP
        >>> png[:8]  # doctest: +SKIP
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    try:
        import kaleido  # noqa: F401
        from choreographer.errors import BrowserFailedError, ChromeNotFoundError
    except ImportError as error:
        raise ImportError(
            'Static export needs kaleido >= 1: pip install "kaleido>=1" (it also needs a '
            "Chrome/Chromium; see vision_lens.plot.find_browser)."
        ) from error
    browser = str(browser_path) if browser_path is not None else find_browser()
    if browser is None or not os.path.isfile(browser):
        where = f"No browser at {browser!r}. " if browser is not None else ""
        raise RuntimeError(where + _NO_BROWSER)
    layout = fig.layout
    opts = {
        "format": "png",
        "width": width or layout.width or 700,
        "height": height or layout.height or 500,
        "scale": scale,
    }
    try:
        data = _render_with_kaleido(fig.to_dict(), opts, browser, timeout)
    except (ChromeNotFoundError, BrowserFailedError) as error:
        raise RuntimeError(
            f"kaleido could not start the browser {browser!r} ({type(error).__name__}). "
            + _NO_BROWSER
        ) from error
    if path is not None:
        Path(path).write_bytes(data)
    return data


def _check_renderer(name: str) -> None:
    available = list(pio.renderers)
    unknown = [part for part in name.split("+") if part not in available]
    if not name or unknown:
        raise ValueError(
            f"Unknown plotly renderer {name!r}. Available: {', '.join(available)}. Common "
            "choices: 'notebook' (classic Jupyter), 'jupyterlab', 'vscode', 'colab', 'browser' "
            "(opens a tab), 'png' (static image)."
        )


def set_renderer(name: str) -> str:
    """Set how ``fig.show()`` and :func:`show` display figures; returns the previous setting.

    A thin wrapper over ``plotly.io.renderers.default`` that checks the name. plotly guesses
    well in most places (JupyterLab, VS Code, Colab); set it when figures come out blank or
    you want something else:

    * ``"notebook"``: classic Jupyter Notebook (plotly.js embedded in the notebook, works
      offline; ``"notebook_connected"`` loads it from a CDN instead, smaller files).
    * ``"jupyterlab"`` / ``"vscode"`` / ``"colab"`` / ``"kaggle"``: those front ends.
    * ``"browser"``: open each figure in a new tab of the default web browser (from scripts).
    * ``"png"`` (also ``"svg"``, ``"jpeg"``, ``"pdf"``): a static image rendered by kaleido in a
      headless Chrome/Chromium (see :func:`to_png`); survives notebook exporters and GitHub
      previews that drop JavaScript. Combine with ``+``: ``"notebook+png"``.

    Args:
        name: A renderer name (see ``list(plotly.io.renderers)``), or several joined by ``+``.

    Returns:
        The previous default, to restore it later.

    Raises:
        ValueError: Unknown renderer (the message lists the available ones).

    Example:
        >>> previous = set_renderer("json")
        >>> import plotly.io as pio
        >>> pio.renderers.default
        'json'
        >>> _ = set_renderer(previous or "notebook")
    """
    _check_renderer(name)
    previous = pio.renderers.default
    pio.renderers.default = name
    return previous


def show(
    fig: go.Figure,
    renderer: str | None = None,
    static: bool = False,
    **png_kwargs: Any,
) -> Any:
    """Display a figure, interactively or as a static PNG.

    Args:
        fig: The figure.
        renderer: A plotly renderer for this call only (see :func:`set_renderer` for the
            choices; default: ``plotly.io.renderers.default``). ``"png"`` means ``static=True``.
        static: Show a PNG (``IPython.display.Image``, rendered by :func:`to_png`) instead of
            the interactive JavaScript figure: for notebooks viewed where JavaScript does not run
            (GitHub, nbviewer, some exporters), or to keep notebooks small.
        **png_kwargs: ``width``, ``height``, ``scale``, ``browser_path`` of :func:`to_png` (for
            ``static=True``).

    Returns:
        The ``IPython.display.Image`` shown when static, else ``None``.

    Raises:
        ValueError: Unknown renderer.
        ImportError: ``static=True`` without IPython or kaleido installed.
        RuntimeError: ``static=True`` without a Chrome/Chromium (see :func:`to_png`).

    Example:
        >>> fig = head_grid(np.random.rand(2, 3))
        >>> show(fig)  # interactive, with the default renderer  # doctest: +SKIP
        >>> show(fig, static=True, scale=2)  # a PNG in the notebook  # doctest: +SKIP
    """
    if renderer is not None:
        _check_renderer(renderer)
    if static or renderer == "png":
        try:
            from IPython.display import Image, display
        except ImportError as error:
            raise ImportError("show(static=True) needs IPython: pip install ipython.") from error
        image = Image(data=to_png(fig, **png_kwargs), format="png")
        display(image)
        return image
    if png_kwargs:
        raise TypeError(f"{sorted(png_kwargs)} only apply with static=True.")
    fig.show(renderer=renderer)
    return None
