"""Plain charts of summary numbers: direct effects per component as bars, named curves as
lines."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from torch import Tensor

from vision_lens.plot._common import as_numpy, check_texts, numbers_array

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


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

    Raises:
        TypeError: ``terms``/``embed`` are not numbers, ``labels`` is not a list.
        ValueError: Wrong shapes, empty or non-finite values, a label count that differs from
            the components or a repeated label, an ``embed`` of another batch/width or of zero
            norm.

    Example:
        >>> import torch
        >>> t = torch.randn(3, 4, 8)
        >>> len(layer_contributions(t, ["embed", "L0_attn", "bias"], t.sum(0)).data)
        2
    """
    values = torch.as_tensor(
        numbers_array(terms, "terms", ndim=3, layout="[component, batch, d_embed]")
    )
    n_components, n_batch, d_embed = values.shape
    labels = check_texts(labels, "labels", n_components, "components (rows of terms)")
    if len(set(labels)) != len(labels):
        repeated = sorted({str(v) for v in labels if labels.count(v) > 1})
        raise ValueError(
            f"labels name {repeated} more than once: the bars of one name would be drawn on top "
            "of each other. Give each component its own label."
        )
    fig = go.Figure(go.Bar(x=labels, y=values.norm(dim=-1).mean(1).numpy(), name="mean norm"))
    if embed is not None:
        embed = torch.as_tensor(numbers_array(embed, "embed", ndim=2, layout="[batch, d_embed]"))
        if tuple(embed.shape) != (n_batch, d_embed):
            raise ValueError(
                f"embed is {tuple(embed.shape)} but terms are {tuple(values.shape)}: embed must "
                f"be [batch, d_embed] = ({n_batch}, {d_embed}), the image embeddings of the same "
                "images (the terms' sum over components)."
            )
        zero = (embed.norm(dim=-1) == 0).nonzero().flatten().tolist()
        if zero:
            raise ValueError(
                f"embed has zero norm for image(s) {zero}: there is no direction to project the "
                "terms on. Pass the image embeddings (the terms' sum), or embed=None."
            )
        unit = F.normalize(embed.to(values.dtype), dim=-1)
        projection = (values * unit[None]).sum(-1).mean(1).numpy()
        fig.add_trace(go.Bar(x=labels, y=projection, name="mean projection on embedding"))
    fig.update_layout(title=title, barmode="group", xaxis_title="component", yaxis_title="size")
    return fig


def _curve(name: object, ys: object, n: int) -> list[float | None]:
    """The y values of one curve: ``n`` finite numbers (``None`` for a gap)."""
    where = f"curves[{name!r}]"
    if isinstance(ys, str | bytes | Mapping) or not hasattr(ys, "__len__"):
        raise TypeError(
            f"{where} must be a list of numbers, one per x, got {type(ys).__name__} {ys!r:.60}."
        )
    if not isinstance(ys, list | tuple):  # a tensor, an array, a range, a pandas Series
        ys = numbers_array(ys, where, ndim=1, layout="[n_points]", finite=False).tolist()
    values: list[float | None] = []
    for y in ys:
        if (isinstance(y, Tensor) and y.numel() == 1) or (
            isinstance(y, np.ndarray | np.generic) and y.size == 1
        ):
            y = y.item()  # a one-value tensor or a numpy scalar
        if y is None:
            values.append(None)
            continue
        if isinstance(y, bool) or not isinstance(y, numbers.Real):
            raise TypeError(
                f"{where} must hold numbers (or None for a gap), got {y!r} of type "
                f"{type(y).__name__}."
            )
        if not math.isfinite(y):
            raise ValueError(
                f"{where} contains {y!r}: pass finite numbers, or None where a point is missing "
                "(it is drawn as a gap)."
            )
        values.append(y if isinstance(y, int) else float(y))
    if len(values) != n:
        raise ValueError(f"{where} has {len(values)} values for {n} x values; pass one per x.")
    return values


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

    Raises:
        TypeError: ``curves`` is not a mapping, ``x`` or a curve is not a list of values.
        ValueError: No curves, an empty ``x``, a curve of another length than ``x``, or NaN/inf
            in a curve (use ``None`` for a missing point).

    Example:
        >>> len(line_chart({"a": [1, 2], "b": [2, 1]}, x=[0, 1]).data)
        2
    """
    if not isinstance(curves, Mapping):
        raise TypeError(
            f"curves must be a mapping of curve name -> y values, got {type(curves).__name__} "
            f"{curves!r:.60}; e.g. {{'accuracy': [0.9, 0.8]}}."
        )
    if not curves:
        raise ValueError("curves is empty: pass at least one curve, {name: y values}.")
    if isinstance(x, Tensor | np.ndarray):
        x = as_numpy(x).tolist() if isinstance(x, Tensor) else x.tolist()
    x = check_texts(x, "x", items="x values (numbers, strings or dates)")
    if not x:
        raise ValueError("x is empty: pass the x value of each point.")
    fig = go.Figure()
    for name, ys in curves.items():
        fig.add_trace(go.Scatter(x=x, y=_curve(name, ys, len(x)), mode="lines+markers", name=name))
    fig.update_layout(title=title, xaxis_title=xaxis_title, yaxis_title=yaxis_title)
    return fig
