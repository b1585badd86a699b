"""Zero-shot segmentation from the token decomposition (Gandelsman et al. 2024, §5).

Each image patch ``i`` contributes a direct term ``c_i`` to the image embedding
(:meth:`vision_lens.ActivationCache.decompose_tokens`, summed over the chosen layers and all
heads; the class token is left out). The heatmap of a text with unit embedding ``t`` is

    score_i = <c_i, t>  -  mean_{r in reference} <c_i, r>  =  <c_i, t - mean(reference)>,

the second term being the paper's footnote: subtracting the mean heatmap over a reference set of
class descriptions removes what every text shares (bias terms, the "an image of" part). The
scores are laid out on the patch grid and bilinearly upsampled to the input size.
:func:`segment_heads` does the same per attention head (joint head x token decomposition), e.g.
for one head's TextSpan directions. Masks come from :func:`binarize` (the protocol of Chefer et
al. 2021: clip at 0, min-max normalise, threshold at the mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from vision_lens.analysis.seg_metrics import binarize, normalize_heatmaps
from vision_lens.cache import LnMode

__all__ = [
    "binarize",
    "normalize_heatmaps",
    "patch_token_scores",
    "segment",
    "segment_heads",
    "text_directions",
    "upsample_heatmaps",
]

TextsLike = Sequence[str] | Sequence[Sequence[str]] | Tensor


def upsample_heatmaps(
    grid: Float[Tensor, "... rows cols"], size: tuple[int, int]
) -> Float[Tensor, "... height width"]:
    """Bilinearly upsample patch-grid heatmaps to the image size (``align_corners=False``).

    Args:
        grid: ``[..., rows, cols]`` scores on the patch grid.
        size: ``(H, W)`` of the model input.

    Returns:
        ``[..., H, W]``.

    Example:
        >>> upsample_heatmaps(torch.ones(2, 3, 4, 4), (32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """
    lead = grid.shape[:-2]
    flat = grid.reshape(-1, 1, *grid.shape[-2:]).float()
    up = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False)
    return up.view(*lead, *up.shape[-2:])


def text_directions(
    model: Any,
    clip: Any,
    texts: TextsLike,
    n_images: int | None = None,
    normalize: bool = True,
) -> tuple[Tensor, bool]:
    """Embed texts for heatmaps: one list for all images or one list per image.

    Args:
        model: The :class:`vision_lens.HookedViT` (its ``d_embed``, device and dtype).
        clip: A :class:`vision_lens.CLIPText` (only needed for strings).
        texts: ``list[str]`` (the same texts for every image), ``list[list[str]]`` (per image,
            all of the same length), or embeddings ``[n_text, d_embed]`` / ``[N, n_text, d_embed]``.
        n_images: Number of images, checked against per-image texts.
        normalize: Scale every embedding to unit norm.

    Returns:
        ``(directions, per_image)``: ``[n_text, d_embed]`` (``per_image=False``) or
        ``[N, n_text, d_embed]`` (``per_image=True``), on the model's device and dtype.

    Raises:
        ValueError: Empty texts, ragged per-image lists, a wrong number of lists, or embeddings
            whose width is not the model's ``d_embed``.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=64, d_embed=16,
        ...                          image_size=16, patch_size=8)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> dirs, per_image = text_directions(model, None, torch.randn(3, 16))
        >>> dirs.shape, per_image, torch.allclose(dirs.norm(dim=-1), torch.ones(3))
        (torch.Size([3, 16]), False, True)
    """
    d_embed = model.cfg.d_embed
    if isinstance(texts, Tensor):
        if texts.dim() not in (2, 3) or texts.shape[-1] != d_embed:
            raise ValueError(
                f"Text embeddings must be [n_text, {d_embed}] or [N, n_text, {d_embed}] (the "
                f"model's image-embedding width), got {tuple(texts.shape)}. Were they made by "
                "the same CLIP model?"
            )
        if texts.shape[-2] == 0 or texts.shape[0] == 0:
            raise ValueError("The text embeddings are empty: pass at least one text.")
        per_image = texts.dim() == 3
        directions = texts.detach()
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
    if per_image and n_images is not None and directions.shape[0] != n_images:
        raise ValueError(
            f"Got {directions.shape[0]} per-image text lists for {n_images} images; pass one "
            "list per image, or one flat list of strings shared by all images."
        )
    directions = directions.to(device=model.device, dtype=model.dtype)
    if normalize:
        directions = F.normalize(directions, dim=-1)
    return directions, per_image


def _reference_direction(
    model: Any,
    clip: Any,
    reference_texts: Sequence[str] | Tensor | None,
    directions: Tensor,
    per_image: bool,
    normalize: bool,
) -> Tensor:
    """Mean reference embedding ``[d_embed]`` (default: the distinct texts themselves)."""
    if reference_texts is None:
        pool = directions.reshape(-1, directions.shape[-1])
        pool = torch.unique(pool, dim=0)
        if pool.shape[0] < 2:
            raise ValueError(
                "Subtracting the mean heatmap over a single text leaves all zeros: pass "
                "reference_texts (e.g. every class description of the dataset) or "
                "subtract_reference=False."
            )
        return pool.mean(0)
    reference, ref_per_image = text_directions(model, clip, reference_texts, normalize=normalize)
    if ref_per_image:
        raise ValueError("reference_texts must be one flat list (or [n_ref, d_embed]).")
    return reference.mean(0)


def patch_token_scores(
    cache: Any,
    directions: Float[Tensor, "n_text d_embed"] | Float[Tensor, "batch n_text d_embed"],
    layers: int | Sequence[int] | None = None,
    ln_mode: LnMode = "center",
    normalize: bool = False,
) -> Float[Tensor, "batch n_text n_patches"]:
    """Per-patch direct effects of a cached batch dotted with directions (no class token).

    Args:
        cache: An :class:`vision_lens.ActivationCache` from
            :meth:`~vision_lens.HookedViT.run_with_decomposition_cache` (or a full cache).
        directions: ``[n_text, d_embed]`` shared, or ``[batch, n_text, d_embed]`` per image.
        layers: Layers whose attention terms are summed (default all, as in the paper).
        ln_mode: Final-LayerNorm treatment (see :mod:`vision_lens.cache`).
        normalize: Divide by the image embedding's norm.

    Returns:
        ``[batch, n_text, n_patches]``; summed over patches it is the patch tokens' part of
        ``<image_embedding, direction>``.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64, d_embed=16,
        ...                          image_size=16, patch_size=8)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> _, cache = model.run_with_decomposition_cache(torch.randn(2, 3, 16, 16))
        >>> patch_token_scores(cache, torch.randn(5, 16)).shape
        torch.Size([2, 5, 4])
    """
    tokens = cache.decompose_tokens(layers=layers, ln_mode=ln_mode, normalize=normalize)
    patches = tokens[:, cache.model.readout.patch_positions]  # drop prefix tokens
    directions = directions.to(patches)
    if directions.dim() == 2:
        return torch.einsum("bpd,td->btp", patches, directions)
    return torch.einsum("bpd,btd->btp", patches, directions)


def segment(
    model: Any,
    clip: Any,
    images: Float[Tensor, "N 3 height width"] | Sequence[Any],
    texts: TextsLike,
    reference_texts: Sequence[str] | Tensor | None = None,
    layers: int | Sequence[int] | None = None,
    batch_size: int = 32,
    *,
    subtract_reference: bool = True,
    upsample: bool = True,
    ln_mode: LnMode = "center",
    normalize: bool = False,
    device: str | torch.device | None = "cpu",
    progress: bool = False,
) -> Float[Tensor, "N n_text height width"]:
    """Zero-shot segmentation heatmaps from the token decomposition.

    For every image and text: each patch token's direct contribution to the image embedding
    (attention layers ``layers``, all heads) dotted with the unit text embedding, minus the mean
    of that over ``reference_texts``, on the patch grid, bilinearly upsampled to the input size.

    Args:
        model: A :class:`vision_lens.HookedViT`.
        clip: The matching :class:`vision_lens.CLIPText` (may be ``None`` when ``texts`` and
            ``reference_texts`` are embeddings).
        images: Preprocessed images ``[N, 3, H, W]`` (``H, W`` = the model's input size), or PIL
            images (run through ``model.preprocess``).
        texts: One list of strings for all images (``[n_text]``), one list per image (ImageNet
            protocol: ``[[class_text] for each image]``), or embeddings ``[n_text, d_embed]`` /
            ``[N, n_text, d_embed]``.
        reference_texts: Texts (or embeddings ``[n_ref, d_embed]``) whose mean heatmap is
            subtracted; default the distinct texts in ``texts``. For a benchmark pass every class
            description (the paper: all ImageNet classes).
        layers: Attention layers whose token terms are summed (default all, as in the paper).
        batch_size: Images per forward pass (memory is bounded by one batch plus the output).
        subtract_reference: Subtract the reference mean (the paper's footnote).
        upsample: Upsample to the input size; ``False`` returns the patch grid
            ``[N, n_text, rows, cols]``.
        ln_mode: Final-LayerNorm treatment, ``"center"`` or ``"split"``.
        normalize: Divide the terms by the embedding's norm (changes the scale per image only).
        device: Where the heatmaps are gathered (``None``: the model's device).
        progress: Show a tqdm progress bar.

    Returns:
        ``[N, n_text, H, W]`` float32 heatmaps (higher = more of that text), or
        ``[N, n_text, rows, cols]`` with ``upsample=False``.

    Raises:
        ValueError: Images of the wrong size or layout, empty texts, per-image lists that do not
            match the images, embeddings of the wrong width, or a lone text to subtract from.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64, d_embed=16,
        ...                          image_size=16, patch_size=8)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> heat = segment(model, None, torch.randn(3, 3, 16, 16), torch.randn(4, 16))
        >>> heat.shape
        torch.Size([3, 4, 16, 16])
        >>> masks = binarize(heat[:, 0])  # [3, 16, 16] bool, foreground of the first text
        >>> model, clip = vl.load_clip("ViT-B-16", "laion2b_s34b_b88k")  # doctest: +SKIP
        >>> heat = segment(model, clip, images, ["a dog", "a cat", "grass"])  # doctest: +SKIP
    """
    images = _as_images(model, images)
    directions, per_image = text_directions(model, clip, texts, n_images=images.shape[0])
    if subtract_reference:
        mean = _reference_direction(model, clip, reference_texts, directions, per_image, True)
        directions = directions - mean
    size = model.cfg.image_size
    rows, cols = model.cfg.grid_size
    out = []
    bar = tqdm(total=images.shape[0], desc="segmenting", unit="img", disable=not progress)
    for start in range(0, images.shape[0], _check_batch_size(batch_size)):
        batch = images[start : start + batch_size]
        _, cache = model.run_with_decomposition_cache(batch)
        dirs = directions[start : start + batch_size] if per_image else directions
        scores = patch_token_scores(cache, dirs, layers, ln_mode, normalize)
        grid = scores.float().view(batch.shape[0], -1, rows, cols)
        if upsample:
            grid = upsample_heatmaps(grid, size)
        out.append(grid.to(device or grid.device))
        bar.update(batch.shape[0])
    bar.close()
    return torch.cat(out)


def segment_heads(
    model: Any,
    clip: Any,
    images: Float[Tensor, "N 3 height width"] | Sequence[Any],
    texts: Sequence[str] | Tensor,
    reference_texts: Sequence[str] | Tensor | None = None,
    layers: int | Sequence[int] | None = None,
    heads: int | Sequence[int] | None = None,
    batch_size: int = 16,
    *,
    subtract_reference: bool = True,
    upsample: bool = True,
    ln_mode: LnMode = "center",
    normalize: bool = False,
    device: str | torch.device | None = "cpu",
    progress: bool = False,
) -> Float[Tensor, "N layer head n_text height width"]:
    """Per-head zero-shot heatmaps: the joint head x token decomposition dotted with texts.

    Same as :func:`segment` but the patch terms are kept per attention head (computed by
    :meth:`~vision_lens.ActivationCache.decompose_heads_tokens` with the text directions folded
    into the head weights, so no ``d_embed``-wide per-token tensor is built). Summed over all
    layers and heads it equals :func:`segment`. Use it to see where one head finds each of its
    TextSpan descriptions (the paper's Figure 7).

    Args:
        model: A :class:`vision_lens.HookedViT`.
        clip: The matching :class:`vision_lens.CLIPText` (``None`` if ``texts`` are embeddings).
        images: Preprocessed images ``[N, 3, H, W]`` or PIL images.
        texts: Strings or embeddings ``[n_text, d_embed]`` (e.g. a head's TextSpan basis), the
            same for every image.
        reference_texts: Texts or embeddings whose mean heatmap is subtracted (default the
            texts themselves).
        layers: Layers to keep (default all; the output is large: pick the ones you need).
        heads: Heads to keep within each layer (default all).
        batch_size: Images per forward pass.
        subtract_reference: Subtract the reference mean.
        upsample: Upsample to the input size (else ``[..., rows, cols]``).
        ln_mode: ``"center"`` or ``"split"``.
        normalize: Divide by the embedding's norm.
        device: Where the result is gathered.
        progress: Show a tqdm progress bar.

    Returns:
        ``[N, layer, head, n_text, H, W]`` (``layer``/``head`` index ``layers``/``heads``).

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64, d_embed=16,
        ...                          image_size=16, patch_size=8)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> segment_heads(model, None, torch.randn(2, 3, 16, 16), torch.randn(3, 16),
        ...               layers=[-1], heads=[1]).shape
        torch.Size([2, 1, 1, 3, 16, 16])
    """
    images = _as_images(model, images)
    if not isinstance(texts, Tensor) and texts and not isinstance(texts[0], str):
        raise ValueError(
            "segment_heads takes one list of texts (or [n_text, d_embed]) for all images; for "
            "per-image texts call it per group."
        )
    directions, per_image = text_directions(model, clip, texts)
    if per_image:
        raise ValueError("segment_heads takes embeddings [n_text, d_embed], not [N, n_text, d].")
    if subtract_reference:
        directions = directions - _reference_direction(
            model, clip, reference_texts, directions, False, True
        )
    head_index = _head_indices(heads, model.cfg.n_heads)
    size = model.cfg.image_size
    rows, cols = model.cfg.grid_size
    out = []
    bar = tqdm(total=images.shape[0], desc="segmenting heads", unit="img", disable=not progress)
    for start in range(0, images.shape[0], _check_batch_size(batch_size)):
        batch = images[start : start + batch_size]
        _, cache = model.run_with_decomposition_cache(batch)
        scores = cache.decompose_heads_tokens(
            directions=directions, layers=layers, ln_mode=ln_mode, normalize=normalize
        )  # [b, layer, head, pos, n_text]
        scores = scores[:, :, head_index, 1:].float()
        grid = scores.permute(0, 1, 2, 4, 3).reshape(*scores.shape[:3], -1, rows, cols)
        if upsample:
            grid = upsample_heatmaps(grid, size)
        out.append(grid.to(device or grid.device))
        bar.update(batch.shape[0])
    bar.close()
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def _as_images(model: Any, images: Any) -> Tensor:
    """``[N, 3, H, W]`` float tensor on the model's device, with clear errors."""
    expected = tuple(model.cfg.image_size)
    if not isinstance(images, Tensor):
        if isinstance(images, Sequence) and images and hasattr(images[0], "convert"):
            if model.preprocess is None:
                raise ValueError("This model has no preprocess transform; pass a tensor.")
            images = torch.stack([model.preprocess(image) for image in images])
        else:
            raise TypeError(
                "images must be a preprocessed tensor [N, 3, H, W] or a list of PIL images, got "
                f"{type(images).__name__}."
            )
    if images.dim() == 3:
        raise ValueError(
            f"Got a single image {tuple(images.shape)}; add a batch dimension (unsqueeze(0))."
        )
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}.")
    if images.shape[0] == 0:
        raise ValueError("images is empty.")
    if tuple(images.shape[-2:]) != expected:
        raise ValueError(
            f"Images are {tuple(images.shape[-2:])} pixels but the model takes {expected}; "
            "resize and crop them with model.preprocess."
        )
    if not images.is_floating_point():
        raise TypeError(
            f"images must be float (normalised as by model.preprocess), got {images.dtype}."
        )
    return images.to(device=model.device, dtype=model.dtype)


def _check_text_list(texts: Any) -> list[Any]:
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
    kinds = {isinstance(t, str) for t in texts}
    if kinds == {True}:
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


def _encode(clip: Any, texts: list[str], d_embed: int) -> Tensor:
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


def _check_batch_size(batch_size: Any) -> int:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return batch_size


def _head_indices(heads: int | Sequence[int] | None, n_heads: int) -> list[int]:
    if heads is None:
        return list(range(n_heads))
    heads = [heads] if isinstance(heads, int) else list(heads)
    for head in heads:
        if not -n_heads <= int(head) < n_heads:
            raise IndexError(f"Head {head} does not exist: the model has {n_heads} heads.")
    return [int(h) % n_heads for h in heads]
