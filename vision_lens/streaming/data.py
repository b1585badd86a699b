"""What a collection pass reads: a dataset of images, indexed, in a fixed order.

:func:`as_image_source` turns what the user passes (a torch ``Dataset``, a Hugging Face
``datasets`` split, a folder of image files) into an :class:`ImageSource`: ``len`` images whose
batch ``[start, stop)`` is always the same tensor, so a resumed or distributed pass sees exactly
the batches of an uninterrupted single-process one. :func:`data_fingerprint` names the data in
the manifest.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vision_lens.errors import InputWarning

__all__ = ["IMAGE_SUFFIXES", "ImageFolder", "ImageSource", "as_image_source", "data_fingerprint"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


def _to_rgb(image: Any) -> Any:
    """An 8-bit RGB PIL image (16-bit and float images scaled, not clipped to white)."""
    from PIL import Image

    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image).astype(np.float64)
        if image.mode.startswith("I;16") or (image.mode == "I" and values.max() > 255):
            values = values / 257.0
        elif image.mode == "F" and values.size and values.max() <= 1.0:
            values = values * 255.0
        return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


class ImageFolder(torch.utils.data.Dataset):
    """The image files of a folder (sorted by name), read lazily as RGB PIL images.

    Files that PIL cannot identify are left out when the folder is listed, and named in one
    :class:`~vision_lens.InputWarning`.

    Args:
        folder: The folder.
        transform: Applied to each PIL image (``model.preprocess``).

    Raises:
        FileNotFoundError: The folder does not exist.
        NotADirectoryError: It is a file.
        ValueError: It holds no readable image file.

    Example:
        >>> ImageFolder("/no/such/folder")
        Traceback (most recent call last):
        ...
        FileNotFoundError: images folder '/no/such/folder' does not exist; pass a folder of ...
    """

    def __init__(self, folder: str | os.PathLike, transform: Callable[[Any], Tensor] | None = None):
        from PIL import Image

        path = Path(folder)
        if not path.exists():
            raise FileNotFoundError(
                f"images folder {str(folder)!r} does not exist; pass a folder of image files."
            )
        if not path.is_dir():
            raise NotADirectoryError(
                f"images {str(folder)!r} is a file, not a folder; pass the folder that holds "
                "the images."
            )
        candidates = sorted(
            p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        self.files: list[Path] = []
        skipped = []
        for file in candidates:
            try:
                with Image.open(file):  # reads the header only
                    pass
                self.files.append(file)
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                skipped.append(f"{file.name} ({type(error).__name__})")
        if not self.files:
            raise ValueError(
                f"No readable images ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}; point it "
                "at a folder of image files."
            )
        if skipped:
            warnings.warn(
                f"skipped {len(skipped)} of {len(candidates)} images: {', '.join(skipped)}",
                InputWarning,
                stacklevel=2,
            )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Any:
        from PIL import Image

        file = self.files[index]
        try:
            with Image.open(file) as image:
                image.load()
                rgb = _to_rgb(image)
        except OSError as error:  # truncated after the header was read
            raise OSError(
                f"cannot read image {str(file)!r}: {error}; remove or replace it."
            ) from None
        return rgb if self.transform is None else self.transform(rgb)


class ImageSource:
    """``len`` images, read in batches ``[start, stop)`` of preprocessed tensors (and labels).

    Made by :func:`as_image_source`; ``batch(start, stop)`` returns ``(images, labels)`` with
    ``images [stop - start, 3, H, W]`` and ``labels`` a tensor or ``None``.
    """

    def __init__(self, dataset: Any, preprocess: Callable[[Any], Tensor] | None, name: str):
        self.dataset = dataset
        self.preprocess = preprocess
        self.name = name

    def __len__(self) -> int:
        return len(self.dataset)

    def item(self, index: int) -> tuple[Tensor, Any]:
        item = self.dataset[index]
        label = None
        if isinstance(item, dict):
            if "image" not in item:
                raise ValueError(
                    f"Dataset items are dicts without an 'image' key (keys: {sorted(item)}); "
                    "pass a dataset whose items have 'image' (a Hugging Face image dataset)."
                )
            image, label = item["image"], item.get("label")
        elif isinstance(item, list | tuple):
            image, label = item[0], (item[1] if len(item) > 1 else None)
        else:
            image = item
        if not isinstance(image, Tensor):
            if self.preprocess is None:
                raise TypeError(
                    f"Dataset item {index} is a {type(image).__name__}, not a tensor, and the "
                    "model has no preprocess; pass HookedViT(..., preprocess=...) or a dataset "
                    "of preprocessed tensors."
                )
            if hasattr(image, "convert"):
                image = _to_rgb(image)
            image = self.preprocess(image)
        if image.dim() != 3:
            raise ValueError(
                f"Dataset item {index} is an image of shape {tuple(image.shape)}; each item "
                "must be one image [3, H, W] (or a PIL image)."
            )
        return image, label

    def batch(self, start: int, stop: int, labels: bool = False) -> tuple[Tensor, Tensor | None]:
        """Images ``[start, stop)`` stacked, and their labels (with ``labels``, when every item
        has one)."""
        items = [self.item(i) for i in range(start, stop)]
        images = torch.stack([image for image, _ in items])
        labels = [label for _, label in items] if labels else [None]
        if any(label is None for label in labels):
            return images, None
        try:
            return images, torch.as_tensor(np.asarray([np.asarray(label) for label in labels]))
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"The labels of images {start}..{stop - 1} are not numbers of one shape "
                f"({labels[0]!r}, ...); map them to ints, or drop 'labels' from what."
            ) from None


def as_image_source(data: Any, preprocess: Callable[[Any], Tensor] | None) -> ImageSource:
    """An :class:`ImageSource` over ``data``: a folder path, or anything with ``__len__`` and
    ``__getitem__`` (a torch ``Dataset``, a Hugging Face split, a list, an ``[N, 3, H, W]``
    tensor) whose items are images (tensors or PIL), ``(image, label)`` tuples, or dicts with an
    ``"image"`` key. PIL images go through ``preprocess``.

    Raises:
        TypeError: ``data`` is neither a path nor indexable (an iterator, a DataLoader).
        ValueError: ``data`` holds no image.

    Example:
        >>> source = as_image_source(torch.zeros(5, 3, 16, 16), None)
        >>> len(source), source.batch(2, 4)[0].shape
        (5, torch.Size([2, 3, 16, 16]))
    """
    if isinstance(data, str | os.PathLike):
        source = ImageSource(ImageFolder(data, None), preprocess, f"folder {os.fspath(data)}")
    elif isinstance(data, torch.utils.data.DataLoader):
        raise TypeError(
            "data is a DataLoader; pass its dataset (data=loader.dataset): the pass makes its "
            "own fixed batches so that it can resume and split across processes."
        )
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        source = ImageSource(data, preprocess, type(data).__name__)
    else:
        raise TypeError(
            f"data must be a Dataset (with __len__ and __getitem__), a Hugging Face split or an "
            f"image folder path, got {type(data).__name__}."
        )
    if len(source) == 0:
        raise ValueError("data is empty: it holds no image.")
    return source


def data_fingerprint(source: ImageSource, n_probe: int = 3) -> dict[str, Any]:
    """What names the data in the manifest: its length, and a hash of the file names (a folder)
    or of the first and last ``n_probe`` images (any dataset).

    Example:
        >>> fp = data_fingerprint(as_image_source(torch.zeros(4, 3, 8, 8), None))
        >>> fp["length"], len(fp["hash"])
        (4, 64)
    """
    digest = hashlib.sha256()
    n = len(source)
    if isinstance(source.dataset, ImageFolder):
        for file in source.dataset.files:
            digest.update(file.name.encode() + b"\0")
    else:
        probes: Sequence[int] = sorted(
            set(range(min(n_probe, n))) | set(range(max(0, n - n_probe), n))
        )
        for index in probes:
            image, _ = source.item(index)
            image = image.detach().to("cpu", torch.float32).contiguous()
            digest.update(str(tuple(image.shape)).encode())
            digest.update(memoryview(image.reshape(-1).view(torch.uint8).numpy()))
    return {"length": n, "hash": digest.hexdigest()}
