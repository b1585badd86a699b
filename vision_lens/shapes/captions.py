"""Captions and prompts: the text side of the shapes world.

:func:`caption_for` writes a caption for a scene's ground truth in one of the
:data:`CAPTION_MODES` (the full description, or only some attributes: "a red object", "a circle
in the top left", "three shapes on grass", ...); :func:`true_captions` lists every caption the
grammar can write for a scene; :func:`prompts` fills the zero-shot :data:`PROMPTS` templates.
A caption never mentions an attribute value that is not in the scene.

Example:
    >>> obj = dict(shape="oval", color="orange", size="small", position="top", texture="solid")
    >>> caption_for([obj], "sky", mode="color_shape"), prompts("color")[4]
    ('an orange oval', 'an orange object')
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vision_lens.shapes.vocabulary import (
    COUNT_WORDS,
    VOCABULARY,
    Scenes,
    WrongTypeError,
    check_name,
    check_objects,
    check_scenes,
    check_seed,
    did_you_mean,
    with_article,
)

__all__ = [
    "CAPTION_MODES",
    "PROMPTS",
    "caption_for",
    "prompts",
    "sample_captions",
    "true_captions",
]

#: Zero-shot prompt templates per attribute. Use :func:`prompts` to get them filled in with the
#: correct article ("an orange object", "an oval").
PROMPTS: dict[str, str] = {
    "color": "a {} object",
    "shape": "a {}",
    "position": "an object in the {}",
    "size": "a {} object",
    "texture": "a {} object",
    "background": "an object on a {} background",
}

#: Caption modes understood by :func:`caption_for`.
CAPTION_MODES: tuple[str, ...] = (
    "full",
    "color_shape",
    "size_color_shape",
    "texture_shape",
    "shape_position",
    "color",
    "shape",
    "position",
    "size",
    "texture",
    "background",
    "count",
    "one_of",
)
_SINGLE_MODES = tuple(m for m in CAPTION_MODES if m != "one_of")
_MULTI_MODES = ("full", "color_shape", "shape_position", "texture_shape", "count", "one_of")

# Which object fields each per-object caption mode mentions (in the order size, color, texture,
# shape; "position" is appended as "in the ...").
_MODE_FIELDS: dict[str, tuple[str, ...]] = {
    "full": ("size", "color", "texture", "shape", "position"),
    "color_shape": ("color", "shape"),
    "size_color_shape": ("size", "color", "shape"),
    "texture_shape": ("texture", "shape"),
    "shape_position": ("shape", "position"),
    "color": ("color",),
    "shape": ("shape",),
    "position": ("position",),
    "size": ("size",),
    "texture": ("texture",),
}
# How a background is named after "on" in short captions ("three shapes on grass").
_BG_SHORT: dict[str, str] = {
    "plain": "a plain background",
    "water": "water",
    "grass": "grass",
    "sand": "sand",
    "sky": "a sky background",
}


def _describe(obj: dict[str, str], fields: Sequence[str]) -> str:
    words = [obj[f] for f in ("size", "color", "texture") if f in fields]
    words.append(obj["shape"] if "shape" in fields else "object")
    phrase = with_article(" ".join(words))
    if "position" in fields:
        phrase += f" in the {obj['position']}"
    return phrase


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _plural(count: int, noun: str) -> str:
    return f"{COUNT_WORDS[count]} {noun}{'' if count == 1 else 's'}"


def _one_of(obj: dict[str, str], k: int) -> str:
    """The ``one_of`` caption naming ``obj`` among ``k >= 2`` objects."""
    other = "other shape" if k == 2 else "other shapes"
    return f"{_describe(obj, _MODE_FIELDS['color_shape'])} and {COUNT_WORDS[k - 1]} {other}"


def _as_rng(rng: object) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, np.random.SeedSequence | np.random.BitGenerator):
        return np.random.default_rng(rng)
    if isinstance(rng, bool) or not isinstance(rng, int | np.integer):
        raise WrongTypeError(
            f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__} {rng!r}."
        )
    return np.random.default_rng(check_seed(rng, "rng"))


def caption_for(
    attributes: Sequence[dict[str, str]],
    background: str,
    rng: np.random.Generator | int | None = None,
    mode: str | None = None,
) -> str:
    """A caption for one scene, either full or mentioning only some attributes.

    Modes (see :data:`CAPTION_MODES`), shown for one object / several objects:

    - ``full``: "a large red striped circle in the top left on a water background" /
      "two objects: a large red striped circle in the top left and a small blue solid square in
      the center, on a water background"
    - ``color_shape``: "a red circle" / "two objects: a red circle and a blue square"; likewise
      ``size_color_shape``, ``texture_shape``, ``shape_position`` ("a circle in the top left"),
      ``color`` ("a red object"), ``shape`` ("a circle"), ``position`` ("an object in the top
      left"), ``size`` ("a large object") and ``texture`` ("a striped object").
    - ``background``: "an object on a grass background" / "three objects on a grass background"
    - ``count``: "one shape on grass" / "three shapes on grass"
    - ``one_of`` (several objects): "a red circle and two other shapes"

    A caption never mentions an attribute value that is not in the scene.

    Args:
        attributes: One dict per object (keys ``shape``, ``color``, ``size``, ``position``,
            ``texture``).
        background: Background name.
        rng: Generator (or seed) used to pick the mode when ``mode`` is None, and the object for
            ``one_of``.
        mode: A caption mode; ``None`` picks one uniformly from those suited to the object count
            (``one_of`` only for several objects).

    Example:
        >>> obj = dict(shape="circle", color="red", size="large", position="top left",
        ...            texture="striped")
        >>> caption_for([obj], "water", mode="full")
        'a large red striped circle in the top left on a water background'
        >>> caption_for([obj], "grass", mode="count")
        'one shape on grass'
    """
    check_objects(attributes, background)
    if mode is not None:
        if not isinstance(mode, str):
            raise WrongTypeError(
                f"mode must be a caption mode (one of {list(CAPTION_MODES)}) or None, got "
                f"{type(mode).__name__} {mode!r}."
            )
        if mode not in CAPTION_MODES:
            raise ValueError(
                f"unknown caption mode {mode!r}.{did_you_mean(mode, CAPTION_MODES)} The valid "
                f"values are {list(CAPTION_MODES)}."
            )
    rng = _as_rng(rng)
    k = len(attributes)
    if mode is None:
        modes = _SINGLE_MODES if k == 1 else _MULTI_MODES
        mode = modes[int(rng.integers(len(modes)))]

    if mode == "count":
        return f"{_plural(k, 'shape')} on {_BG_SHORT[background]}"
    if mode == "background":
        return f"{with_article('object') if k == 1 else _plural(k, 'object')} on " + (
            f"a {background} background"
        )
    if mode == "one_of":
        if k == 1:
            return _describe(attributes[0], _MODE_FIELDS["color_shape"])
        return _one_of(attributes[int(rng.integers(k))], k)
    fields = _MODE_FIELDS[mode]
    parts = [_describe(obj, fields) for obj in attributes]
    if k == 1:
        text = parts[0]
    else:
        text = f"{_plural(k, 'object')}: {_join(parts)}"
    if mode == "full":
        text += ("," if k > 1 else "") + f" on a {background} background"
    return text


def sample_captions(dataset: Scenes, seed: int = 0, mode: str | None = None) -> list[str]:
    """Draws a fresh random caption for every image of ``dataset`` (e.g. one per epoch).

    Args:
        dataset: The images' ground truth is read from here (a
            :class:`~vision_lens.shapes.dataset.ShapesDataset`, or any
            :class:`~vision_lens.shapes.vocabulary.Scenes`).
        seed: Seed; the same seed gives the same captions.
        mode: Fix the caption mode (default: random per image).

    Example:
        >>> from vision_lens.shapes import generate
        >>> ds = generate(4, seed=0)
        >>> caps = sample_captions(ds, seed=1)
        >>> len(caps), caps == sample_captions(ds, seed=1)
        (4, True)
    """
    seed = check_seed(seed)
    check_scenes(dataset)
    rng = np.random.default_rng([int(seed), 0xCA])
    return [
        caption_for(attrs, bg, rng, mode=mode)
        for attrs, bg in zip(dataset.attributes, dataset.backgrounds, strict=True)
    ]


def true_captions(attributes: Sequence[dict[str, str]], background: str) -> set[str]:
    """Every caption the grammar can write for a scene (all modes, every object for ``one_of``).

    Training uses them as the positives of its multi-positive loss: a batch caption is a
    positive for every image whose set contains it.

    Example:
        >>> obj = dict(shape="circle", color="red", size="large", position="top",
        ...            texture="solid")
        >>> {"a red object", "a circle", "an object in the top"} <= true_captions([obj], "sky")
        True
    """
    out = {caption_for(attributes, background, 0, mode=m) for m in _SINGLE_MODES}
    if len(attributes) > 1:
        out.update(_one_of(obj, len(attributes)) for obj in attributes)
    return out


def prompts(attribute: str) -> list[str]:
    """Zero-shot prompts for every value of an attribute, in vocabulary order.

    Uses :data:`PROMPTS` with the article fixed for vowels ("an orange object", "an oval").

    Example:
        >>> prompts("shape")[:3]
        ['a circle', 'a square', 'a triangle']
        >>> prompts("color")[4]
        'an orange object'
    """
    check_name(attribute, tuple(PROMPTS), "attribute")
    out = []
    for v in VOCABULARY[attribute]:
        text = PROMPTS[attribute].format(v)
        if text.startswith("a ") and text[2:3] in "aeiou":
            text = "an " + text[2:]
        out.append(text)
    return out
