"""Figures of the embedding lens (:mod:`vision_lens.analysis.lens`): zero-shot accuracy per layer
as lines, and patch-lens maps over images (images x texts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go

from vision_lens.plot._common import check_int, check_texts, numbers_array
from vision_lens.plot.charts import line_chart
from vision_lens.plot.tokens import token_heatmap_grid

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from PIL.Image import Image
    from torch import Tensor

__all__ = ["lens_accuracy_chart", "patch_lens_grid"]


def lens_accuracy_chart(
    accuracies: Tensor | ArrayLike | Mapping[str, Tensor | ArrayLike],
    stage_names: Sequence[str] | None = None,
    title: str | None = "Embedding lens: zero-shot accuracy per layer",
) -> go.Figure:
    """Zero-shot accuracy of each lens stage as a line (from
    :func:`vision_lens.analysis.lens_accuracy`).

    Args:
        accuracies: ``[stage]`` accuracies, or a mapping name -> ``[stage]`` accuracies to
            compare several models or datasets of the same depth.
        stage_names: x labels (default ``"embed", "L0", ...``, as
            :func:`vision_lens.analysis.lens_stage_names`).
        title: Figure title.

    Returns:
        A figure with one ``scatter`` trace per curve, y in ``[0, 1]``.

    Raises:
        TypeError: Accuracies not numbers.
        ValueError: Not 1-d, empty, non-finite, curves of different lengths, or
            ``stage_names`` of another length.

    Example:
        >>> fig = lens_accuracy_chart([0.1, 0.3, 0.8])
        >>> list(fig.data[0].x), fig.data[0].name
        (['embed', 'L0', 'L1'], 'accuracy')
    """
    curves = accuracies if isinstance(accuracies, Mapping) else {"accuracy": accuracies}
    values = {
        str(name): numbers_array(ys, f"accuracies[{name!r}]", ndim=1, layout="[stage]").tolist()
        for name, ys in curves.items()
    }
    if not values:
        raise ValueError("accuracies is empty: pass at least one curve.")
    lengths = {len(v) for v in values.values()}
    if len(lengths) != 1:
        raise ValueError(
            f"The curves have different lengths {sorted(lengths)}: each needs one accuracy per "
            "stage of the same model depth."
        )
    n = lengths.pop()
    x = ["embed"] + [f"L{i}" for i in range(n - 1)] if stage_names is None else stage_names
    x = check_texts(x, "stage_names", n, "stages (accuracies per curve)")
    fig = line_chart(
        values, x, title=title, xaxis_title="residual stream after", yaxis_title="accuracy"
    )
    fig.update_yaxes(range=[0, 1.02])
    return fig


def patch_lens_grid(
    images: Sequence[Image | Tensor | np.ndarray],
    maps: Tensor | ArrayLike,
    texts: Sequence[str],
    *,
    n_prefix: int = 0,
    grid_size: tuple[int, int] | None = None,
    opacity: float = 0.55,
    title: str | None = None,
) -> go.Figure:
    """Patch-lens maps over their images: one row per image, one column per text direction (from
    :func:`vision_lens.analysis.patch_lens`).

    Args:
        images: ``n_images`` images (PIL, uint8 ``[H, W, 3]`` or ``[3, H, W]`` tensors).
        maps: ``[n_images, pos, n_texts]`` scores; the first ``n_prefix`` positions (class token,
            registers) are dropped and the rest laid out on the patch grid.
        texts: Column titles, one per direction.
        n_prefix: Prefix positions to drop (``model.cfg.n_prefix`` for the whole
            :func:`~vision_lens.analysis.patch_lens` output).
        grid_size: ``(rows, cols)`` of the patch grid (``model.cfg.grid_size``; default: square).
        opacity: Heatmap opacity.
        title: Figure title.

    Returns:
        A figure as :func:`vision_lens.plot.token_heatmap_grid`'s: per row the image, then the
        image with each text's map (zero-centred scale).

    Raises:
        TypeError: ``maps`` not numbers, ``n_prefix`` not an int.
        ValueError: ``maps`` not 3-d or non-finite; a number of patches that does not fill the
            grid; images or texts that do not match ``maps``.

    Example:
        >>> import numpy as np
        >>> maps = np.random.randn(2, 5, 3)  # class token + 2 x 2 patches, 3 texts
        >>> fig = patch_lens_grid([np.zeros((16, 16, 3), np.uint8)] * 2, maps, ["a", "b", "c"],
        ...                       n_prefix=1)
        >>> fig.data[2].z.shape
        (2, 2)
    """
    values = numbers_array(maps, "maps", ndim=3, layout="[n_images, pos, n_texts]")
    n_prefix = check_int(n_prefix, "n_prefix", minimum=0)
    n_patches = values.shape[1] - n_prefix
    if grid_size is None:
        side = int(round(max(n_patches, 0) ** 0.5))
        rows, cols = side, side
    else:
        rows, cols = (check_int(v, "grid_size") for v in grid_size)
    if n_patches <= 0 or rows * cols != n_patches:
        raise ValueError(
            f"maps have {values.shape[1]} positions; after {n_prefix} prefix positions the "
            f"{n_patches} patches do not fill a {rows} x {cols} grid. Pass n_prefix="
            "model.cfg.n_prefix and grid_size=model.cfg.grid_size."
        )
    scores = values[:, n_prefix:].reshape(values.shape[0], rows, cols, -1).transpose(0, 3, 1, 2)
    return token_heatmap_grid(images, scores, texts, opacity=opacity, title=title)
