"""ImageNet-segmentation (Guillaumin et al. 2014): ``gtsegs_ijcv.mat``, 4,276 images with masks.

The file is MATLAB v7.3 (HDF5), read with h5py, laid out as in Chefer et al.'s
``Imagenet_Segmentation`` dataset class:

* ``/value/img``: ``[N, 1]`` object references; each points to a ``uint8 [3, W, H]`` array (MATLAB
  stores arrays column-major, so ``transpose(2, 1, 0)`` gives the ``[H, W, 3]`` image);
* ``/value/gt``: ``[N, 1]`` references to ``[1, 1]`` reference cells, whose element points to the
  ``[W, H]`` mask (``transpose`` gives ``[H, W]``; > 0 = foreground);
* ``/value/id`` (optional): references to ``uint16`` character arrays with the image's name,
  ``<wnid>_<number>``; the WordNet id gives the ImageNet class when it is one of the 1,000.

Images and masks get exactly the same resize and crop (the geometric steps of the image
transform replayed on the mask with nearest interpolation, :mod:`vision_lens.datasets.masks`);
the reference code resizes masks to a square while centre-cropping the images, which misaligns
them on non-square images.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Bool
from PIL import Image
from torch import Tensor

from vision_lens.datasets.masks import geometric_transform

if TYPE_CHECKING:
    import h5py

N_IMAGES = 4276  # in the full gtsegs_ijcv.mat


class ImagenetSegmentation:
    """Reader for ``gtsegs_ijcv.mat`` (ImageNet-segmentation), one image-mask pair per index.

    ``dataset[i]`` returns ``(image, mask)``: the image through ``transform`` (e.g.
    ``model.preprocess`` -> ``[3, H', W']``) and the mask through the same resize and crop,
    ``bool [H', W']``. Without ``transform`` they are the raw ``uint8 [H, W, 3]`` image and
    ``bool [H, W]`` mask. The HDF5 file is opened lazily, so the object can go to DataLoader
    workers.

    Args:
        path: Path to ``gtsegs_ijcv.mat``.
        transform: Image transform (PIL -> tensor), normally ``model.preprocess``.
        mask_transform: PIL mask -> PIL mask with the same geometry as ``transform``; default
            the geometric steps of ``transform`` with nearest interpolation.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file lacks ``/value/img`` or ``/value/gt`` or they disagree in length.

    Example:
        >>> ds = ImagenetSegmentation("gtsegs_ijcv.mat", transform=model.preprocess)
        ... # doctest: +SKIP
        >>> image, mask = ds[0]  # [3, 224, 224], bool [224, 224]  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | Path,
        transform: Callable[[Image.Image], Any] | None = None,
        mask_transform: Callable[[Image.Image], Image.Image] | None = None,
    ):
        import h5py

        _check_path(path, "path")
        for what, fn in (("transform", transform), ("mask_transform", mask_transform)):
            if fn is not None and not callable(fn):
                raise TypeError(
                    f"{what} must be a callable (PIL image -> ...), e.g. model.preprocess, or "
                    f"None; got {type(fn).__name__} {fn!r}."
                )
        self.path = Path(path)
        if self.path.is_dir():
            raise IsADirectoryError(
                f"ImageNet-segmentation path {str(path)!r} is a folder; pass the file "
                "gtsegs_ijcv.mat itself (e.g. "
                f"{str(self.path / 'gtsegs_ijcv.mat')!r})."
            )
        if not self.path.is_file():
            raise FileNotFoundError(
                f"ImageNet-segmentation file {str(path)!r} not found. It is gtsegs_ijcv.mat "
                "(Guillaumin et al. 2014, as distributed with Chefer et al.'s "
                "Transformer-Explainability)."
            )
        self.transform = transform
        if mask_transform is None and transform is not None:
            mask_transform = geometric_transform(transform)
        self.mask_transform = mask_transform
        try:
            with h5py.File(self.path, "r") as f:
                if "value/img" not in f or "value/gt" not in f:
                    raise ValueError(
                        f"{str(path)!r} has no /value/img and /value/gt datasets; is it "
                        "gtsegs_ijcv.mat (MATLAB v7.3)?"
                    )
                self._length = len(f["value/img"])
                if len(f["value/gt"]) != self._length:
                    raise ValueError(
                        f"{str(path)!r}: /value/img has {self._length} entries but /value/gt "
                        f"has {len(f['value/gt'])}."
                    )
                self.has_ids = "value/id" in f
        except OSError as error:
            raise ValueError(f"{str(path)!r} is not an HDF5 (MATLAB v7.3) file: {error}") from error
        self._file: h5py.File | None = None

    def __len__(self) -> int:
        return self._length

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None  # h5py handles do not pickle; each worker opens its own
        return state

    def _h5(self) -> h5py.File:
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        return self._file

    def _index(self, index: int) -> int:
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise TypeError(f"index must be an int, got {type(index).__name__} {index!r}.")
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"Index {index} out of range for {n} images.")
        return index % n

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The untransformed image ``uint8 [H, W, 3]`` and mask ``bool [H, W]``."""
        f, index = self._h5(), self._index(index)
        image = np.asarray(f[f["value/img"][index, 0]]).transpose(2, 1, 0)
        mask = np.asarray(f[f[f["value/gt"][index, 0]][0, 0]]).transpose(1, 0)
        if image.ndim != 3 or image.shape[-1] != 3 or mask.shape != image.shape[:2]:
            raise ValueError(
                f"Entry {index}: image {image.shape} and mask {mask.shape} are not an "
                "[H, W, 3] / [H, W] pair after transposing; is this gtsegs_ijcv.mat?"
            )
        return np.ascontiguousarray(image, dtype=np.uint8), np.ascontiguousarray(mask > 0)

    def name(self, index: int) -> str | None:
        """The image's name (``<wnid>_<number>``) from ``/value/id``, or ``None`` without it."""
        if not self.has_ids:
            return None
        f, index = self._h5(), self._index(index)
        codes = np.asarray(f[f["value/id"][index, 0]]).ravel()
        return "".join(chr(int(c)) for c in codes).strip("\x00 ")

    def wnid(self, index: int) -> str | None:
        """The image's WordNet id (e.g. ``"n01443537"``), or ``None`` without ``/value/id``."""
        name = self.name(index)
        return None if name is None else name.split("_")[0]

    def __getitem__(self, index: int) -> tuple[Any, Bool[Tensor, "height width"] | np.ndarray]:
        image, mask = self.raw(index)
        if self.transform is None:
            return image, mask
        pil = Image.fromarray(image, mode="RGB")
        mask_pil = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
        if self.mask_transform is not None:
            mask_pil = self.mask_transform(mask_pil)
        return self.transform(pil), torch.from_numpy(np.asarray(mask_pil) > 127)

    def close(self) -> None:
        """Close the HDF5 file (it reopens on the next access)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ImagenetSegmentation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_path(path: object, what: str) -> None:
    if not isinstance(path, str | Path):
        raise TypeError(f"{what} must be a str or Path, got {type(path).__name__} {path!r}.")


def imagenet_class_index(wnid: str) -> int | None:
    """Index of a WordNet id among the 1,000 ImageNet classes (``None`` if not one of them).

    Example:
        >>> imagenet_class_index("n01443537"), imagenet_class_index("n00000000")
        (1, None)
    """
    if not isinstance(wnid, str):
        raise TypeError(
            f"wnid must be a WordNet id string such as 'n01443537', got {type(wnid).__name__} "
            f"{wnid!r}."
        )
    return _wnid_table().get(wnid)


def _wnid_table() -> dict[str, int]:
    global _WNIDS
    if _WNIDS is None:
        from timm.data import ImageNetInfo  # timm comes with open_clip

        _WNIDS = {w: i for i, w in enumerate(ImageNetInfo().label_names())}
    return _WNIDS


_WNIDS: dict[str, int] | None = None


def write_imagenet_seg_mat(
    path: str | Path,
    images: list[np.ndarray],
    masks: list[np.ndarray],
    names: list[str] | None = None,
) -> Path:
    """Write images and masks in the ``gtsegs_ijcv.mat`` layout (for tests and small subsets).

    Args:
        path: File to write.
        images: ``uint8 [H_i, W_i, 3]`` images.
        masks: ``[H_i, W_i]`` masks (> 0 = foreground).
        names: Optional ``<wnid>_<number>`` names, stored in ``/value/id``.

    Returns:
        ``path``.

    Example:
        >>> import tempfile, os
        >>> file = os.path.join(tempfile.mkdtemp(), "tiny.mat")
        >>> _ = write_imagenet_seg_mat(file, [np.zeros((4, 6, 3), np.uint8)],
        ...                            [np.ones((4, 6), np.uint8)], ["n01443537_1"])
        >>> ds = ImagenetSegmentation(file)
        >>> len(ds), ds[0][0].shape, ds.wnid(0)
        (1, (4, 6, 3), 'n01443537')
    """
    import h5py

    _check_path(path, "path")
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(
            f"path {str(path)!r} is a folder; pass a file name such as "
            f"{str(target / 'gtsegs_ijcv.mat')!r}."
        )
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"path {str(path)!r}: folder {str(target.parent)!r} does not exist; create it first."
        )
    for what, items in (("images", images), ("masks", masks), ("names", names)):
        if items is not None and (
            isinstance(items, str | bytes | np.ndarray) or not isinstance(items, list | tuple)
        ):
            raise TypeError(
                f"{what} must be a list (one entry per image), got {type(items).__name__}."
            )
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks.")
    if not images:
        raise ValueError("images is empty: write at least one image-mask pair.")
    if names is not None and len(names) != len(images):
        raise ValueError(
            f"{len(images)} images but {len(names)} names: pass one name per image, or None."
        )
    for i, name in enumerate(names or ()):
        if not isinstance(name, str):
            raise TypeError(f"names[{i}] must be a string, got {type(name).__name__} {name!r}.")
        if not name or max(map(ord, name)) > 0xFFFF:
            raise ValueError(
                f"names[{i}] {name!r} must be a non-empty string of characters up to U+FFFF "
                "(stored as uint16), such as 'n01443537_1'."
            )
    for i, image in enumerate(images):
        array = np.asarray(image)
        if array.dtype == np.uint8:
            continue
        if not np.issubdtype(array.dtype, np.integer):
            raise TypeError(
                f"images[{i}] must be uint8 pixels 0..255, got {array.dtype} (a float image "
                "would be truncated); convert with (x * 255).round().astype(np.uint8)."
            )
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(
                f"images[{i}] has values {array.min()}..{array.max()}, outside 0..255 (they would "
                "wrap around in uint8)."
            )
    ref = h5py.special_dtype(ref=h5py.Reference)
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        n = len(images)
        img_refs = f.create_dataset("value/img", (n, 1), dtype=ref)
        gt_refs = f.create_dataset("value/gt", (n, 1), dtype=ref)
        id_refs = f.create_dataset("value/id", (n, 1), dtype=ref) if names else None
        for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
            image = np.asarray(image).astype(np.uint8)
            mask = np.asarray(mask)
            if mask.dtype.kind == "f" and not np.isfinite(mask).all():
                raise ValueError(f"masks[{i}] holds NaN or infinite values.")
            mask = (mask > 0).astype(np.uint8)  # > 0 = foreground (as the reader reads it)
            if image.ndim != 3 or image.shape[-1] != 3 or mask.shape != image.shape[:2]:
                raise ValueError(f"Pair {i}: image {image.shape} / mask {mask.shape}.")
            img_refs[i, 0] = refs.create_dataset(f"img{i}", data=image.transpose(2, 1, 0)).ref
            gt = refs.create_dataset(f"gt{i}", data=mask.transpose(1, 0))
            cell = refs.create_dataset(f"cell{i}", (1, 1), dtype=ref)
            cell[0, 0] = gt.ref
            gt_refs[i, 0] = cell.ref
            if id_refs is not None:
                codes = np.array([ord(c) for c in names[i]], dtype=np.uint16)[:, None]
                id_refs[i, 0] = refs.create_dataset(f"id{i}", data=codes).ref
    return Path(path)
