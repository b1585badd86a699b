"""Plain charts of summary numbers: direct effects per component as bars, named curves as
lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
import torch
import torch.nn.functional as F

from vision_lens.plot._common import as_numpy

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from torch import Tensor


def layer_contributions(
    terms: Tensor | ArrayLike,
    labels: Sequence[str],
    embed: Tensor | ArrayLike | None = None,
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

    Returns:
        A figure with a ``bar`` trace of mean norms, and one of mean projections with ``embed``.

    Example:
        >>> import torch
        >>> t = torch.randn(3, 4, 8)
        >>> len(layer_contributions(t, ["embed", "L0_attn", "bias"], t.sum(0)).data)
        2
    """
    values = torch.as_tensor(as_numpy(terms))
    fig = go.Figure(go.Bar(x=list(labels), y=values.norm(dim=-1).mean(1).numpy(), name="mean norm"))
    if embed is not None:
        unit = F.normalize(torch.as_tensor(as_numpy(embed)), dim=-1)
        projection = (values * unit[None]).sum(-1).mean(1).numpy()
        fig.add_trace(go.Bar(x=list(labels), y=projection, name="mean projection on embedding"))
    fig.update_layout(title=title, barmode="group", xaxis_title="component", yaxis_title="size")
    return fig


def line_chart(
    curves: Mapping[str, Sequence[float]],
    x: Sequence[Any],  # anything plotly puts on an axis: numbers, strings, dates
    title: str | None = None,
    xaxis_title: str | None = None,
    yaxis_title: str | None = None,
) -> go.Figure:
    """Several named curves over a shared x axis (e.g. accuracy vs ablated layers).

    Args:
        curves: Curve name -> its y values, one per ``x``.
        x: The shared x values (numbers, or strings for a categorical axis).
        title: Figure title.
        xaxis_title: Title of the x axis.
        yaxis_title: Title of the y axis.

    Returns:
        A figure with one ``scatter`` trace (lines and markers) per curve.

    Example:
        >>> len(line_chart({"a": [1, 2], "b": [2, 1]}, x=[0, 1]).data)
        2
    """
    fig = go.Figure()
    for name, ys in curves.items():
        fig.add_trace(go.Scatter(x=list(x), y=list(ys), mode="lines+markers", name=name))
    fig.update_layout(title=title, xaxis_title=xaxis_title, yaxis_title=yaxis_title)
    return fig
