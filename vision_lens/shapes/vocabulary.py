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

import difflib
import numbers
from collections.abc import Sequence
from typing import Any, Protocol

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
    if not isinstance(phrase, str):
        raise TypeError(f"phrase must be a string, got {type(phrase).__name__} {phrase!r}.")
    if not phrase.strip():
        raise ValueError(f"phrase is empty ({phrase!r}); pass a noun phrase such as 'red circle'.")
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


class WrongTypeError(TypeError, ValueError):
    """An argument of the wrong type (a ``TypeError``); also a ``ValueError``, which is what the
    shapes world raised for these before 0.2, so ``except ValueError`` keeps working."""


def did_you_mean(value: object, options: Sequence[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``options`` (empty if none is close)."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value.lower(), [o.lower() for o in options], n=3, cutoff=0.6)
    close = [o for o in options if o.lower() in close]
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def check_name(value: object, options: Sequence[str], what: str) -> str:
    """``value`` if it is one of ``options``; else a ``TypeError`` (not a string) or a
    ``ValueError`` naming ``what``, the value, the close matches and the valid values."""
    if not isinstance(value, str):
        raise WrongTypeError(
            f"{what} must be a string (one of {list(options)}), got {type(value).__name__} "
            f"{value!r}."
        )
    if value not in options:
        raise ValueError(
            f"unknown {what} {value!r}.{did_you_mean(value, options)} The valid values are "
            f"{list(options)}."
        )
    return value


def check_int(value: object, what: str, *, minimum: int | None = None, hint: str = "") -> int:
    """``value`` as an int if it is an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise WrongTypeError(
            f"{what} must be an integer{'' if minimum is None else f' >= {minimum}'}, got "
            f"{type(value).__name__} {value!r}.{hint}"
        )
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}.{hint}")
    return int(value)


def check_seed(seed: object, what: str = "seed") -> int:
    """A seed: a non-negative int (``None`` would draw fresh entropy: not reproducible)."""
    return check_int(
        seed,
        what,
        minimum=0,
        hint=" Pass a fixed non-negative integer (the same seed gives the same data).",
    )


#: The keys of an object's description, in the order captions read them.
OBJECT_KEYS: tuple[str, ...] = ("shape", "color", "size", "position", "texture")


def check_objects(objects: object, background: object, what: str = "attributes") -> None:
    """Refuse a scene description the renderer and captions cannot read: ``objects`` must be a
    list of 1-4 dicts with a valid value for each of :data:`OBJECT_KEYS`, ``background`` one of
    :data:`BACKGROUNDS`."""
    check_name(background, BACKGROUNDS, "background")
    if isinstance(objects, dict | str | bytes) or not isinstance(objects, Sequence):
        raise WrongTypeError(
            f"{what} must be a list of object dicts (keys {list(OBJECT_KEYS)}), got "
            f"{type(objects).__name__}; wrap a single object as [obj]."
        )
    if not objects:
        raise ValueError(f"{what} is empty: a scene needs at least one object.")
    if len(objects) >= len(COUNT_WORDS):
        raise ValueError(
            f"{what} has {len(objects)} objects; a scene has at most {len(COUNT_WORDS) - 1}."
        )
    for j, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise WrongTypeError(
                f"{what}[{j}] must be a dict with keys {list(OBJECT_KEYS)}, got "
                f"{type(obj).__name__} {obj!r}."
            )
        missing = [k for k in OBJECT_KEYS if k not in obj]
        if missing:
            raise ValueError(
                f"{what}[{j}] lacks {missing}; an object needs all of {list(OBJECT_KEYS)}."
            )
        for key in OBJECT_KEYS:
            check_name(obj[key], VOCABULARY[key], f"{key} of {what}[{j}]")


def check_scenes(dataset: Any, what: str = "dataset") -> None:
    """Refuse anything without ``attributes`` and ``backgrounds`` lists of the same length."""
    attributes = getattr(dataset, "attributes", None)
    backgrounds = getattr(dataset, "backgrounds", None)
    if not isinstance(attributes, Sequence) or not isinstance(backgrounds, Sequence):
        raise TypeError(
            f"{what} must be a ShapesDataset (from vision_lens.shapes.generate) or another object "
            f"with .attributes and .backgrounds lists, got {type(dataset).__name__}."
        )
    if len(attributes) != len(backgrounds):
        raise ValueError(
            f"{what} has {len(attributes)} attribute lists but {len(backgrounds)} backgrounds."
        )


# The vocabulary constants (upper case) and the two helpers; nothing imported.
__all__ = [name for name in dir() if name.isupper()] + ["Scenes", "with_article"]
