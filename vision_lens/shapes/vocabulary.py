"""The shapes world's vocabulary: every attribute value a scene can have, and their names.

A scene is a background (:data:`BACKGROUNDS`) with one to four objects, each described by one
value per attribute of :data:`VOCABULARY` (``shape``, ``color``, ``size``, ``position``,
``texture``). This module holds those vocabularies and the scene description shared by the
renderer (:mod:`vision_lens.shapes.rendering`), the captions (:mod:`vision_lens.shapes.captions`)
and the sampler (:mod:`vision_lens.shapes.generator`). It imports nothing but the standard library.

Example:
    >>> VOCABULARY["color"] is COLORS, len(POSITIONS)
    (True, 9)
    >>> with_article("orange circle")
    'an orange circle'
"""

from __future__ import annotations

from typing import Protocol

#: Object shapes. ``ROUND_SHAPES`` and ``ANGULAR_SHAPES`` partition this tuple.
SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "cross",
    "star",
    "oval",
    "ring",
)
#: Shapes with no corners (label 1, "round", in :func:`spurious_split`).
ROUND_SHAPES: tuple[str, ...] = ("circle", "oval", "ring")
#: Shapes with corners (label 0, "angular", in :func:`spurious_split`).
ANGULAR_SHAPES: tuple[str, ...] = ("square", "triangle", "diamond", "cross", "star")

#: Object colours; saturated so that they stand out from the muted backgrounds.
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "cyan")
#: The exact RGB value of each colour (solid objects are exactly this colour).
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (25, 200, 40),
    "blue": (30, 70, 240),
    "yellow": (250, 225, 20),
    "orange": (255, 135, 0),
    "purple": (150, 40, 200),
    "pink": (255, 110, 200),
    "cyan": (0, 225, 230),
}

#: Object sizes, smallest first.
SIZES: tuple[str, ...] = ("small", "medium", "large")
#: Bounding-box side of each size, as a fraction of the usable cell side (cell minus a 1 px margin
#: on each side, so that objects in neighbouring cells never touch).
SIZE_FRACTIONS: dict[str, float] = {"small": 0.68, "medium": 0.83, "large": 0.98}

#: The 3x3 grid cells in row-major order.
POSITIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)

#: Fill patterns. Patterned pixels use a darker shade of the object colour; at least half of every
#: object's pixels are exactly its colour.
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted", "checkered")

#: Textured, muted backgrounds.
BACKGROUNDS: tuple[str, ...] = ("plain", "water", "grass", "sand", "sky")

#: Every attribute vocabulary, keyed by attribute name.
VOCABULARY: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": COLORS,
    "size": SIZES,
    "position": POSITIONS,
    "texture": TEXTURES,
    "background": BACKGROUNDS,
}

#: Count words, indexed by the count (``COUNT_WORDS[2] == "two"``).
COUNT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four")

#: Names of the binary labels of :func:`spurious_split`.
LABEL_NAMES: tuple[str, ...] = ("angular", "round")


class Scenes(Protocol):
    """The ground truth of a list of scenes, as captions and training targets read it.

    A :class:`~vision_lens.shapes.dataset.ShapesDataset` is one; so are the training scenes
    (:class:`~vision_lens.shapes.train_data.TrainingScenes`), which keep no masks.

    Attributes:
        attributes: Per scene, one dict per object with its value of each of ``shape``,
            ``color``, ``size``, ``position`` and ``texture``.
        backgrounds: Per scene, its background (one of :data:`BACKGROUNDS`).
    """

    @property
    def attributes(self) -> list[list[dict[str, str]]]: ...

    @property
    def backgrounds(self) -> list[str]: ...


def with_article(phrase: str) -> str:
    """Prefixes ``a`` or ``an`` depending on the first letter of ``phrase``.

    Example:
        >>> with_article("orange circle"), with_article("red oval")
        ('an orange circle', 'a red oval')
    """
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


# The vocabulary constants (upper case) and the two helpers; nothing imported.
__all__ = [name for name in dir() if name.isupper()] + ["Scenes", "with_article"]
