"""What every heatmap method shares: images and texts in, one batched loop out.

The token decomposition (:mod:`vision_lens.analysis.segmentation`) and the baselines
(:mod:`vision_lens.analysis.baselines`) take the same inputs and return the same kind of output,
through three helpers:

* :func:`model_images`: preprocessed images (or PIL images, through ``model.preprocess``),
  checked and moved to the model's device and dtype;
* :func:`text_directions`: strings or text embeddings as unit directions in the image-embedding
  space, one list for all images or one list per image;
* :func:`gather_heatmaps`: the batched loop: per-patch scores of each batch laid out on the patch
  grid, upsampled to the input size and gathered on one device, with a progress bar.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from vision_lens.protocols import TextEncoder
from vision_lens.utils.batching import batched
from vision_lens.utils.checks import check_finite, check_images
from vision_lens.utils.grids import upsample_grid

if TYPE_CHECKING:
    from PIL.Image import Image

    from vision_lens.hooked_vit import HookedViT

__all__ = ["TextsLike", "gather_heatmaps", "model_images", "text_directions"]

TextsLike = Sequence[str] | Sequence[Sequence[str]] | Tensor
"""Texts for heatmaps: one list of strings for all images, one list per image, or embeddings."""


def model_images(
    model: HookedViT, images: Float[Tensor, "N 3 height width"] | Sequence[Image]
) -> Float[Tensor, "N 3 height width"]:
    """Images as the model takes them: PIL images go through ``model.preprocess``; tensors are
    checked (``vision_lens.utils.checks.check_images``). Both end on the model's device and
    dtype.

    Args:
        model: The :class:`~vision_lens.HookedViT` (its ``preprocess``, input size, device, dtype).
        images: Preprocessed images ``[N, 3, H, W]`` or a list of PIL images.

    Returns:
        ``[N, 3, H, W]`` on the model's device, in its dtype.

    Raises:
        TypeError: Neither a tensor nor a list of PIL images, or not floating point.
        ValueError: A single image, the wrong size or layout, no images, or PIL images for a
            model without ``preprocess``.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny(n_layers=1, n_heads=2)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0).double()
        >>> model_images(model, torch.zeros(2, 3, 16, 16)).dtype
        torch.float64
    """
    if isinstance(images, Sequence) and images and hasattr(images[0], "convert"):  # PIL
        if model.preprocess is None:
            raise ValueError("This model has no preprocess transform; pass a tensor.")
        images = torch.stack([model.preprocess(image) for image in images])
    images = check_images(images, model.cfg.image_size)
    if images.shape[0] == 0:
        raise ValueError("images is empty.")
    return images.to(device=model.device, dtype=model.dtype)


def text_directions(
    model: HookedViT,
    clip: TextEncoder | None,
    texts: TextsLike,
    n_images: int | None = None,
    normalize: bool = True,
    *,
    name: str = "texts",
) -> tuple[Tensor, bool]:
    """Embed texts for heatmaps: one list for all images or one list per image.

    Args:
        model: The :class:`~vision_lens.HookedViT` (its ``d_embed``, device and dtype).
        clip: A text tower (a ``vision_lens.protocols.TextEncoder``, e.g.
            :class:`vision_lens.CLIPText`); only needed for strings.
        texts: ``list[str]`` (the same texts for every image), ``list[list[str]]`` (per image,
            all of the same length), or embeddings ``[n_text, d_embed]`` / ``[N, n_text, d_embed]``.
        n_images: Number of images, checked against per-image texts.
        normalize: Scale every embedding to unit norm.
        name: The argument's name in error messages (``"reference_texts"``).

    Returns:
        ``(directions, per_image)``: ``[n_text, d_embed]`` (``per_image=False``) or
        ``[N, n_text, d_embed]`` (``per_image=True``), on the model's device and dtype.

    Raises:
        TypeError: ``texts`` is neither strings nor a tensor.
        ValueError: Empty texts, ragged per-image lists, a wrong number of lists, embeddings
            whose width is not the model's ``d_embed``, or embeddings (given or encoded) that
            hold NaN or inf.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny(n_layers=1, n_heads=2)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> dirs, per_image = text_directions(model, None, torch.randn(3, 16))
        >>> dirs.shape, per_image, torch.allclose(dirs.norm(dim=-1), torch.ones(3))
        (torch.Size([3, 16]), False, True)
    """
    d_embed = model.cfg.d_embed
    if isinstance(texts, Tensor):
        if texts.dim() not in (2, 3) or texts.shape[-1] != d_embed:
            raise ValueError(
                f"Text embeddings ({name}) must be [n_text, {d_embed}] or [N, n_text, {d_embed}] "
                f"(the model's image-embedding width), got {tuple(texts.shape)}. Were they made by "
                "the same CLIP model?"
            )
        if texts.shape[-2] == 0 or texts.shape[0] == 0:
            raise ValueError(f"The text embeddings ({name}) are empty: pass at least one text.")
        if not texts.is_floating_point():
            raise TypeError(f"Text embeddings ({name}) must be floating point, got {texts.dtype}.")
        per_image = texts.dim() == 3
        directions = check_finite(texts.detach(), f"The text embeddings ({name})")
    else:
        texts = _check_text_list(texts)
        per_image = not isinstance(texts[0], str)
        if per_image:
            lengths = {len(t) for t in texts}
            if len(lengths) != 1 or 0 in lengths:
                raise ValueError(
                    "Per-image text lists must all have the same, non-zero length (got lengths "
                    f"{sorted(lengths)}); pad with a shared text or segment the groups separately."
                )
            unique = list(dict.fromkeys(t for group in texts for t in group))
            table = _encode(clip, unique, d_embed)
            index = {t: i for i, t in enumerate(unique)}
            rows = torch.tensor([[index[t] for t in group] for group in texts])
            directions = table[rows.to(table.device)]
        else:
            directions = _encode(clip, list(texts), d_embed)
        check_finite(directions, f"The text tower's embeddings of {name}")
    if per_image and n_images is not None and directions.shape[0] != n_images:
        raise ValueError(
            f"Got {directions.shape[0]} per-image text lists for {n_images} images; pass one "
            "list per image, or one flat list of strings shared by all images."
        )
    directions = directions.to(device=model.device, dtype=model.dtype)
    if normalize:
        directions = F.normalize(directions, dim=-1)
    return directions, per_image


def gather_heatmaps(
    model: HookedViT,
    images: Float[Tensor, "N 3 height width"],
    scores: Callable[[Tensor, slice], Tensor],
    batch_size: int,
    desc: str,
    upsample: bool = True,
    device: str | torch.device | None = "cpu",
    progress: bool = False,
) -> Tensor:
    """The loop of every heatmap method: score each batch, lay it out on the patch grid, upsample.

    Args:
        model: The :class:`~vision_lens.HookedViT` (its patch grid and input size).
        images: ``[N, 3, H, W]``, e.g. from :func:`model_images`.
        scores: ``scores(batch, index)`` -> per-patch scores ``[batch, ..., n_patches]`` in
            row-major patch order; ``index`` is the slice of ``images`` that ``batch`` holds (to
            pick per-image texts).
        batch_size: Images per call of ``scores``.
        desc: Label of the progress bar.
        upsample: Bilinearly upsample to the input size
            (``vision_lens.utils.grids.upsample_grid``); ``False`` keeps the patch grid.
        device: Where the heatmaps are gathered (``None``: where ``scores`` puts them).
        progress: Show a progress bar.

    Returns:
        ``[N, ..., H, W]`` float32 heatmaps, or ``[N, ..., rows, cols]`` with ``upsample=False``.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny(n_layers=1, n_heads=2)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> ones = lambda batch, index: torch.ones(batch.shape[0], 3, 4)  # 3 maps, 2x2 patches
        >>> gather_heatmaps(model, torch.zeros(5, 3, 16, 16), ones, 2, "demo").shape
        torch.Size([5, 3, 16, 16])
    """
    rows, cols = model.cfg.grid_size
    out = []
    start = 0
    for batch in batched(images, batch_size, desc, progress=progress):
        index = slice(start, start + batch.shape[0])
        start = index.stop
        grid = scores(batch, index).float().unflatten(-1, (rows, cols))
        if upsample:
            grid = upsample_grid(grid, model.cfg.image_size)
        out.append(grid.to(device or grid.device))
    return torch.cat(out)


def _check_text_list(texts: object) -> list[str] | list[list[str]]:
    """``texts`` as ``list[str]`` or ``list[list[str]]``, refusing anything else clearly."""
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence):
        raise TypeError(
            "texts must be a list of strings, a list of per-image lists, or a tensor of "
            f"embeddings; got {type(texts).__name__}."
        )
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: pass at least one text.")
    if all(isinstance(t, str) for t in texts):
        return texts
    if any(isinstance(t, str) or not isinstance(t, Sequence) for t in texts):
        raise TypeError(
            "texts mixes strings and other things; pass either list[str] (shared) or "
            "list[list[str]] (one list per image)."
        )
    for group in texts:
        if not all(isinstance(t, str) for t in group):
            raise TypeError("Every per-image text list must hold strings only.")
    return [list(group) for group in texts]


def _encode(clip: TextEncoder | None, texts: list[str], d_embed: int) -> Tensor:
    """``clip.encode(texts)``, checked against the image model's embedding width."""
    if clip is None:
        raise ValueError(
            "Texts given as strings need the text tower: pass clip (a vision_lens.CLIPText), or "
            "pass text embeddings as a tensor."
        )
    embeddings = clip.encode(texts)
    if embeddings.shape[-1] != d_embed:
        raise ValueError(
            f"The text tower embeds into {embeddings.shape[-1]} dimensions but the image model "
            f"into {d_embed}; load both towers from the same CLIP (vision_lens.load_clip)."
        )
    return embeddings
