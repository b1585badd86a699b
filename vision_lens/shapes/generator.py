"""Shapes world: a procedural image generator with exact ground truth.

Every image is a textured background (``water``, ``grass``, ...) with one to four coloured,
textured shapes, each in its own cell of a 3x3 grid. For every object the generator records its
``shape``, ``color``, ``size``, ``position`` and ``texture`` and its exact pixel mask, so that a
model trained on these images can be interpreted against ground truth (which heads encode colour,
zero-shot segmentation IoU against the true masks, ...).

Everything is pure numpy + PIL and deterministic given the arguments (including the seed).

Example:
    >>> ds = generate(8, seed=0, n_objects=1)
    >>> ds.images.shape, ds.images.dtype
    ((8, 64, 64, 3), dtype('uint8'))
    >>> sorted(ds.attributes[0][0])
    ['color', 'position', 'shape', 'size', 'texture']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

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

# ----------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------

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

#: Names of the binary labels of :func:`spurious_split`.
LABEL_NAMES: tuple[str, ...] = ("angular", "round")

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

_SUPERSAMPLE = 4
_MIN_IMAGE_SIZE = 32
_TEXTURE_SHADE = 0.55  # patterned pixels are the object colour times this


# ----------------------------------------------------------------------------------------------
# Data containers
# ----------------------------------------------------------------------------------------------


@dataclass
class ShapesSample:
    """One image of a :class:`ShapesDataset` with its ground truth.

    Attributes:
        image: ``uint8 [H, W, 3]`` RGB image.
        caption: The caption drawn at generation time.
        attributes: One dict per object with keys ``shape``, ``color``, ``size``, ``position``,
            ``texture``.
        masks: ``bool [n_objects, H, W]``, the visible pixels of each object.
        foreground: ``bool [H, W]``, union of ``masks``.
        background: Name of the background (one of :data:`BACKGROUNDS`).
        boxes: ``int [n_objects, 4]`` bounding boxes ``(x0, y0, x1, y1)``, end-exclusive.

    Example:
        >>> s = generate(2, seed=1, n_objects=1)[0]
        >>> s.masks.shape[0], s.foreground.shape
        (1, (64, 64))
    """

    image: np.ndarray
    caption: str
    attributes: list[dict[str, str]]
    masks: np.ndarray
    foreground: np.ndarray
    background: str
    boxes: np.ndarray


@dataclass
class ShapesDataset:
    """A batch of shapes-world images with exact ground truth.

    Attributes:
        images: ``uint8 [n, H, W, 3]`` RGB images.
        captions: One caption per image (see :func:`caption_for`).
        attributes: Per image, a list with one dict per object (keys ``shape``, ``color``,
            ``size``, ``position``, ``texture``; all strings), in drawing order.
        backgrounds: Background name per image.
        counts: ``int [n]``, number of objects per image.
        masks: Per image, ``bool [n_objects_i, H, W]``, each object's visible pixels, in the order
            of ``attributes``.
        foreground: ``bool [n, H, W]``, the union of each image's masks.
        boxes: Per image, ``int [n_objects_i, 4]`` bounding boxes ``(x0, y0, x1, y1)``
            (end-exclusive) of the objects.

    Example:
        >>> ds = generate(4, seed=0, n_objects=(1, 2))
        >>> len(ds), ds.counts.tolist() == [len(a) for a in ds.attributes]
        (4, True)
        >>> ds.to_pil(0).size
        (64, 64)
        >>> len(ds.subset([0, 2]))
        2
    """

    images: np.ndarray
    captions: list[str]
    attributes: list[list[dict[str, str]]]
    backgrounds: list[str]
    counts: np.ndarray
    masks: list[np.ndarray]
    foreground: np.ndarray
    boxes: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> ShapesSample:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} images")
        i %= n
        return ShapesSample(
            image=self.images[i],
            caption=self.captions[i],
            attributes=self.attributes[i],
            masks=self.masks[i],
            foreground=self.foreground[i],
            background=self.backgrounds[i],
            boxes=self.boxes[i],
        )

    @property
    def image_size(self) -> int:
        """Height (= width) of the images in pixels."""
        return int(self.images.shape[1])

    def to_pil(self, i: int) -> Image.Image:
        """Image ``i`` as a PIL RGB image.

        Example:
            >>> generate(1).to_pil(0).mode
            'RGB'
        """
        return Image.fromarray(self.images[i], mode="RGB")

    def subset(self, indices: Sequence[int] | np.ndarray | slice) -> ShapesDataset:
        """A new dataset of the same class holding only the given images.

        Args:
            indices: Integer indices, a boolean mask of length ``len(self)`` or a slice.

        Returns:
            The selected images with all their ground truth (arrays are copies).

        Example:
            >>> ds = generate(6, seed=3)
            >>> sub = ds.subset([4, 1])
            >>> sub.captions == [ds.captions[4], ds.captions[1]]
            True
        """
        n = len(self)
        idx = np.arange(n)[indices] if isinstance(indices, slice) else np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise ValueError(f"boolean mask must have shape ({n},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"indices out of range for a dataset of {n} images")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n:
                values[f.name] = v[idx].copy()
            elif isinstance(v, list) and len(v) == n:
                values[f.name] = [v[i] for i in idx]
            else:
                values[f.name] = v
        return type(self)(**values)

    def random_captions(self, seed: int = 0, mode: str | None = None) -> list[str]:
        """Draws a fresh caption for every image (same as :func:`sample_captions`).

        Example:
            >>> ds = generate(3, seed=0)
            >>> ds.random_captions(1) == ds.random_captions(1)
            True
        """
        return sample_captions(self, seed=seed, mode=mode)

    def grid(
        self, indices: Sequence[int] | None = None, ncols: int = 4, scale: int = 1, pad: int = 2
    ) -> Image.Image:
        """Tiles images into one PIL image (for a quick look).

        Args:
            indices: Which images (default: the first 16).
            ncols: Images per row.
            scale: Integer upscaling factor (nearest neighbour, keeps pixels crisp).
            pad: White padding between tiles, in output pixels.

        Example:
            >>> generate(4).grid(ncols=2).size
            (134, 134)
        """
        idx = list(range(min(16, len(self)))) if indices is None else list(indices)
        if not idx:
            raise ValueError("grid needs at least one image")
        ncols = max(1, min(ncols, len(idx)))
        nrows = -(-len(idx) // ncols)
        s = self.image_size * scale
        out = np.full((nrows * (s + pad) + pad, ncols * (s + pad) + pad, 3), 255, np.uint8)
        for k, i in enumerate(idx):
            r, c = divmod(k, ncols)
            tile = self.images[i].repeat(scale, 0).repeat(scale, 1)
            y, x = pad + r * (s + pad), pad + c * (s + pad)
            out[y : y + s, x : x + s] = tile
        return Image.fromarray(out, mode="RGB")


@dataclass
class SpuriousDataset(ShapesDataset):
    """Single-object shapes on ``water``/``grass`` with a spurious place correlation.

    In the style of Waterbirds: the label is the shape class (1 = round, 0 = angular), the place
    is the background (1 = water, 0 = grass). See :func:`spurious_split`.

    Attributes:
        labels: ``int [n]``, 1 = round shape (:data:`ROUND_SHAPES`), 0 = angular.
        places: ``int [n]``, 1 = water, 0 = grass.
        groups: ``int [n]``, ``2 * label + place`` (0 angular/grass, 1 angular/water,
            2 round/grass, 3 round/water).
        split: ``"train"`` (round mostly on water) or ``"test"`` (round mostly on grass).
        p_major: Probability that label and place follow the split's majority pairing.

    Example:
        >>> ds = spurious_split(20, split="train", seed=0)
        >>> bool((ds.groups == 2 * ds.labels + ds.places).all())
        True
    """

    labels: np.ndarray
    places: np.ndarray
    groups: np.ndarray
    split: str = "train"
    p_major: float = 0.95


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------


def _cell_edges(image_size: int) -> list[int]:
    return [int(round(k * image_size / 3)) for k in range(4)]


def cell_box(position: str | int, image_size: int = 64) -> tuple[int, int, int, int]:
    """Pixel box ``(x0, y0, x1, y1)`` (end-exclusive) of a 3x3 grid cell.

    Args:
        position: A name from :data:`POSITIONS` or its index.
        image_size: Image side in pixels.

    Example:
        >>> cell_box("top left"), cell_box("center"), cell_box(8)
        ((0, 0, 21, 21), (21, 21, 43, 43), (43, 43, 64, 64))
    """
    p = POSITIONS.index(position) if isinstance(position, str) else int(position)
    if not 0 <= p < len(POSITIONS):
        raise ValueError(f"position index must be in 0..8, got {p}")
    e = _cell_edges(image_size)
    r, c = divmod(p, 3)
    return e[c], e[r], e[c + 1], e[r + 1]


def _object_extent(shape: str, size: str, image_size: int) -> tuple[int, int]:
    """Bounding-box width and height of an object."""
    e = _cell_edges(image_size)
    usable = min(b - a for a, b in zip(e[:-1], e[1:], strict=True)) - 2
    side = max(3, int(round(SIZE_FRACTIONS[size] * usable)))
    if shape == "oval":
        return side, max(3, int(round(0.6 * side)))
    return side, side


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices of a polygonal shape, normalised to fill the unit square."""
    if shape == "square":
        pts = [(0, 0), (1, 0), (1, 1), (0, 1)]
    elif shape == "triangle":
        pts = [(0.5, 0), (1, 1), (0, 1)]
    elif shape == "diamond":
        pts = [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)]
    elif shape == "cross":
        a, b = 0.32, 0.68
        pts = [(a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b)]
        pts += [(0, a), (a, a)]
    elif shape == "star":
        k = np.arange(10)
        r = np.where(k % 2 == 0, 1.0, 0.5)
        ang = -np.pi / 2 + k * np.pi / 5
        pts = list(zip(r * np.cos(ang), r * np.sin(ang), strict=True))
    else:  # pragma: no cover - guarded by callers
        raise ValueError(f"not a polygon shape: {shape!r}")
    p = np.asarray(pts, dtype=np.float64)
    p -= p.min(0)
    return p / p.max(0)


