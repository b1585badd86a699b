"""Rendering: draws a scene's ground truth into an image, with each object's exact pixel mask.

The canvas is a 3x3 grid (:func:`cell_box`); each object fills a box of its size inside its cell
(a 1 px margin keeps neighbours apart), drawn 4x supersampled and thresholded at 50% cover, and
is filled with its exact colour plus, for patterned textures, a darker shade of it on a minority
of its pixels. Backgrounds are procedural textures (value noise, waves, blades of grass, ...).
Pure numpy + PIL; all randomness comes from the generator passed in.

Example:
    >>> import numpy as np
    >>> obj = dict(shape="square", color="red", size="large", position="center", texture="solid")
    >>> image, masks, boxes = render_scene(np.random.default_rng(0), [obj], "plain", 64)
    >>> image.shape, masks.shape, bool((image[masks[0]] == COLOR_RGB["red"]).all())
    ((64, 64, 3), (1, 64, 64), True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from vision_lens.shapes.vocabulary import (
    COLOR_RGB,
    POSITIONS,
    SIZE_FRACTIONS,
    WrongTypeError,
    check_int,
    check_objects,
    did_you_mean,
)

__all__ = ["MIN_IMAGE_SIZE", "cell_box", "render_scene"]

#: The smallest image side the renderer draws (every object needs a few pixels in its cell).
MIN_IMAGE_SIZE = 32

_SUPERSAMPLE = 4
_TEXTURE_SHADE = 0.55  # patterned pixels are the object colour times this


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
    if isinstance(position, str):
        if position not in POSITIONS:
            raise ValueError(
                f"unknown position {position!r}.{did_you_mean(position, POSITIONS)} The valid "
                f"values are {list(POSITIONS)} or their indices 0..8."
            )
        p = POSITIONS.index(position)
    elif isinstance(position, bool) or not isinstance(position, int | np.integer):
        raise WrongTypeError(
            f"position must be a name from {list(POSITIONS)} or its index 0..8, got "
            f"{type(position).__name__} {position!r}."
        )
    else:
        p = int(position)
    if not 0 <= p < len(POSITIONS):
        raise ValueError(f"position index must be in 0..8, got {p}")
    check_int(image_size, "image_size", minimum=3, hint=" (one pixel per grid cell at least)")
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


def _smooth_noise(
    rng: np.random.Generator, h: int, w: int, cells_y: int, cells_x: int
) -> np.ndarray:
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


def render_scene(
    rng: np.random.Generator,
    objects: Sequence[dict[str, str]],
    background: str,
    image_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws one scene: its background, then each object in its cell.

    Args:
        rng: Random generator; draws the background texture, then each object's offset inside
            its cell, in object order.
        objects: One dict per object (keys ``shape``, ``color``, ``size``, ``position``,
            ``texture``), in distinct cells.
        background: Background name (one of :data:`~vision_lens.shapes.vocabulary.BACKGROUNDS`).
        image_size: Image side in pixels.

    Returns:
        ``(image, masks, boxes)``: ``uint8 [H, W, 3]``, ``bool [k, H, W]`` (each object's
        pixels) and ``int64 [k, 4]`` boxes ``(x0, y0, x1, y1)``, end-exclusive.

    Example:
        >>> import numpy as np
        >>> obj = dict(shape="ring", color="blue", size="small", position="top", texture="dotted")
        >>> _, masks, boxes = render_scene(np.random.default_rng(1), [obj], "water", 64)
        >>> x0, y0, x1, y1 = boxes[0]
        >>> bool(masks[0].any()), bool(21 <= x0 < x1 <= 43 and 0 <= y0 < y1 <= 21)
        (True, True)
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy Generator (np.random.default_rng(seed)), got "
            f"{type(rng).__name__} {rng!r}."
        )
    check_objects(objects, background, "objects")
    cells = [obj["position"] for obj in objects]
    if len(set(cells)) != len(cells):
        twice = next(c for c in cells if cells.count(c) > 1)
        raise ValueError(
            f"objects puts two objects in the cell {twice!r}; each object needs its own cell "
            "(their pixels and masks would overlap)."
        )
    S = check_int(image_size, "image_size", minimum=MIN_IMAGE_SIZE)
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
