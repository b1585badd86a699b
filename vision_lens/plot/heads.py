"""Per-head figures: a layer x head heatmap of any score with each head's texts on hover, and a
table of TextSpan results (the texts chosen per head and the variance they explain)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go

from vision_lens.plot._common import (
    check_flag,
    check_int,
    escape_html,
    numbers_array,
    signed_range,
)

if TYPE_CHECKING:
    from typing import TypeAlias, TypeGuard

    from numpy.typing import ArrayLike
    from torch import Tensor

    from vision_lens.analysis import TextSpanResult

    # (Static-only aliases, hence plain comments: the docs describe the forms in prose.)
    # The texts of one head: one string or several.
    HeadTexts: TypeAlias = str | Sequence[str]
    # One head: (layer, head), "L{layer}H{head}", or a row of a TextSpanResult.
    HeadKey: TypeAlias = tuple[int, int] | str | int
    # Hover texts per head, in any of the forms head_grid takes.
    HeadLabels: TypeAlias = (
        TextSpanResult
        | Mapping[str, Any]  # TextSpanResult.to_dict(): JSON, its values are of many kinds
        | Mapping[tuple[int, int] | str, HeadTexts]
        | Sequence[Sequence[HeadTexts | None]]
    )

_HEAD_NAME = re.compile(r"L(-?\d+)H(\d+)")


def _parse_head_name(name: str) -> tuple[int, int] | None:
    """``(layer, head)`` of ``"L{layer}H{head}"``, else ``None``."""
    match = _HEAD_NAME.fullmatch(name)
    return None if match is None else (int(match[1]), int(match[2]))


def _is_textspan_result(obj: object) -> TypeGuard[TextSpanResult]:
    return all(hasattr(obj, name) for name in ("indices", "texts", "heads", "explained_fraction"))


def _textspan_hover(result: TextSpanResult, row: int, top: int | None) -> list[str]:
    indices = result.indices[row, :top].tolist()
    lines = [result.texts[i] if result.texts is not None else f"text #{i}" for i in indices]
    fraction = float(result.explained_fraction[row, -1])
    return [*lines, f"({fraction:.0%} of variance with m={result.m})"]


def _texts_of(texts: object, key: object, top: int | None) -> list[str]:
    """The hover lines of one head: a string, or a sequence of strings (the first ``top``)."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, bytes) or not isinstance(texts, Sequence):
        raise TypeError(
            f"labels entry for {key!r} must be a string or a list of strings, got "
            f"{type(texts).__name__} {texts!r:.60}."
        )
    return [str(t) for t in list(texts)[:top]]


def _int_pair(key: object) -> tuple[int, int] | None:
    """``(layer, head)`` if ``key`` is a pair of ints, else ``None``."""
    if isinstance(key, str | bytes) or not isinstance(key, Sequence) or len(key) != 2:
        return None
    if any(isinstance(v, bool) or not isinstance(v, int | np.integer) for v in key):
        return None
    return int(key[0]), int(key[1])


def _head_hover(
    labels: HeadLabels, shape: tuple[int, int], layer_ids: list[int], top: int | None
) -> list[list[str]]:
    """``[layer][head]`` hover strings from any of the label forms :func:`head_grid` takes."""
    n_layers, n_heads = shape
    cells: list[list[list[str] | None]] = [[None] * n_heads for _ in range(n_layers)]

    def place(layer: int, head: int, texts: HeadTexts, key: object) -> None:
        row = layer_ids.index(layer) if layer in layer_ids else None
        if row is None and -n_layers <= layer < 0 and layer_ids == list(range(n_layers)):
            row = layer % n_layers
        if row is None or not 0 <= head < n_heads:
            raise ValueError(
                f"labels has an entry for {key!r} (layer {layer}, head {head}), which is not in "
                f"the grid: layers {layer_ids}, heads 0..{n_heads - 1}."
            )
        cells[row][head] = _texts_of(texts, key, top)

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
                if not isinstance(entry, Mapping) or not {"layer", "head", "texts"} <= set(entry):
                    raise ValueError(
                        "labels looks like TextSpanResult.to_dict() but its heads lack 'layer', "
                        "'head' or 'texts' (was the result made with texts and head labels?)."
                    )
                key = entry.get("label", (entry["layer"], entry["head"]))
                place(int(entry["layer"]), int(entry["head"]), entry["texts"], key)
        else:
            for key, texts in labels.items():
                bad_key = f"labels key {key!r} is not (layer, head) or 'L{{layer}}H{{head}}'."
                if isinstance(key, str):
                    parsed = _parse_head_name(key)
                    if parsed is None:
                        raise ValueError(bad_key)
                    layer, head = parsed
                else:
                    pair = _int_pair(key)
                    if pair is None:
                        raise ValueError(bad_key + " Layer and head must be ints.")
                    layer, head = pair
                place(layer, head, texts, key)
    else:
        if isinstance(labels, str | bytes) or not isinstance(labels, Sequence):
            raise TypeError(
                "labels must be a TextSpanResult, its to_dict(), a mapping {(layer, head): texts} "
                f"or [layer][head] nested lists, got {type(labels).__name__} "
                f"{labels!r:.60}."
            )
        rows = list(labels)
        if any(isinstance(row, str | bytes) or not isinstance(row, Sequence) for row in rows):
            raise TypeError(
                "labels as nested lists must be [layer][head] lists of texts, got rows "
                f"{rows!r:.80}."
            )
        if len(rows) != n_layers or any(len(row) != n_heads for row in rows):
            got = [len(row) for row in rows]
            raise ValueError(
                f"labels must be [layer][head] lists matching scores ({n_layers} x {n_heads}); "
                f"got {len(rows)} rows of lengths {got}."
            )
        for row, entries in enumerate(rows):
            for head, texts in enumerate(entries):
                if texts is not None:
                    cells[row][head] = _texts_of(texts, f"labels[{row}][{head}]", top)
    return [["<br>".join(map(escape_html, cell or [])) for cell in row] for row in cells]


