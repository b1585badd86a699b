"""Deprecated alias of :mod:`vision_lens.apps.seg_eval` (moved in 0.2; removed in 0.3).

The segmentation benchmark runner is an application, so it lives above the analysis layer.
"""

import warnings

from vision_lens.apps.seg_eval import *  # noqa: F403
from vision_lens.apps.seg_eval import __all__  # noqa: F401

warnings.warn(
    "vision_lens.analysis.seg_eval moved to vision_lens.apps.seg_eval; the old path is removed "
    "in 0.3.",
    DeprecationWarning,
    stacklevel=2,
)
