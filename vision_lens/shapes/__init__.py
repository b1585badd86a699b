"""Shapes world: procedural images of coloured, textured shapes with exact ground truth.

The package is read bottom-up: :mod:`~vision_lens.shapes.vocabulary` (attribute values),
:mod:`~vision_lens.shapes.captions` (texts), :mod:`~vision_lens.shapes.dataset` (containers),
:mod:`~vision_lens.shapes.rendering` (pixels) and :mod:`~vision_lens.shapes.generator` (sampling
scenes); then the small CLIP trained on them: :mod:`~vision_lens.shapes.clip_model`,
:mod:`~vision_lens.shapes.encoding`, :mod:`~vision_lens.shapes.pretrained`,
:mod:`~vision_lens.shapes.evaluate` and the training modules (:mod:`~vision_lens.shapes.train`).

Example:
    >>> from vision_lens.shapes import generate, labels, COLORS
    >>> ds = generate(16, seed=0, n_objects=1)
    >>> [COLORS[i] for i in labels(ds, "color")][:1] == [ds.attributes[0][0]["color"]]
    True
"""

from vision_lens.shapes.captions import (
    CAPTION_MODES,
    PROMPTS,
    caption_for,
    prompts,
    sample_captions,
)
from vision_lens.shapes.dataset import ShapesDataset, ShapesSample, SpuriousDataset
from vision_lens.shapes.generator import generate, labels, spurious_split
from vision_lens.shapes.rendering import cell_box
from vision_lens.shapes.vocabulary import (
    ANGULAR_SHAPES,
    BACKGROUNDS,
    COLOR_RGB,
    COLORS,
    COUNT_WORDS,
    LABEL_NAMES,
    POSITIONS,
    ROUND_SHAPES,
    SHAPES,
    SIZE_FRACTIONS,
    SIZES,
    TEXTURES,
    VOCABULARY,
    with_article,
)

__all__ = [
    "ANGULAR_SHAPES",
    "BACKGROUNDS",
    "CAPTION_MODES",
    "COLORS",
    "COLOR_RGB",
    "COUNT_WORDS",
    "LABEL_NAMES",
    "POSITIONS",
    "PROMPTS",
    "ROUND_SHAPES",
    "SHAPES",
    "SIZES",
    "SIZE_FRACTIONS",
    "TEXTURES",
    "VOCABULARY",
    "ShapesDataset",
    "ShapesSample",
    "SpuriousDataset",
    "caption_for",
    "cell_box",
    "generate",
    "labels",
    "prompts",
    "sample_captions",
    "spurious_split",
    "with_article",
]
