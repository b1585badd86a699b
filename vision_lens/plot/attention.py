"""Attention patterns: where one query token of one head looks, drawn over the patch grid (and
the image)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from torch import Tensor

from vision_lens.plot._common import check_number, heat_trace, image_array, image_trace
from vision_lens.utils.checks import check_finite, head_indices, layer_indices

if TYPE_CHECKING:
    from PIL.Image import Image

    from vision_lens.cache import ActivationCache


def _token_grid(cache: ActivationCache | Mapping[str, Tensor], n_keys: int) -> tuple[int, int]:
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


def _query_token(
    query: int | tuple[int, int] | Tensor, grid: tuple[int, int], n_pos: int
) -> tuple[int, str]:
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
    if isinstance(query, Tensor):
        query = query.tolist()
    if (
        isinstance(query, str | bytes)
        or not hasattr(query, "__len__")
        or len(query) != 2
        or any(isinstance(v, bool) or not isinstance(v, int | np.integer) for v in query)
    ):
        raise TypeError(
            f"query must be a token index (int) or a (row, col) patch of two ints, got {query!r}."
        )
    row, col = (int(v) for v in query)
    if not (0 <= row < rows and 0 <= col < cols):
        raise IndexError(f"query patch ({row}, {col}) is outside the {rows} x {cols} patch grid.")
    return n_pos - rows * cols + row * cols + col, f"patch (row {row}, col {col})"


def _cached_pattern(
    cache: ActivationCache | Mapping[str, Tensor], layer: int
) -> tuple[int, str, Tensor]:
    """The layer (made non-negative when the model is known), its hook name and its cached
    ``[batch, head, query, key]`` pattern."""
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise TypeError(f"layer must be an int, got {layer!r}.")
    store = getattr(cache, "cache_dict", cache)
    if not isinstance(store, Mapping):
        raise TypeError(
            "cache must be the ActivationCache of model.run_with_cache(images) or a mapping of "
            f"hook names to tensors, got {type(cache).__name__}."
        )
    cfg = getattr(getattr(cache, "model", None), "cfg", None)
    n_layers = getattr(cfg, "n_layers", None)
    if n_layers is None and layer < 0:
        cached = sorted(k for k in store if str(k).endswith("hook_pattern"))
        raise IndexError(
            f"layer {layer} counts from the end, but this cache has no model to count its "
            f"layers; pass a non-negative layer (it has the patterns of: "
            f"{', '.join(cached) or 'none'})."
        )
    layer = int(layer) if n_layers is None else layer_indices(layer, n_layers)[0]
    name = f"blocks.{layer}.attn.hook_pattern"
    if name not in store:
        cached = sorted(k for k in store if k.endswith("hook_pattern"))
        have = f" It has the patterns of: {', '.join(cached)}." if cached else ""
        raise KeyError(
            f"This cache has no {name!r}.{have} Run model.run_with_cache(images) with no "
            "names_filter, or with names_filter=lambda name: name.endswith('hook_pattern') (or "
            f"names_filter=[{name!r}])."
        )
    pattern = store[name]
    if not isinstance(pattern, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(pattern).__name__}.")
    if not getattr(cache, "has_batch_dim", True):
        pattern = pattern.unsqueeze(0)
    if pattern.dim() != 4:
        raise ValueError(f"{name} should be [batch, head, query, key], got {tuple(pattern.shape)}.")
    return layer, name, pattern


def attention_pattern(
    cache: ActivationCache | Mapping[str, Tensor],
    layer: int,
    head: int | Tensor,
    query: int | tuple[int, int] = 0,
    *,
    image: Image | Tensor | np.ndarray | None = None,
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
        head: Head index (negative counts from the end; a 0-d integer tensor such as
            ``scores.argmax()`` also works).
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
        IndexError: ``layer``, ``head``, ``query`` or ``batch_index`` out of range (or a
            negative ``layer`` with a plain mapping, which has no model to count layers).
        TypeError: ``cache`` is not a cache or mapping, ``layer``, ``head`` or ``batch_index``
            is not an int, or ``query`` is neither a token index nor a ``(row, col)`` patch.
        ValueError: The attention row drawn holds NaN/inf, or ``opacity`` is outside
            ``[0, 1]``.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny(image_size=32)
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
    layer, name, pattern = _cached_pattern(cache, layer)
    n_batch, n_heads, n_query, n_keys = pattern.shape
    if isinstance(head, Tensor) and head.dim() == 0 and not head.is_floating_point():
        head = int(head)
    if isinstance(head, bool) or not isinstance(head, (int, np.integer)):
        raise TypeError(f"head must be an int, got {head!r}.")
    head = head_indices(head, n_heads)[0]
    if isinstance(batch_index, bool) or not isinstance(batch_index, (int, np.integer)):
        raise TypeError(f"batch_index must be an int, got {batch_index!r}.")
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
    opacity = check_number(opacity, "opacity", low=0.0, high=1.0)
    row = pattern[batch_index, head, q_row].detach().float().cpu()
    check_finite(row, f"{name}[{batch_index}, {head}, {q_row}] (the attention row drawn)")
    row = row.numpy()
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
        pixels = image_array(image)
        heat = heat_trace(values, pixels.shape[:2], opacity, signed=False)
        heat.update(zmin=0.0, customdata=cells, hovertemplate=hover, colorbar_title="attention")
        fig.add_trace(image_trace(pixels, hoverinfo="skip"))
        fig.add_trace(heat)
        # patch centres in pixel coordinates, as heat_trace lays the cells out
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
