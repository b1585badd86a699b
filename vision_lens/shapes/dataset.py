"""The containers of generated scenes: :class:`ShapesDataset` (images with exact ground truth),
one image of it (:class:`ShapesSample`) and the Waterbirds-style :class:`SpuriousDataset`.

They are filled by :func:`vision_lens.shapes.generate` and
:func:`vision_lens.shapes.spurious_split`.

Example:
    >>> from vision_lens.shapes import generate
    >>> ds = generate(3, seed=0, n_objects=1)
    >>> isinstance(ds, ShapesDataset), ds[0].attributes == ds.attributes[0]
    (True, True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from vision_lens.shapes.captions import sample_captions
from vision_lens.shapes.vocabulary import WrongTypeError, check_int

__all__ = ["ShapesDataset", "ShapesSample", "SpuriousDataset"]


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
        >>> from vision_lens.shapes import generate
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
        >>> from vision_lens.shapes import generate
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

    def _index(self, i: object) -> int:
        n = len(self)
        if isinstance(i, bool) or not isinstance(i, int | np.integer):
            raise WrongTypeError(
                f"an image index must be an int, got {type(i).__name__} {i!r}; use "
                "dataset.subset(indices) for several images."
            )
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} images")
        return i % n

    def __getitem__(self, i: int) -> ShapesSample:
        i = self._index(i)
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
            >>> from vision_lens.shapes import generate
            >>> generate(1).to_pil(0).mode
            'RGB'
        """
        return Image.fromarray(self.images[self._index(i)], mode="RGB")

    def subset(self, indices: Sequence[int] | np.ndarray | slice) -> ShapesDataset:
        """A new dataset of the same class holding only the given images.

        Args:
            indices: Integer indices, a boolean mask of length ``len(self)`` or a slice.

        Returns:
            The selected images with all their ground truth (arrays are copies).

        Example:
            >>> from vision_lens.shapes import generate
            >>> ds = generate(6, seed=3)
            >>> sub = ds.subset([4, 1])
            >>> sub.captions == [ds.captions[4], ds.captions[1]]
            True
        """
        n = len(self)
        if isinstance(indices, str | bytes | bool) or indices is None:
            raise WrongTypeError(
                f"indices must be a sequence of ints, a boolean mask or a slice, got "
                f"{type(indices).__name__} {indices!r}."
            )
        idx = np.arange(n)[indices] if isinstance(indices, slice) else np.asarray(indices)
        if idx.size == 0 and idx.dtype != bool:
            idx = idx.astype(np.int64)
        if idx.dtype != bool and not np.issubdtype(idx.dtype, np.integer):
            raise WrongTypeError(
                f"indices must be ints or a boolean mask, got {idx.dtype} values {indices!r}."
            )
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
            >>> from vision_lens.shapes import generate
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
            >>> from vision_lens.shapes import generate
            >>> generate(4).grid(ncols=2).size
            (134, 134)
        """
        ncols = check_int(ncols, "ncols", minimum=1)
        scale = check_int(scale, "scale", minimum=1)
        pad = check_int(pad, "pad", minimum=0)
        idx = list(range(min(16, len(self)))) if indices is None else list(indices)
        if not idx:
            raise ValueError("grid needs at least one image: indices is empty")
        idx = [self._index(i) for i in idx]
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
        >>> from vision_lens.shapes import spurious_split
        >>> ds = spurious_split(20, split="train", seed=0)
        >>> bool((ds.groups == 2 * ds.labels + ds.places).all())
        True
    """

    labels: np.ndarray
    places: np.ndarray
    groups: np.ndarray
    split: str = "train"
    p_major: float = 0.95
