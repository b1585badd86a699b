"""Plotly figures of layers, heads, tokens and attention. Every figure function returns a
``plotly.graph_objects.Figure``.

Figures display themselves in Jupyter, VS Code and Colab (the last expression of a cell, or
``fig.show()``). :func:`set_renderer` picks how (``"notebook"``, ``"vscode"``, ``"colab"``,
``"browser"``, ``"png"``, ...), :func:`show` displays one figure interactively or as a static PNG,
and :func:`to_png` writes a PNG with kaleido (it needs a Chrome/Chromium: see
:func:`find_browser`). ``fig.write_html(path)`` saves an interactive, self-contained page.

The modules, one kind of figure each (every public name is also importable from here):

* :mod:`~vision_lens.plot.tokens`: patch scores over images (:func:`token_heatmap`,
  :func:`token_heatmap_grid`, :func:`upsample_patch_scores`).
* :mod:`~vision_lens.plot.heads`: per-head figures (:func:`head_grid`, :func:`textspan_table`).
* :mod:`~vision_lens.plot.charts`: bar and line charts (:func:`layer_contributions`,
  :func:`line_chart`).
* :mod:`~vision_lens.plot.attention`: attention patterns (:func:`attention_pattern`).
* :mod:`~vision_lens.plot.images`: image panels (:func:`segmentation_examples`,
  :func:`retrieval_grid`).
* :mod:`~vision_lens.plot.lens`: the embedding lens (:func:`lens_accuracy_chart`,
  :func:`patch_lens_grid`).
* :mod:`~vision_lens.plot.circuits`: circuits (:func:`composition_heatmap`,
  :func:`patching_heatmap`).
* :mod:`~vision_lens.plot.scoring`: component scores per property (:func:`score_heatmap`,
  :func:`top_components_chart`).
* :mod:`~vision_lens.plot.display`, :mod:`~vision_lens.plot.export` and
  :mod:`~vision_lens.plot.browser`: showing figures (:func:`set_renderer`, :func:`show`), PNG
  export (:func:`to_png`) and the headless browser it uses (:func:`find_browser`).

Example:
    >>> import numpy as np
    >>> import vision_lens as vl
    >>> fig = vl.plot.head_grid(np.random.rand(2, 4), labels=[["a"] * 4, ["b"] * 4])
    >>> fig.data[0].type
    'heatmap'
"""

from vision_lens.plot.attention import attention_pattern
from vision_lens.plot.browser import BROWSER_NAMES as BROWSER_NAMES
from vision_lens.plot.browser import BROWSER_PATHS as BROWSER_PATHS
from vision_lens.plot.browser import find_browser
from vision_lens.plot.charts import layer_contributions, line_chart
from vision_lens.plot.circuits import composition_heatmap, patching_heatmap
from vision_lens.plot.display import set_renderer, show
from vision_lens.plot.export import to_png
from vision_lens.plot.heads import head_grid, textspan_table
from vision_lens.plot.images import retrieval_grid, segmentation_examples
from vision_lens.plot.lens import lens_accuracy_chart, patch_lens_grid
from vision_lens.plot.scoring import score_heatmap, top_components_chart
from vision_lens.plot.tokens import token_heatmap, token_heatmap_grid, upsample_patch_scores

# Also reachable here, as before, though not in __all__: BROWSER_NAMES and BROWSER_PATHS.
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
    "composition_heatmap",
    "patching_heatmap",
    "lens_accuracy_chart",
    "patch_lens_grid",
    "score_heatmap",
    "top_components_chart",
]