def _layer_ids(layers: object) -> list[int]:
    """The layer index of each row: distinct non-negative ints."""
    if isinstance(layers, np.ndarray) or hasattr(layers, "tolist"):
        layers = layers.tolist()
    if isinstance(layers, int | np.integer) and not isinstance(layers, bool):
        layers = [layers]
    if isinstance(layers, str | bytes) or not isinstance(layers, Sequence):
        raise TypeError(f"layers must be a list of ints (one per row of scores), got {layers!r}.")
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int | np.integer):
            raise TypeError(f"layers must be ints, got {layer!r} in {layers!r}.")
        if layer < 0:
            raise ValueError(
                f"layers are the model's layer indices of the rows of scores; got {layer} in "
                f"{layers!r}: pass non-negative indices (e.g. [8, 9, 10, 11])."
            )
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers {layers!r} names the same layer twice; each row is one layer.")
    return [int(v) for v in layers]


def head_grid(
    scores: Tensor | ArrayLike,
    labels: HeadLabels | None = None,
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

    Raises:
        TypeError: ``scores`` not real numbers, ``layers``/``top`` not ints, ``signed`` not a
            bool, ``labels`` (or an entry) of another form.
        ValueError: ``scores`` not 2-d, empty or non-finite; ``layers`` of another length,
            negative or repeated; ``top < 1``; a label for a head outside the grid.

    Example:
        >>> import numpy as np
        >>> fig = head_grid(np.arange(8.0).reshape(2, 4), labels={(1, 2): ["red", "blue"]})
        >>> fig.data[0].z.shape, fig.data[0].text[1][2]
        ((2, 4), 'red<br>blue')
        >>> head_grid(np.random.randn(2, 4), signed=True).data[0].zmid
        0.0
    """
    values = numbers_array(scores, "scores", ndim=2, layout="[layer, head]").astype(np.float64)
    layer_ids = list(range(values.shape[0])) if layers is None else _layer_ids(layers)
    if len(layer_ids) != values.shape[0]:
        raise ValueError(
            f"{len(layer_ids)} layers given for {values.shape[0]} rows of scores: pass one layer "
            "index per row of scores."
        )
    top = check_int(top, "top", none=True)
    signed = check_flag(signed, "signed")
    hover = None if labels is None else _head_hover(labels, values.shape, layer_ids, top)
    signed = bool(values.min() < 0 < values.max()) if signed is None else signed
    zmin, zmax = signed_range(values) if signed else (None, None)
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


def _head_rows(result: TextSpanResult, heads: HeadKey | Sequence[HeadKey] | None) -> list[int]:
    """Rows of ``result`` for the heads :func:`textspan_table` was asked for (all when None).

    The result checks the keys itself (``TextSpanResult.head_index``): it alone knows which
    heads it holds, and its messages name them.
    """
    if heads is None:
        return list(range(result.n_heads))
    if isinstance(heads, str | int | np.integer | tuple):
        heads = [heads]
    if not isinstance(heads, Sequence):
        raise TypeError(
            "heads must be (layer, head) pairs, 'L{layer}H{head}' strings or row indices, alone "
            f"or in a list, got {type(heads).__name__} {heads!r:.60}."
        )
    if len(heads) == 0:
        raise ValueError("heads is empty: name at least one head (or None for all).")
    rows = []
    for key in heads:
        if isinstance(key, str):
            parsed = _parse_head_name(key)
            if parsed is None:
                raise ValueError(
                    f"head {key!r} is not (layer, head), a row or 'L{{layer}}H{{head}}'."
                )
            rows.append(result.head_index(*parsed))
        elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            rows.append(result.head_index(int(key)))
        else:
            pair = _int_pair(key)
            if pair is None:
                raise TypeError(
                    f"head {key!r} is not a (layer, head) pair of ints, a row index or "
                    "'L{layer}H{head}'."
                )
            rows.append(result.head_index(*pair))
    return rows


def textspan_table(
    result: TextSpanResult,
    heads: HeadKey | Sequence[HeadKey] | None = None,
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
        TypeError: ``result`` is not a TextSpanResult, a head key is not a pair of ints, a row
            or a name, ``top``/``height`` not ints.
        ValueError: An empty ``heads``, ``top < 1`` or ``height < 10``.
        KeyError: A requested head is not in the result.
        IndexError: A requested row is out of range.

    Example:
        >>> import torch
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
    top = check_int(top, "top", none=True)
    height = check_int(height, "height", minimum=10, none=True)
    fraction = result.explained_fraction
    columns: list[list[str | int]] = [[], [], [], [], []]
    fills: list[str] = []
    for n, row in enumerate(rows):
        indices = result.indices[row, :top].tolist()
        for k, index in enumerate(indices):
            text = result.texts[index] if result.texts is not None else f"text #{index}"
            columns[0].append(result.label(row))
            columns[1].append(k + 1)
            columns[2].append(escape_html(text))
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