@lru_cache(maxsize=1024)
def _shape_mask(shape: str, w: int, h: int) -> np.ndarray:
    """Binary mask ``[h, w]`` of a shape filling a ``w x h`` box (4x supersampled, 50% cover)."""
    s = _SUPERSAMPLE
    W, H = w * s, h * s
    canvas = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(canvas)
    if shape in ("circle", "oval"):
        draw.ellipse([0, 0, W - 1, H - 1], fill=255)
    elif shape == "ring":
        draw.ellipse([0, 0, W - 1, H - 1], fill=255)
        iw, ih = 0.25 * W, 0.25 * H
        draw.ellipse([iw, ih, W - 1 - iw, H - 1 - ih], fill=0)
    else:
        pts = _unit_polygon(shape) * [W - 1, H - 1]
        draw.polygon([tuple(p) for p in pts.tolist()], fill=255)
    hi = np.asarray(canvas, dtype=np.float32).reshape(h, s, w, s).mean(axis=(1, 3))
    mask = hi >= 127.5
    if not mask.any():  # degenerate tiny object: keep whatever was touched
        mask = hi > 0
    mask.setflags(write=False)
    return mask


@lru_cache(maxsize=4096)
def _texture_pattern(shape: str, w: int, h: int, texture: str) -> np.ndarray:
    """Which pixels of the object's box get the shaded colour (``bool [h, w]``)."""
    yy, xx = np.mgrid[0:h, 0:w]
    if texture == "solid":
        pat = np.zeros((h, w), dtype=bool)
    elif texture == "striped":
        pat = (xx + yy) % 4 == 0
    elif texture == "dotted":
        pat = ((xx + 1) % 5 < 2) & ((yy + 1) % 5 < 2)
    elif texture == "checkered":
        pat = (xx // 3 + yy // 3) % 2 == 1
    else:  # pragma: no cover - guarded by callers
        raise ValueError(f"unknown texture {texture!r}")
    mask = _shape_mask(shape, w, h)
    # Keep the object colour on the majority of the object's pixels.
    if (pat & mask).sum() * 2 > mask.sum():
        pat = ~pat
    pat = pat & mask
    pat.setflags(write=False)
    return pat


# ----------------------------------------------------------------------------------------------
# Backgrounds
# ----------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells_y: int, cells_x: int):
    """Bilinearly interpolated value noise in [0, 1] with ``cells`` lattice cells per axis."""
    g = rng.random((cells_y + 1, cells_x + 1))
    y = np.linspace(0, cells_y, h, endpoint=False) + 0.5 * cells_y / h
    x = np.linspace(0, cells_x, w, endpoint=False) + 0.5 * cells_x / w
    y0 = np.minimum(y.astype(int), cells_y - 1)
    x0 = np.minimum(x.astype(int), cells_x - 1)
    fy = (y - y0)[:, None]
    fx = (x - x0)[None, :]
    fy = fy * fy * (3 - 2 * fy)
    fx = fx * fx * (3 - 2 * fx)
    a = g[y0][:, x0]
    b = g[y0][:, x0 + 1]
    c = g[y0 + 1][:, x0]
    d = g[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _lerp(t: np.ndarray, lo: Sequence[float], hi: Sequence[float]) -> np.ndarray:
    lo_a = np.asarray(lo, dtype=np.float64)
    hi_a = np.asarray(hi, dtype=np.float64)
    return lo_a + np.clip(t, 0, 1)[..., None] * (hi_a - lo_a)


def _bg_plain(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    g = rng.uniform(105, 150)
    grad = np.linspace(-1, 1, h)[:, None] * rng.uniform(-6, 6)
    v = g + grad + 2.5 * rng.standard_normal((h, w))
    return np.repeat(v[..., None], 3, axis=2)


def _bg_water(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    scale = 64.0 / h
    f = rng.uniform(0.45, 0.7) * scale
    k = rng.uniform(0.12, 0.25) * scale
    amp = rng.uniform(1.5, 3.0) / scale
    wave = np.sin(f * (yy + amp * np.sin(k * xx + rng.uniform(0, 2 * np.pi))) + rng.uniform(0, 7))
    wave2 = np.sin(0.5 * f * yy + 0.3 * k * xx + rng.uniform(0, 2 * np.pi))
    t = 0.5 + 0.3 * wave + 0.15 * wave2 + 0.06 * rng.standard_normal((h, w))
    t = t + rng.uniform(-0.1, 0.1)
    return _lerp(t, (55, 85, 115), (135, 160, 182))


def _bg_grass(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    # Vertical blades: per-column noise stretched vertically, slightly slanted, plus a soft
    # large-scale variation and pixel noise.
    blade_len = max(3, h // 10)
    rows = h // blade_len + 2
    col = rng.random((rows, w + h))
    yy, xx = np.mgrid[0:h, 0:w]
    slant = rng.uniform(-0.35, 0.35)
    xs = np.clip((xx + slant * yy).astype(int) + h // 2, 0, w + h - 1)
    ys = (yy + rng.integers(0, blade_len)) // blade_len
    blades = col[ys, xs]
    fine = rng.random((h, w))
    big = _smooth_noise(rng, h, w, 2, 2)
    t = 0.5 * blades + 0.25 * fine + 0.35 * big - 0.05
    return _lerp(t, (50, 72, 40), (128, 150, 92))


def _bg_sand(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    scale = 64.0 / h
    ang = rng.uniform(-0.5, 0.5)
    ripple = np.sin(
        (np.sin(ang) * xx + np.cos(ang) * yy) * rng.uniform(0.7, 1.0) * scale + rng.uniform(0, 7)
    )
    t = 0.55 + 0.12 * ripple + 0.14 * rng.standard_normal((h, w))
    t = t + 0.25 * (_smooth_noise(rng, h, w, 3, 3) - 0.5)
    return _lerp(t, (160, 140, 105), (215, 200, 165))


def _bg_sky(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    grad = np.linspace(0, 1, h)[:, None] * np.ones((1, w))
    base = _lerp(grad + rng.uniform(-0.15, 0.15), (110, 140, 180), (165, 185, 208))
    cloud = _smooth_noise(rng, h, w, 3, 4) * 0.6 + _smooth_noise(rng, h, w, 6, 8) * 0.4
    thr = rng.uniform(0.5, 0.62)
    c = np.clip((cloud - thr) / 0.15, 0, 1)[..., None] * 0.85
    return base * (1 - c) + np.array([222.0, 226.0, 232.0]) * c


_BACKGROUND_FNS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "plain": _bg_plain,
    "water": _bg_water,
    "grass": _bg_grass,
    "sand": _bg_sand,
    "sky": _bg_sky,
}


# ----------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------


def _shade(rgb: tuple[int, int, int]) -> np.ndarray:
    return np.round(np.asarray(rgb, dtype=np.float64) * _TEXTURE_SHADE).astype(np.uint8)


def _render_scene(
    rng: np.random.Generator,
    objects: list[dict[str, str]],
    background: str,
    image_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws one scene; returns ``(image [H, W, 3] uint8, masks [k, H, W], boxes [k, 4])``."""
    S = image_size
    bg = _BACKGROUND_FNS[background](rng, S, S)
    image = np.clip(np.round(bg), 0, 255).astype(np.uint8)
    masks = np.zeros((len(objects), S, S), dtype=bool)
    boxes = np.zeros((len(objects), 4), dtype=np.int64)
    for j, obj in enumerate(objects):
        w, h = _object_extent(obj["shape"], obj["size"], S)
        cx0, cy0, cx1, cy1 = cell_box(obj["position"], S)
        # 1 px margin inside the cell so that neighbouring objects never touch.
        x0 = int(rng.integers(cx0 + 1, max(cx0 + 1, cx1 - 1 - w) + 1))
        y0 = int(rng.integers(cy0 + 1, max(cy0 + 1, cy1 - 1 - h) + 1))
        m = _shape_mask(obj["shape"], w, h)
        pat = _texture_pattern(obj["shape"], w, h, obj["texture"])
        rgb = COLOR_RGB[obj["color"]]
        region = image[y0 : y0 + h, x0 : x0 + w]
        region[m] = rgb
        region[pat] = _shade(rgb)
        masks[j, y0 : y0 + h, x0 : x0 + w] = m
        boxes[j] = (x0, y0, x0 + w, y0 + h)
    return image, masks, boxes


def _validate_choice(name: str, values: Iterable[str] | None, vocab: tuple[str, ...]):
    if values is None:
        return vocab
    if isinstance(values, str):
        values = (values,)
    values = tuple(values)
    bad = [v for v in values if v not in vocab]
    if bad or not values:
        raise ValueError(
            f"invalid {name} {bad if bad else '(empty)'}; valid values are {list(vocab)}"
        )
    return values


def _parse_n_objects(n_objects: int | tuple[int, int] | Sequence[int]) -> tuple[int, int]:
    msg = (
        "n_objects must be an int in 1..4 or an inclusive (lo, hi) range with "
        f"1 <= lo <= hi <= 4, got {n_objects!r}"
    )
    if isinstance(n_objects, bool):
        raise ValueError(msg)
    if isinstance(n_objects, int | np.integer):
        lo = hi = int(n_objects)
    else:
        try:
            lo, hi = (int(v) for v in n_objects)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ValueError(msg) from None
    if not 1 <= lo <= hi <= 4:
        raise ValueError(msg)
    return lo, hi


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n (number of images) must be an integer >= 1, got {n!r}")
    return int(n)


def _check_image_size(image_size: Any) -> int:
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int | np.integer)
        or image_size < _MIN_IMAGE_SIZE
    ):
        raise ValueError(f"image_size must be an integer >= {_MIN_IMAGE_SIZE}, got {image_size!r}")
    return int(image_size)


def _assemble(
    cls: type[ShapesDataset],
    rngs: list[np.random.Generator],
    scenes: list[tuple[list[dict[str, str]], str]],
    image_size: int,
    caption_mode: str | None,
    **extra: Any,
) -> ShapesDataset:
    n = len(scenes)
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    masks: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    captions: list[str] = []
    for i, (rng, (objects, background)) in enumerate(zip(rngs, scenes, strict=True)):
        images[i], m, b = _render_scene(rng, objects, background, image_size)
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
    if caption_mode is not None and caption_mode not in CAPTION_MODES:
        raise ValueError(f"unknown caption_mode {caption_mode!r}; valid: {list(CAPTION_MODES)}")

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
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
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


# ----------------------------------------------------------------------------------------------
# Captions and prompts
# ----------------------------------------------------------------------------------------------


def with_article(phrase: str) -> str:
    """Prefixes ``a`` or ``an`` depending on the first letter of ``phrase``.

    Example:
        >>> with_article("orange circle"), with_article("red oval")
        ('an orange circle', 'a red oval')
    """
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


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
    if not attributes:
        raise ValueError("a scene needs at least one object")
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; valid: {list(BACKGROUNDS)}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    k = len(attributes)
    if k >= len(COUNT_WORDS):
        raise ValueError(f"at most {len(COUNT_WORDS) - 1} objects per scene, got {k}")
    if mode is None:
        modes = _SINGLE_MODES if k == 1 else _MULTI_MODES
        mode = modes[int(rng.integers(len(modes)))]
    elif mode not in CAPTION_MODES:
        raise ValueError(f"unknown caption mode {mode!r}; valid: {list(CAPTION_MODES)}")

    if mode == "count":
        return f"{_plural(k, 'shape')} on {_BG_SHORT[background]}"
    if mode == "background":
        return f"{with_article('object') if k == 1 else _plural(k, 'object')} on " + (
            f"a {background} background"
        )
    if mode == "one_of":
        if k == 1:
            return _describe(attributes[0], _MODE_FIELDS["color_shape"])
        obj = attributes[int(rng.integers(k))]
        other = "other shape" if k == 2 else "other shapes"
        return f"{_describe(obj, _MODE_FIELDS['color_shape'])} and {COUNT_WORDS[k - 1]} {other}"
    fields = _MODE_FIELDS[mode]
    parts = [_describe(obj, fields) for obj in attributes]
    if k == 1:
        text = parts[0]
    else:
        text = f"{_plural(k, 'object')}: {_join(parts)}"
    if mode == "full":
        text += ("," if k > 1 else "") + f" on a {background} background"
    return text


def sample_captions(dataset: ShapesDataset, seed: int = 0, mode: str | None = None) -> list[str]:
    """Draws a fresh random caption for every image of ``dataset`` (e.g. one per epoch).

    Args:
        dataset: The images' ground truth is read from here.
        seed: Seed; the same seed gives the same captions.
        mode: Fix the caption mode (default: random per image).

    Example:
        >>> ds = generate(4, seed=0)
        >>> caps = sample_captions(ds, seed=1)
        >>> len(caps), caps == sample_captions(ds, seed=1)
        (4, True)
    """
    rng = np.random.default_rng([int(seed), 0xCA])
    return [
        caption_for(attrs, bg, rng, mode=mode)
        for attrs, bg in zip(dataset.attributes, dataset.backgrounds, strict=True)
    ]


def prompts(attribute: str) -> list[str]:
    """Zero-shot prompts for every value of an attribute, in vocabulary order.

    Uses :data:`PROMPTS` with the article fixed for vowels ("an orange object", "an oval").

    Example:
        >>> prompts("shape")[:3]
        ['a circle', 'a square', 'a triangle']
        >>> prompts("color")[4]
        'an orange object'
    """
    if attribute not in PROMPTS:
        raise ValueError(f"no prompt template for {attribute!r}; valid: {list(PROMPTS)}")
    out = []
    for v in VOCABULARY[attribute]:
        text = PROMPTS[attribute].format(v)
        if text.startswith("a ") and text[2:3] in "aeiou":
            text = "an " + text[2:]
        out.append(text)
    return out


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
    if attribute not in VOCABULARY:
        raise ValueError(f"unknown attribute {attribute!r}; valid: {list(VOCABULARY)}")
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
