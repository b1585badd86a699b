"""Small helpers every layer shares, one per job: input checks (:mod:`.checks`), batched
iteration with a progress bar (:mod:`.batching`) and patch-grid upsampling (:mod:`.grids`).

This package sits below everything else (it imports nothing from ``vision_lens``), so any layer
may use it.
"""

from vision_lens.utils.batching import batch_count, batched, iter_batches, progress_bar
from vision_lens.utils.checks import (
    check_batch_size,
    check_finite,
    check_images,
    head_indices,
    layer_indices,
)
from vision_lens.utils.grids import as_square_grid, upsample_grid

__all__ = [
    "as_square_grid",
    "batch_count",
    "batched",
    "check_batch_size",
    "check_finite",
    "check_images",
    "head_indices",
    "iter_batches",
    "layer_indices",
    "progress_bar",
    "upsample_grid",
]
