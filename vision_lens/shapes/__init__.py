"""Shapes world: procedural images of coloured, textured shapes with exact ground truth.

Example:
    >>> from vision_lens.shapes import generate, labels, COLORS
    >>> ds = generate(16, seed=0, n_objects=1)
    >>> [COLORS[i] for i in labels(ds, "color")][:1] == [ds.attributes[0][0]["color"]]
    True
"""

from vision_lens.shapes.generator import (
    ANGULAR_SHAPES,
    BACKGROUNDS,
    CAPTION_MODES,
    COLOR_RGB,
    COLORS,
    COUNT_WORDS,
    LABEL_NAMES,
    POSITIONS,
    PROMPTS,
    ROUND_SHAPES,
    SHAPES,
    SIZE_FRACTIONS,
    SIZES,
    TEXTURES,
    VOCABULARY,
    ShapesDataset,
    ShapesSample,
    SpuriousDataset,
    caption_for,
    cell_box,
    generate,
    labels,
    prompts,
    sample_captions,
    spurious_split,
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
