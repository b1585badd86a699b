"""Showing figures: the default plotly renderer, and one figure shown interactively or as a
static PNG."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import plotly.graph_objects as go
import plotly.io as pio

from vision_lens.plot.export import to_png

if TYPE_CHECKING:
    from IPython.display import Image


def _check_renderer(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(
            f"renderer must be a plotly renderer name (a string such as 'notebook' or "
            f"'vscode'), got {type(name).__name__} {name!r}."
        )
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
    **png_kwargs: float | str | os.PathLike | None,
) -> Image | None:
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
        >>> import numpy as np
        >>> from vision_lens.plot import head_grid
        >>> fig = head_grid(np.random.rand(2, 3))
        >>> show(fig)  # interactive, with the default renderer  # doctest: +SKIP
        >>> show(fig, static=True, scale=2)  # a PNG in the notebook  # doctest: +SKIP
    """
    if not isinstance(fig, go.Figure):
        raise TypeError(
            f"show takes a plotly Figure (from a vision_lens.plot function), got "
            f"{type(fig).__name__}; wrap a figure dict with plotly.graph_objects.Figure(...)."
        )
    if renderer is not None:
        _check_renderer(renderer)
    if not isinstance(static, bool):
        raise TypeError(f"static must be True or False, got {static!r}.")
    unknown = sorted(set(png_kwargs) - {"width", "height", "scale", "browser_path", "timeout"})
    if unknown:
        raise TypeError(
            f"show got unexpected keyword argument(s) {unknown}; with static=True it takes "
            "width, height, scale, browser_path and timeout (those of to_png)."
        )
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
