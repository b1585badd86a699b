"""Figures of component scores (:func:`vision_lens.analysis.component_scores`): one property's
scores over layer x head, and each property's top components as bars."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from vision_lens.plot._common import check_int, check_texts, escape_html, signed_range

if TYPE_CHECKING:
    from vision_lens.analysis.scoring import ComponentScores

__all__ = ["score_heatmap", "top_components_chart"]


def _check_scores(scores: object) -> ComponentScores:
    if not all(hasattr(scores, name) for name in ("table", "properties", "ids", "rank_components")):
        raise TypeError(
            "scores must be a ComponentScores (from vision_lens.analysis.component_scores), got "
            f"{type(scores).__name__}."
        )
    return scores  # type: ignore[return-value]


def _check_property(scores: ComponentScores, prop: object) -> str:
    if not isinstance(prop, str):
        raise TypeError(f"prop must be a property name (a string), got {prop!r:.60}.")
    if prop not in scores.properties:
        raise ValueError(f"No property {prop!r}; properties: {', '.join(scores.properties)}.")
    return prop


def score_heatmap(scores: ComponentScores, prop: str, *, title: str | None = None) -> go.Figure:
    """One property's head scores as a layer x head heatmap.

    Args:
        scores: A :class:`~vision_lens.analysis.scoring.ComponentScores` whose components
            include heads (``L{l}H{h}``; other components are left out).
        prop: The property.
        title: Figure title (default: the property and the scoring method).

    Returns:
        A figure with one ``heatmap`` trace ``[layer, head]`` (rows: the layers that have head
        components; blank cells: heads that are not components), zero-centred.

    Raises:
        TypeError: ``scores`` is not a ``ComponentScores``, ``prop`` not a string.
        ValueError: An unknown property, or no head among the components.

    Example:
        >>> import torch
        >>> from vision_lens.analysis.scoring import ComponentScores
        >>> ids = ["L0H0", "L0H1", "L1H0", "L1H1", "L1_mlp"]
        >>> s = ComponentScores(torch.rand(1, 5, dtype=torch.float64), ["color"], ids,
        ...                     "correlation", [3])
        >>> score_heatmap(s, "color").data[0].z.shape
        (2, 2)
    """
    scores = _check_scores(scores)
    prop = _check_property(scores, prop)
    row = scores.table[scores.properties.index(prop)].tolist()
    heads = [
        (cid.layer, cid.head, v)
        for cid, v in zip(scores.ids, row, strict=True)
        if getattr(cid, "kind", None) == "head"
    ]
    if not heads:
        raise ValueError(
            "These scores have no head components (L{l}H{h}): build the components with "
            "head_layers= (decompose_components) before scoring, or use top_components_chart."
        )
    layers = sorted({layer for layer, _, _ in heads})
    n_heads = max(head for _, head, _ in heads) + 1
    grid = np.full((len(layers), n_heads), np.nan)
    for layer, head, value in heads:
        grid[layers.index(layer), head] = value
    zmin, zmax = signed_range(grid[np.isfinite(grid)])
    fig = go.Figure(
        go.Heatmap(
            z=grid,
            x=[f"H{h}" for h in range(n_heads)],
            y=[f"L{layer}" for layer in layers],
            colorscale="RdBu_r",
            zmin=zmin,
            zmax=zmax,
            zmid=0.0,
            hovertemplate="%{y}%{x}: %{z:.3f}<extra></extra>",
        )
    )
    method = getattr(scores, "method", "")
    fig.update_layout(
        title=title or f"{escape_html(prop)}: component scores ({method})",
        xaxis_title="head",
        yaxis_title="layer",
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return fig


def top_components_chart(
    scores: ComponentScores,
    properties: Sequence[str] | None = None,
    *,
    top: int = 10,
    title: str | None = None,
) -> go.Figure:
    """Each property's ``top`` components by score, as horizontal bars (one panel each).

    Args:
        scores: A :class:`~vision_lens.analysis.scoring.ComponentScores`.
        properties: The properties to show (default all), one panel each.
        top: Components per property.
        title: Figure title.

    Returns:
        A figure with one ``bar`` trace per property, best component on top.

    Raises:
        TypeError: ``scores`` is not a ``ComponentScores``, ``properties`` not a list,
            ``top`` not an int.
        ValueError: An unknown property, no properties, ``top`` < 1.

    Example:
        >>> import torch
        >>> from vision_lens.analysis.scoring import ComponentScores
        >>> s = ComponentScores(torch.rand(2, 4, dtype=torch.float64), ["color", "shape"],
        ...                     ["L0H0", "L0H1", "L1_mlp", "rest"], "correlation", [3, 2])
        >>> fig = top_components_chart(s, top=3)
        >>> len(fig.data), len(fig.data[0].y)
        (2, 3)
    """
    scores = _check_scores(scores)
    props = scores.properties if properties is None else check_texts(properties, "properties")
    if not props:
        raise ValueError("properties is empty: name at least one property.")
    props = [_check_property(scores, p) for p in props]
    top = check_int(top, "top")
    fig = make_subplots(
        rows=1,
        cols=len(props),
        subplot_titles=[escape_html(p) for p in props],
        horizontal_spacing=min(0.12, 0.5 / len(props)),
    )
    for col, prop in enumerate(props, start=1):
        ranked = scores.rank_components(prop, top=top)
        fig.add_trace(
            go.Bar(
                x=[v for _, v in ranked][::-1],
                y=[str(c) for c, _ in ranked][::-1],
                orientation="h",
                name=prop,
                hovertemplate="%{y}: %{x:.3f}<extra>" + escape_html(prop) + "</extra>",
            ),
            row=1,
            col=col,
        )
    method = getattr(scores, "method", "")
    fig.update_layout(title=title or f"Top components per property ({method})", showlegend=False)
    fig.update_yaxes(type="category")
    return fig
