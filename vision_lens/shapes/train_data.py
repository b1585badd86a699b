"""The training data of the shapes-world CLIP: scenes, weighted captions, positives, batches.

:func:`make_training_scenes` generates the scenes once (from seeds that evaluation never uses);
each step takes the next batch of :func:`epoch_batches`, draws a caption per image with
:func:`sample_batch_captions` (weighted so that single-attribute captions such as "a red object"
are common) and marks with :func:`batch_positives` every image a caption truly describes.

Example:
    >>> scenes = make_training_scenes(20, seed=0, chunk=10)
    >>> len(scenes), int(sum(len(a) == 1 for a in scenes.attributes))
    (20, 14)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vision_lens.shapes.captions import caption_for, true_captions
from vision_lens.shapes.generator import generate
from vision_lens.shapes.vocabulary import Scenes, WrongTypeError, check_int, check_seed
from vision_lens.utils.batching import progress_bar

__all__ = [
    "MULTI_MODE_WEIGHTS",
    "SINGLE_MODE_WEIGHTS",
    "VALIDATION_SEED",
    "CaptionTokenizer",
    "TrainingScenes",
    "batch_positives",
    "epoch_batches",
    "make_training_scenes",
    "sample_batch_captions",
]

#: Relative weights of the caption modes for single-object scenes during training.
SINGLE_MODE_WEIGHTS: dict[str, float] = {
    "full": 2.0,
    "color_shape": 1.5,
    "size_color_shape": 1.0,
    "texture_shape": 1.0,
    "shape_position": 1.5,
    "color": 2.0,
    "shape": 2.0,
    "position": 2.0,
    "size": 1.0,
    "texture": 1.0,
    "background": 1.0,
    "count": 0.5,
}
#: Relative weights of the caption modes for scenes with several objects.
MULTI_MODE_WEIGHTS: dict[str, float] = {
    "full": 1.0,
    "color_shape": 1.0,
    "shape_position": 1.0,
    "texture_shape": 1.0,
    "count": 0.5,
    "one_of": 1.0,
}

# Base of the training-scene seeds (see make_training_scenes); evaluation seeds stay < 100_000.
_TRAIN_SEED_BASE = 1_000_000
#: Seed of the small validation set monitored during training (not the test seed 10_000).
VALIDATION_SEED = 20_000


@dataclass
class TrainingScenes:
    """The training scenes without masks (images, ground truth and the generator's captions).

    Example:
        >>> len(TrainingScenes(np.zeros((2, 64, 64, 3), np.uint8), [[], []], ["sky"] * 2, [""] * 2))
        2
    """

    images: np.ndarray
    attributes: list[list[dict[str, str]]]
    backgrounds: list[str]
    captions: list[str]

    def __len__(self) -> int:
        return len(self.images)


def make_training_scenes(
    n_images: int,
    seed: int = 0,
    p_single: float = 0.7,
    image_size: int = 64,
    chunk: int = 10_000,
    progress: bool = False,
) -> TrainingScenes:
    """The training scenes: ``p_single`` of them with one object, the rest with 2-4 objects.

    Generated in chunks of ``chunk`` images (masks are dropped). Chunk ``c`` uses the seeds
    ``1_000_000 + 10_000 * seed + 2 * c`` (single-object) and ``+ 1`` (2-4 objects), which never
    meet the evaluation seeds (< 100_000). Single- and multi-object scenes are interleaved by the
    training order, not here.

    Example:
        >>> scenes = make_training_scenes(10, seed=1, p_single=0.5)
        >>> sorted(len(a) > 1 for a in scenes.attributes) == [False] * 5 + [True] * 5
        True
    """
    n_images = check_int(n_images, "n_images", minimum=1)
    seed = check_seed(seed)
    chunk = check_int(chunk, "chunk", minimum=1)
    if isinstance(p_single, bool) or not isinstance(p_single, int | float | np.number):
        raise WrongTypeError(f"p_single must be a number in [0, 1], got {p_single!r}.")
    if not 0.0 <= float(p_single) <= 1.0:
        raise ValueError(
            f"p_single must be in [0, 1] (a fraction of the scenes), got {p_single!r}."
        )
    images, attributes, backgrounds, captions = [], [], [], []
    n_chunks = math.ceil(n_images / chunk)
    bar = progress_bar(n_images, "scenes", enabled=progress)
    for c in range(n_chunks):
        size = min(chunk, n_images - c * chunk)
        n_single = int(round(size * p_single))
        base = _TRAIN_SEED_BASE + 10_000 * seed + 2 * c
        for n_obj, k, off in (((1, 1), n_single, 0), ((2, 4), size - n_single, 1)):
            if k == 0:
                continue
            ds = generate(k, seed=base + off, n_objects=n_obj, image_size=image_size)
            images.append(ds.images)
            attributes += ds.attributes
            backgrounds += ds.backgrounds
            captions += ds.captions
        bar.update(size)
    bar.close()
    return TrainingScenes(np.concatenate(images), attributes, backgrounds, captions)


def sample_batch_captions(
    dataset: Scenes, indices: Sequence[int], rng: np.random.Generator
) -> list[str]:
    """One random caption per image, with modes drawn from the ``*_MODE_WEIGHTS`` tables.

    Example:
        >>> from vision_lens.shapes import generate
        >>> ds = generate(4, seed=0)
        >>> caps = sample_batch_captions(ds, [0, 1, 2, 3], np.random.default_rng(0))
        >>> caps == sample_batch_captions(ds, [0, 1, 2, 3], np.random.default_rng(0))
        True
    """
    single_modes = list(SINGLE_MODE_WEIGHTS)
    single_p = np.array(list(SINGLE_MODE_WEIGHTS.values()))
    multi_modes = list(MULTI_MODE_WEIGHTS)
    multi_p = np.array(list(MULTI_MODE_WEIGHTS.values()))
    out = []
    for i in indices:
        attrs, bg = dataset.attributes[int(i)], dataset.backgrounds[int(i)]
        if len(attrs) == 1:
            mode = single_modes[rng.choice(len(single_modes), p=single_p / single_p.sum())]
        else:
            mode = multi_modes[rng.choice(len(multi_modes), p=multi_p / multi_p.sum())]
        out.append(caption_for(attrs, bg, rng, mode=mode))
    return out


def batch_positives(
    scenes: Scenes, indices: Sequence[int], captions: Sequence[str]
) -> tuple[list[str], torch.Tensor]:
    """The distinct captions of a batch and which images each one truly describes.

    Args:
        scenes: The training scenes.
        indices: The batch's scene indices.
        captions: The caption drawn for each of them (:func:`sample_batch_captions`).

    Returns:
        ``(texts, positives)``: the distinct captions in first-seen order, and ``bool
        [len(indices), len(texts)]``, True where the caption is one of the image's
        :func:`~vision_lens.shapes.captions.true_captions` or was drawn for it.

    Example:
        >>> red = dict(shape="circle", color="red", size="small", position="top", texture="solid")
        >>> blue = dict(red, color="blue")
        >>> images = np.zeros((2, 64, 64, 3), np.uint8)
        >>> scenes = TrainingScenes(images, [[red], [blue]], ["sky", "sky"], ["", ""])
        >>> texts, pos = batch_positives(scenes, [0, 1], ["a red object", "a circle"])
        >>> texts, pos.tolist()  # "a circle" describes both images
        (['a red object', 'a circle'], [[True, True], [False, True]])
    """
    if len(indices) != len(captions):
        raise ValueError(
            f"{len(indices)} indices but {len(captions)} captions: pass one caption per batch "
            "image (sample_batch_captions(scenes, indices, rng))."
        )
    texts = list(dict.fromkeys(captions))
    positives = torch.tensor(
        [
            [t in truth for t in texts]
            for truth in (
                true_captions(scenes.attributes[i], scenes.backgrounds[i]) for i in indices
            )
        ]
    )
    # The drawn caption is always a positive, even if the grammar of true_captions drifts.
    where = {t: j for j, t in enumerate(texts)}
    positives[torch.arange(len(indices)), torch.tensor([where[c] for c in captions])] = True
    return texts, positives


def epoch_batches(
    n: int, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[np.ndarray, int]]:
    """Endless ``(indices, epoch)`` batches: a fresh permutation whenever the current one runs
    short (its tail is skipped, so every batch is full).

    Example:
        >>> batches = epoch_batches(5, 2, torch.Generator().manual_seed(0))
        >>> [(len(idx), epoch) for idx, epoch in (next(batches) for _ in range(3))]
        [(2, 0), (2, 0), (2, 1)]
    """
    n = check_int(n, "n", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    if batch_size > n:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {n} scenes: every batch would be short "
            "(and each one a new epoch). Lower batch_size or generate more scenes."
        )
    return _batches(n, batch_size, generator)


def _batches(
    n: int, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[np.ndarray, int]]:
    perm, cursor, epoch = torch.randperm(n, generator=generator), 0, 0
    while True:
        if cursor + batch_size > n:
            perm, cursor, epoch = torch.randperm(n, generator=generator), 0, epoch + 1
        yield perm[cursor : cursor + batch_size].numpy(), epoch
        cursor += batch_size


class CaptionTokenizer:
    """open_clip's tokenizer with a cache (training captions repeat a lot).

    Example:
        >>> tokenize = CaptionTokenizer("ViT-B-32", context_length=64)
        >>> tokenize(["a red object", "a circle", "a red object"]).shape
        torch.Size([3, 64])
    """

    def __init__(self, model_name: str, context_length: int) -> None:
        import open_clip

        self._tok = open_clip.get_tokenizer(model_name, context_length=context_length)
        self.context_length = context_length
        self._cache: dict[str, torch.Tensor] = {}

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            for t, row in zip(missing, self._tok(missing), strict=True):
                self._cache[t] = row
        return torch.stack([self._cache[t] for t in texts])
