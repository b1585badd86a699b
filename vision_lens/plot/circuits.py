"""Figures of circuits (:mod:`vision_lens.analysis.circuits`): composition scores between heads
and activation-patching results as heatmaps."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go

from vision_lens.plot._common import check_flag, check_texts, numbers_array, signed_range

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from torch import Tensor

    from vision_lens.analysis.circuits import PatchingScores

__all__ = ["composition_heatmap", "patching_heatmap"]

_BLOCK_HOOK = re.compile(r"blocks\.(\d+)\.(?:attn\.|mlp\.)?hook_(\w+)")


def composition_heatmap(
    scores: Tensor | ArrayLike, mode: str | None = None, title: str | None = None
) -> go.Figure:
    """Composition scores between every pair of heads as one heatmap (from
    :func:`vision_lens.analysis.all_composition_scores`).

    Args:
        scores: ``[layer, head, layer, head]``; entry ``[l1, h1, l2, h2]`` is head ``(l1, h1)``
            composing into ``(l2, h2)``.
        mode: ``"Q"``, ``"K"`` or ``"V"``, for the default title.
        title: Figure title.

    Returns:
        A figure with one ``heatmap`` trace ``[layer * head, layer * head]``: rows the earlier
        (writing) heads, columns the later (reading) heads, labelled ``L{l}H{h}``.

    Raises:
        TypeError: ``scores`` not numbers.
        ValueError: Not ``[layer, head, layer, head]``, empty or non-finite.

    Example:
        >>> import numpy as np
        >>> fig = composition_heatmap(np.random.rand(2, 3, 2, 3), mode="V")
        >>> fig.data[0].z.shape, fig.data[0].x[4]
        ((6, 6), 'L1H1')
    """
    values = numbers_array(scores, "scores", ndim=4, layout="[layer, head, layer, head]")
    n_layers, n_heads = values.shape[:2]
    if values.shape[2:] != (n_layers, n_heads):
        raise ValueError(
            f"scores must be [layer, head, layer, head] with the same layers and heads on both "
            f"sides, got shape {values.shape}."
        )
    labels = [f"L{layer}H{head}" for layer in range(n_layers) for head in range(n_heads)]
    flat = values.reshape(n_layers * n_heads, n_layers * n_heads)
    fig = go.Figure(
        go.Heatmap(
            z=flat,
            x=labels,
            y=labels,
            colorscale="Viridis",
            hovertemplate="%{y} -> %{x}: %{z:.3g}<extra></extra>",
        )
    )
    if title is None:
        title = f"{mode}-composition scores" if mode else "Composition scores"
    fig.update_layout(title=title, xaxis_title="later head (reads)", yaxis_title="earlier head")
    fig.update_yaxes(autorange="reversed")
    return fig


def _hook_label(name: str) -> str:
    """``blocks.3.attn.hook_z`` -> ``L3 z``; other names as they are."""
    match = _BLOCK_HOOK.fullmatch(name)
    return name if match is None else f"L{match[1]} {match[2]}"


def patching_heatmap(
    result: PatchingScores | Tensor | ArrayLike,
    *,
    recovered: bool = True,
    x_labels: Sequence[str] | None = None,
    y_labels: Sequence[str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Activation-patching results as a heatmap: hook (layer) x position, or hook x head.

    Args:
        result: A :class:`~vision_lens.analysis.circuits.PatchingScores` with two axes
            (``[hook, position]`` or ``[hook, head]``), or any 2-d scores.
        recovered: For a ``PatchingScores``: show ``result.recovered()`` (0 = no effect, 1 =
            clean restored) rather than the raw metric.
        x_labels: Column labels (default: ``P{i}`` positions or ``H{h}`` heads of the result;
            ``model.readout.position_names()`` names positions).
        y_labels: Row labels (default: ``L{layer} {hook}`` of the result).
        title: Figure title.

    Returns:
        A figure with one ``heatmap`` trace, zero-centred.

    Raises:
        TypeError: ``result`` not numbers, ``recovered`` not a bool.
        ValueError: Not 2-d (index a ``[hook, head, position]`` result first), non-finite, or
            labels of the wrong length.

    Example:
        >>> import numpy as np
        >>> fig = patching_heatmap(np.random.randn(2, 5), x_labels=["cls"] + ["p"] * 4)
        >>> fig.data[0].z.shape, list(fig.data[0].y)
        ((2, 5), ['0', '1'])
    """
    recovered = check_flag(recovered, "recovered")
    default_x: list[str] | None = None
    default_y: list[str] | None = None
    is_result = hasattr(result, "axis_names") and hasattr(result, "scores")
    if is_result:
        axes = result.axis_names
        if len(axes) != 2:
            raise ValueError(
                f"This PatchingScores has axes {axes}: a heatmap needs two. Patch with "
                "positions='all' (hook x head) or heads=None (hook x position)."
            )
        data = result.recovered() if recovered else result.scores
        default_y = [_hook_label(name) for name in result.hook_names]
        if axes[1] == "head":
            default_x = [f"H{h}" for h in result.heads]
        else:
            default_x = [f"P{p}" for p in result.positions]
        axis_title = axes[1]
    else:
        data, axis_title = result, "position"
    values = numbers_array(data, "scores", ndim=2, layout="[hook, position or head]")
    n_rows, n_cols = values.shape
    xs = x_labels if x_labels is not None else default_x or [str(i) for i in range(n_cols)]
    ys = y_labels if y_labels is not None else default_y or [str(i) for i in range(n_rows)]
    xs = check_texts(xs, "x_labels", n_cols, "columns")
    ys = check_texts(ys, "y_labels", n_rows, "rows")
    zmin, zmax = signed_range(values)
    fig = go.Figure(
        go.Heatmap(
            z=np.asarray(values),
            x=xs,
            y=ys,
            colorscale="RdBu_r",
            zmin=zmin,
            zmax=zmax,
            zmid=0.0,
            hovertemplate="%{y}, %{x}: %{z:.3g}<extra></extra>",
        )
    )
    if title is None:
        title = "Activation patching" + (" (fraction recovered)" if recovered and is_result else "")
    fig.update_layout(title=title, xaxis_title=axis_title, yaxis_title="patched activation")
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return fig
