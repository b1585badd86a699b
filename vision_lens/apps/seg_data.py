"""Evaluation sets of the segmentation benchmark (:mod:`vision_lens.apps.seg_eval`).

* :func:`shapes_data`: held-out single-object shapes-world scenes (class text = the object's
  colour and shape, mask = its exact pixels).
* :func:`imagenet_seg_data`: ImageNet-segmentation (``gtsegs_ijcv.mat``) with the 1,000 ImageNet
  class names and CLIP's templates.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from vision_lens.protocols import TextEncoder
from vision_lens.utils.checks import check_batch_size

if TYPE_CHECKING:
    from vision_lens.hooked_vit import HookedViT

#: Seed of the default held-out shapes scenes (the shapes model never trains on it).
SHAPES_SEED = 90_210


@dataclass
class SegBatch:
    """One batch of evaluation data."""

    images: Float[Tensor, "batch 3 height width"]  # preprocessed
    masks: Bool[Tensor, "batch height width"]  # aligned with images
    labels: Int[Tensor, " batch"] | None = None  # class indices; None = zero-shot prediction


@dataclass
class SegData:
    """An evaluation set: batches, the class texts and how to describe it."""

    name: str
    batches: Callable[[], Iterable[SegBatch]]
    n_images: int
    class_texts: list[str]
    class_embeddings: Float[Tensor, "n_class d_embed"]
    description: str
    label_source: str  # "ground truth" or "zero-shot prediction"


def shapes_class_texts() -> list[str]:
    """The 64 colour-shape class texts of the shapes world ("a red circle", "an orange star").

    Example:
        >>> texts = shapes_class_texts()
        >>> len(texts), texts[0], texts[-1]
        (64, 'a red circle', 'a cyan ring')
    """
    from vision_lens.shapes import COLORS, SHAPES, with_article

    return [with_article(f"{color} {shape}") for color in COLORS for shape in SHAPES]


def shapes_data(
    model: HookedViT,
    clip: TextEncoder,
    n: int = 500,
    seed: int = SHAPES_SEED,
    batch_size: int = 64,
) -> SegData:
    """Single-object shapes-world scenes with exact masks; class = colour + shape.

    Images go through ``model.preprocess``; masks through the same resize and crop (nearest).

    Args:
        model: The :class:`vision_lens.HookedViT` (for ``preprocess``).
        clip: Its :class:`vision_lens.CLIPText` (to embed the 64 class texts).
        n: Number of scenes.
        seed: Generator seed (default a held-out seed).
        batch_size: Images per batch.

    Example:
        >>> data = shapes_data(model, clip, n=8)  # doctest: +SKIP
        >>> next(iter(data.batches())).masks.shape  # doctest: +SKIP
        torch.Size([8, 64, 64])
    """
    from vision_lens.datasets.masks import geometric_transform
    from vision_lens.shapes import generate

    if model.preprocess is None:
        raise ValueError("The model has no preprocess transform (model.preprocess).")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    texts = shapes_class_texts()
    index = {t: i for i, t in enumerate(texts)}
    scenes = generate(n, seed=seed, n_objects=1)
    geometry = geometric_transform(model.preprocess)

    def batches() -> Iterator[SegBatch]:
        from PIL import Image

        from vision_lens.shapes import with_article

        for idx in _index_batches(n, batch_size):
            images = torch.stack([model.preprocess(scenes.to_pil(i)) for i in idx])
            masks = torch.stack(
                [
                    torch.from_numpy(
                        np.asarray(
                            geometry(Image.fromarray(scenes.foreground[i].astype(np.uint8) * 255))
                        )
                        > 127
                    )
                    for i in idx
                ]
            )
            objects = [scenes.attributes[i][0] for i in idx]
            labels = [index[with_article(f"{o['color']} {o['shape']}")] for o in objects]
            yield SegBatch(images, masks, torch.tensor(labels))

    return SegData(
        name="shapes",
        batches=batches,
        n_images=n,
        class_texts=texts,
        class_embeddings=clip.encode(texts),
        description=(
            f"shapes world, {n} single-object scenes (generate(n={n}, seed={seed}, "
            f"n_objects=1), {scenes.image_size} px), mask = the object's exact pixels "
            f"(foreground {100 * scenes.foreground.mean():.1f}% of pixels)"
        ),
        label_source="ground truth (the object's colour and shape, e.g. 'a red circle')",
    )


def imagenet_seg_data(
    model: HookedViT,
    clip: TextEncoder,
    path: str | Path,
    n: int | None = None,
    batch_size: int = 32,
    templates: str = "openai",
    class_source: str = "predicted",
    progress: bool = True,
) -> SegData:
    """ImageNet-segmentation (``gtsegs_ijcv.mat``) with the 1,000 ImageNet zero-shot classes.

    Args:
        model: The :class:`vision_lens.HookedViT` (its ``preprocess`` for images and masks).
        clip: Its :class:`vision_lens.CLIPText`.
        path: ``gtsegs_ijcv.mat``.
        n: Use the first ``n`` images (default all 4,276).
        batch_size: Images per batch.
        templates: ``"openai"`` (80 prompt templates, as the reference classifier) or
            ``"simple"`` (7, faster).
        class_source: ``"predicted"`` (the model's zero-shot class, as the reference code) or
            ``"label"`` (the class of the image's WordNet id; fails for ids outside the 1,000).

    Example:
        >>> data = imagenet_seg_data(model, clip, "gtsegs_ijcv.mat")  # doctest: +SKIP
    """
    from vision_lens.datasets.imagenet_seg import ImagenetSegmentation, imagenet_class_index
    from vision_lens.text import imagenet_classnames, imagenet_templates

    if class_source not in ("predicted", "label"):
        raise ValueError(f"class_source must be 'predicted' or 'label', got {class_source!r}.")
    if model.preprocess is None:
        raise ValueError("The model has no preprocess transform (model.preprocess).")
    dataset = ImagenetSegmentation(path, transform=model.preprocess)
    total = len(dataset) if n is None else min(int(n), len(dataset))
    if total < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    if class_source == "label" and not dataset.has_ids:
        raise ValueError(f"{str(path)!r} has no /value/id; use class_source='predicted'.")

    def batches() -> Iterator[SegBatch]:
        for idx in _index_batches(total, batch_size):
            pairs = [dataset[i] for i in idx]
            labels = None
            if class_source == "label":
                labels = []
                for i in idx:
                    label = imagenet_class_index(dataset.wnid(i) or "")
                    if label is None:
                        raise ValueError(
                            f"Image {i} ({dataset.name(i)}) is not of one of the 1,000 ImageNet "
                            "classes; use class_source='predicted' (the reference protocol)."
                        )
                    labels.append(label)
                labels = torch.tensor(labels)
            yield SegBatch(
                torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]), labels
            )

    names = imagenet_classnames()
    weights = clip.zero_shot_weights(names, imagenet_templates(templates), progress=progress)
    return SegData(
        name="imagenet-seg",
        batches=batches,
        n_images=total,
        class_texts=names,
        class_embeddings=weights,
        description=(
            f"ImageNet-segmentation ({Path(path).name}), {total} images; masks resized and "
            "cropped exactly as their images"
        ),
        label_source=(
            f"the model's zero-shot prediction among the 1,000 ImageNet classes ({templates} "
            "templates), as the reference code"
            if class_source == "predicted"
            else "the ImageNet class of the image's WordNet id"
        ),
    )


def _index_batches(n: int, batch_size: int) -> Iterator[range]:
    """Indices ``0..n-1`` in consecutive batches of ``batch_size`` (the last may be shorter)."""
    check_batch_size(batch_size)
    for start in range(0, n, batch_size):
        yield range(start, min(n, start + batch_size))


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def check_output_dir(out_dir: str | Path) -> Path:
    """``out_dir`` as a :class:`~pathlib.Path` if the results can be written into it (it may not
    exist yet), checked before any work.

    Raises:
        NotADirectoryError, PermissionError: They cannot.
    """
    path = Path(out_dir)
    name = str(out_dir)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == path else f"is inside the file {str(existing)!r}"
        raise NotADirectoryError(
            f"--out-dir {name!r} {what}; pass a folder (it is created if missing)."
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise PermissionError(
            f"--out-dir {name!r} cannot be written ({error.strerror or error}); pick a writable "
            "folder."
        ) from None
    return path


def check_imagenet_seg_file(path: str | Path) -> Path:
    """``path`` if it is an HDF5 (MATLAB v7.3) file such as ``gtsegs_ijcv.mat``.

    Raises:
        FileNotFoundError, IsADirectoryError, ValueError: It is not.
    """
    import h5py

    file = Path(path)
    name = str(path)
    if not file.exists():
        raise FileNotFoundError(
            f"--imagenet-seg {name!r} not found; pass the path of gtsegs_ijcv.mat."
        )
    if file.is_dir():
        raise IsADirectoryError(
            f"--imagenet-seg {name!r} is a folder; pass the file gtsegs_ijcv.mat "
            f"(e.g. {str(file / 'gtsegs_ijcv.mat')!r})."
        )
    if not h5py.is_hdf5(file):
        raise ValueError(
            f"--imagenet-seg {name!r} is not a MATLAB v7.3 (HDF5) .mat file; pass "
            "gtsegs_ijcv.mat (ImageNet-segmentation)."
        )
    return file


__all__ = [
    "check_imagenet_seg_file",
    "check_output_dir",
    "SHAPES_SEED",
    "SegBatch",
    "SegData",
    "imagenet_seg_data",
    "shapes_class_texts",
    "shapes_data",
]
