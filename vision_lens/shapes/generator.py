"""Shapes world: a procedural image generator with exact ground truth.

Every image is a textured background (``water``, ``grass``, ...) with one to four coloured,
textured shapes, each in its own cell of a 3x3 grid. For every object the generator records its
``shape``, ``color``, ``size``, ``position`` and ``texture`` and its exact pixel mask, so that a
model trained on these images can be interpreted against ground truth (which heads encode colour,
zero-shot segmentation IoU against the true masks, ...).

This module samples scenes (:func:`generate`, :func:`spurious_split`) and reads labels back
(:func:`labels`). The parts live next to it: the attribute vocabularies in
:mod:`vision_lens.shapes.vocabulary`, drawing in :mod:`vision_lens.shapes.rendering`, captions
and prompts in :mod:`vision_lens.shapes.captions` and the containers in
:mod:`vision_lens.shapes.dataset`; their public names are importable from here too.

Everything is pure numpy + PIL and deterministic given the arguments (including the seed).

Example:
    >>> ds = generate(8, seed=0, n_objects=1)
    >>> ds.images.shape, ds.images.dtype
    ((8, 64, 64, 3), dtype('uint8'))
    >>> sorted(ds.attributes[0][0])
    ['color', 'position', 'shape', 'size', 'texture']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

# Re-exported: these names were defined here before the split and stay importable from here.
from vision_lens.shapes.captions import CAPTION_MODES as CAPTION_MODES
from vision_lens.shapes.captions import PROMPTS as PROMPTS
from vision_lens.shapes.captions import caption_for as caption_for
from vision_lens.shapes.captions import prompts as prompts
from vision_lens.shapes.captions import sample_captions as sample_captions
from vision_lens.shapes.dataset import ShapesDataset as ShapesDataset
from vision_lens.shapes.dataset import ShapesSample as ShapesSample
from vision_lens.shapes.dataset import SpuriousDataset as SpuriousDataset
from vision_lens.shapes.rendering import MIN_IMAGE_SIZE as _MIN_IMAGE_SIZE
from vision_lens.shapes.rendering import cell_box as cell_box
from vision_lens.shapes.rendering import render_scene
from vision_lens.shapes.vocabulary import ANGULAR_SHAPES as ANGULAR_SHAPES
from vision_lens.shapes.vocabulary import BACKGROUNDS as BACKGROUNDS
from vision_lens.shapes.vocabulary import COLOR_RGB as COLOR_RGB
from vision_lens.shapes.vocabulary import COLORS as COLORS
from vision_lens.shapes.vocabulary import COUNT_WORDS as COUNT_WORDS
from vision_lens.shapes.vocabulary import LABEL_NAMES as LABEL_NAMES
from vision_lens.shapes.vocabulary import POSITIONS as POSITIONS
from vision_lens.shapes.vocabulary import ROUND_SHAPES as ROUND_SHAPES
from vision_lens.shapes.vocabulary import SHAPES as SHAPES
from vision_lens.shapes.vocabulary import SIZE_FRACTIONS as SIZE_FRACTIONS
from vision_lens.shapes.vocabulary import SIZES as SIZES
from vision_lens.shapes.vocabulary import TEXTURES as TEXTURES
from vision_lens.shapes.vocabulary import VOCABULARY as VOCABULARY
from vision_lens.shapes.vocabulary import (
    WrongTypeError,
    check_int,
    check_name,
    check_scenes,
    check_seed,
    did_you_mean,
)
from vision_lens.shapes.vocabulary import with_article as with_article

__all__ = ["generate", "labels", "spurious_split"]


def _validate_choice(
    name: str, values: Iterable[str] | None, vocab: tuple[str, ...]
) -> tuple[str, ...]:
    if values is None:
        return vocab
    if isinstance(values, str):
        values = (values,)
    if not isinstance(values, Iterable):
        raise WrongTypeError(
            f"{name} must be a list of names (some of {list(vocab)}) or None for all, got "
            f"{type(values).__name__} {values!r}."
        )
    values = tuple(values)
    for v in values:
        if not isinstance(v, str):
            raise WrongTypeError(
                f"{name} must hold names (strings from {list(vocab)}), got "
                f"{type(v).__name__} {v!r} in {list(values)!r}."
            )
    bad = [v for v in values if v not in vocab]
    if bad or not values:
        hint = did_you_mean(bad[0], vocab) if bad else ""
        raise ValueError(
            f"invalid {name} {bad if bad else '(empty)'};{hint} valid values are {list(vocab)}"
            + ("" if bad else f" (pass None for all {name})")
        )
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(
            f"{name} names {repeated[0]!r} twice ({list(values)!r}); each value is drawn "
            "uniformly, so a repeat would silently weight it: give each value once."
        )
    return values


def _parse_n_objects(n_objects: int | tuple[int, int] | Sequence[int]) -> tuple[int, int]:
    msg = (
        "n_objects must be an int in 1..4 or an inclusive (lo, hi) range with "
        f"1 <= lo <= hi <= 4, got {n_objects!r}"
    )
    if isinstance(n_objects, bool) or isinstance(n_objects, str | bytes | float):
        raise WrongTypeError(msg)
    if isinstance(n_objects, int | np.integer):
        lo = hi = int(n_objects)
    else:
        try:
            values = list(n_objects)  # type: ignore[call-overload]
        except TypeError:
            raise WrongTypeError(msg) from None
        if len(values) != 2:
            raise ValueError(msg)
        if any(isinstance(v, bool) or not isinstance(v, int | np.integer) for v in values):
            raise WrongTypeError(msg)
        lo, hi = (int(v) for v in values)
    if not 1 <= lo <= hi <= 4:
        raise ValueError(msg)
    return lo, hi


def _check_n(n: object) -> int:
    return check_int(n, "n (number of images)", minimum=1)


def _check_image_size(image_size: object) -> int:
    return check_int(
        image_size,
        "image_size",
        minimum=_MIN_IMAGE_SIZE,
        hint=" (legible from about 48; default 64)",
    )


def _assemble(
    cls: type[ShapesDataset],
    rngs: list[np.random.Generator],
    scenes: list[tuple[list[dict[str, str]], str]],
    image_size: int,
    caption_mode: str | None,
    **extra: np.ndarray | str | float,
) -> ShapesDataset:
    n = len(scenes)
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    masks: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    captions: list[str] = []
    for i, (rng, (objects, background)) in enumerate(zip(rngs, scenes, strict=True)):
        images[i], m, b = render_scene(rng, objects, background, image_size)
        masks.append(m)
        boxes.append(b)
        captions.append(caption_for(objects, background, rng, mode=caption_mode))
    foreground = np.stack([m.any(axis=0) for m in masks]) if n else np.zeros((0,), bool)
    return cls(
        images=images,
        captions=captions,
        attributes=[objs for objs, _ in scenes],
        backgrounds=[bg for _, bg in scenes],
        counts=np.array([len(objs) for objs, _ in scenes], dtype=np.int64),
        masks=masks,
        foreground=foreground,
        boxes=boxes,
        **extra,
    )


def _spawn(seq: np.random.SeedSequence, n: int) -> list[np.random.Generator]:
    """One independent generator per image (image ``i`` does not depend on ``n``)."""
    return [np.random.default_rng(child) for child in seq.spawn(n)]


def _pick(rng: np.random.Generator, values: Sequence[str]) -> str:
    return values[int(rng.integers(len(values)))]


def generate(
    n: int,
    seed: int = 0,
    n_objects: int | tuple[int, int] = (1, 4),
    image_size: int = 64,
    backgrounds: Iterable[str] | None = None,
    *,
    shapes: Iterable[str] | None = None,
    colors: Iterable[str] | None = None,
    sizes: Iterable[str] | None = None,
    textures: Iterable[str] | None = None,
    positions: Iterable[str] | None = None,
    caption_mode: str | None = None,
) -> ShapesDataset:
    """Generates ``n`` random shapes-world scenes with exact ground truth.

    Each scene has a background and ``n_objects`` objects in distinct 3x3 grid cells; every
    attribute is drawn uniformly from its (optionally restricted) vocabulary. Image ``i`` depends
    only on ``seed``, ``i`` and the other arguments, so ``generate(10)`` starts with
    ``generate(5)``.

    Args:
        n: Number of images (>= 1).
        seed: Seed for ``numpy.random.default_rng``; same arguments give identical output.
        n_objects: Exact object count (int) or inclusive ``(lo, hi)`` range, ``1 <= lo <= hi <= 4``.
        image_size: Image side in pixels (>= 32; default 64; legible from about 48).
        backgrounds: Allowed background names (default: all of :data:`BACKGROUNDS`).
        shapes: Allowed shapes (default: all of :data:`SHAPES`). Likewise ``colors``, ``sizes``,
            ``textures`` and ``positions`` (there must be at least as many positions as objects).
        caption_mode: Fix the caption mode (one of :data:`CAPTION_MODES`); default random.

    Returns:
        A :class:`ShapesDataset`.

    Raises:
        ValueError: For invalid ``n``, ``n_objects``, ``image_size``, unknown vocabulary names or
            caption mode.

    Example:
        >>> ds = generate(100, seed=0, n_objects=1, backgrounds=["water", "grass"])
        >>> ds.images.shape, set(ds.backgrounds) <= {"water", "grass"}
        ((100, 64, 64, 3), True)
        >>> ds.attributes[0]  # doctest: +SKIP
        [{'shape': 'star', 'color': 'red', 'size': 'large', 'position': 'top', 'texture': 'solid'}]
    """
    n = _check_n(n)
    seed = check_seed(seed)
    image_size = _check_image_size(image_size)
    lo, hi = _parse_n_objects(n_objects)
    bgs = _validate_choice("backgrounds", backgrounds, BACKGROUNDS)
    allowed = {
        "shape": _validate_choice("shapes", shapes, SHAPES),
        "color": _validate_choice("colors", colors, COLORS),
        "size": _validate_choice("sizes", sizes, SIZES),
        "texture": _validate_choice("textures", textures, TEXTURES),
    }
    pos = _validate_choice("positions", positions, POSITIONS)
    if len(pos) < hi:
        raise ValueError(f"need at least {hi} allowed positions for {hi} objects, got {list(pos)}")
    if caption_mode is not None:
        check_name(caption_mode, CAPTION_MODES, "caption_mode")

    rngs = _spawn(np.random.SeedSequence(seed), n)
    scenes = []
    for rng in rngs:
        k = int(rng.integers(lo, hi + 1))
        cells = rng.choice(len(pos), size=k, replace=False)
        objects = []
        for c in cells:
            obj = {key: _pick(rng, allowed[key]) for key in ("shape", "color", "size")}
            obj["position"] = pos[int(c)]
            obj["texture"] = _pick(rng, allowed["texture"])
            objects.append(obj)
        scenes.append((objects, _pick(rng, bgs)))
    return _assemble(ShapesDataset, rngs, scenes, image_size, caption_mode)


def spurious_split(
    n: int,
    split: str = "train",
    seed: int = 0,
    p_major: float = 0.95,
    image_size: int = 64,
) -> SpuriousDataset:
    """Waterbirds-style split: round vs angular shapes on water vs grass.

    Single-object scenes; the label is 1 for :data:`ROUND_SHAPES` and 0 for
    :data:`ANGULAR_SHAPES` (classes balanced), the place is 1 for water and 0 for grass. In
    ``"train"`` a fraction ``p_major`` of each class has the majority pairing (round on water,
    angular on grass); in ``"test"`` the pairing is reversed (round on grass, angular on water
    with the same fraction), so the rare training groups are common at test time. Counts are
    exact (``round(p_major * class size)``) and the order is shuffled. Train and test use
    different random streams for the same seed.

    Args:
        n: Number of images (>= 1).
        split: ``"train"`` or ``"test"``.
        seed: Random seed.
        p_major: Fraction of images with the split's majority pairing, in ``[0, 1]``.
        image_size: Image side in pixels.

    Returns:
        A :class:`SpuriousDataset`.

    Example:
        >>> tr = spurious_split(200, "train", seed=0)
        >>> float((tr.labels == tr.places).mean())
        0.95
        >>> te = spurious_split(200, "test", seed=0)
        >>> float((te.labels == te.places).mean())
        0.05
    """
    n = _check_n(n)
    image_size = _check_image_size(image_size)
    seed = check_seed(seed)
    if not isinstance(split, str):
        raise WrongTypeError(
            f"split must be 'train' or 'test', got {type(split).__name__} {split!r}"
        )
    if split not in ("train", "test"):
        raise ValueError(
            f"split must be 'train' or 'test', got {split!r}."
            + did_you_mean(split, ("train", "test"))
        )
    if isinstance(p_major, bool) or not isinstance(p_major, int | float | np.number):
        raise WrongTypeError(
            f"p_major must be a number in [0, 1], got {type(p_major).__name__} {p_major!r}"
        )
    if not 0.0 <= float(p_major) <= 1.0:
        raise ValueError(f"p_major must be in [0, 1], got {p_major!r}")
    split_id = 0 if split == "train" else 1
    seq = np.random.SeedSequence([int(seed), 0x5B, split_id])
    rng = np.random.default_rng(seq)

    labels_ = np.zeros(n, dtype=np.int64)
    labels_[: n // 2 + (n % 2) * int(rng.integers(2))] = 1
    agree = np.zeros(n, dtype=bool)  # place == label
    for lab in (0, 1):
        idx = np.flatnonzero(labels_ == lab)
        n_major = int(round(float(p_major) * len(idx)))
        agree_major = split == "train"
        agree[idx[:n_major]] = agree_major
        agree[idx[n_major:]] = not agree_major
    order = rng.permutation(n)
    labels_, agree = labels_[order], agree[order]
    places = np.where(agree, labels_, 1 - labels_)

    rngs = _spawn(seq, n)
    scenes = []
    for r, lab, place in zip(rngs, labels_, places, strict=True):
        obj = {
            "shape": _pick(r, ROUND_SHAPES if lab == 1 else ANGULAR_SHAPES),
            "color": _pick(r, COLORS),
            "size": _pick(r, SIZES),
            "position": _pick(r, POSITIONS),
            "texture": _pick(r, TEXTURES),
        }
        scenes.append(([obj], "water" if place == 1 else "grass"))
    ds = _assemble(
        SpuriousDataset,
        rngs,
        scenes,
        image_size,
        None,
        labels=labels_,
        places=places.astype(np.int64),
        groups=(2 * labels_ + places).astype(np.int64),
        split=split,
        p_major=float(p_major),
    )
    assert isinstance(ds, SpuriousDataset)
    return ds


def labels(dataset: ShapesDataset, attribute: str) -> np.ndarray:
    """Index of each image's attribute value in its vocabulary (single-object datasets).

    Args:
        dataset: A dataset whose images all have exactly one object (e.g.
            ``generate(n, n_objects=1)``). ``attribute="background"`` works for any dataset.
        attribute: One of ``shape``, ``color``, ``size``, ``position``, ``texture``,
            ``background``.

    Returns:
        ``int64 [n]`` indices into ``VOCABULARY[attribute]`` (e.g. :data:`COLORS`).

    Raises:
        ValueError: Unknown attribute, or an image with a number of objects other than one.

    Example:
        >>> ds = generate(5, seed=0, n_objects=1)
        >>> y = labels(ds, "color")
        >>> [COLORS[i] for i in y] == [a[0]["color"] for a in ds.attributes]
        True
    """
    check_scenes(dataset)
    check_name(attribute, tuple(VOCABULARY), "attribute")
    vocab = VOCABULARY[attribute]
    if attribute == "background":
        return np.array([vocab.index(b) for b in dataset.backgrounds], dtype=np.int64)
    bad = [i for i, a in enumerate(dataset.attributes) if len(a) != 1]
    if bad:
        raise ValueError(
            f"labels() needs exactly one object per image, but {len(bad)} image(s) have another "
            f"count (first: image {bad[0]} with {len(dataset.attributes[bad[0]])} objects); "
            "generate with n_objects=1"
        )
    return np.array([vocab.index(a[0][attribute]) for a in dataset.attributes], dtype=np.int64)
