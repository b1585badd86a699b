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
al. 2021: clip at 0, min-max normalise, threshold at the mean). Inputs, texts and the batched
loop are shared with the baselines (:mod:`vision_lens.analysis.baselines`) through
``vision_lens.analysis.heatmaps``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from vision_lens.analysis.heatmaps import (
    TextsLike,
    gather_heatmaps,
    model_images,
    text_directions,
)
from vision_lens.analysis.seg_metrics import binarize, rescale_heatmaps
from vision_lens.cache import LnMode
from vision_lens.protocols import TextEncoder
from vision_lens.utils.checks import check_finite, head_indices
from vision_lens.utils.deprecation import renamed_keyword
from vision_lens.utils.grids import upsample_grid

if TYPE_CHECKING:
    from PIL.Image import Image

    from vision_lens.cache import ActivationCache
    from vision_lens.hooked_vit import HookedViT

__all__ = [
    "binarize",
    "rescale_heatmaps",
    "patch_token_scores",
    "segment",
    "segment_heads",
    "text_directions",
    "upsample_heatmaps",
]

#: Bilinear upsampling of patch-grid heatmaps to the input size: the library's one upsampler,
#: ``vision_lens.utils.grids.upsample_grid``, under the name this module has always used.
upsample_heatmaps = upsample_grid


@renamed_keyword("normalize", "unit_output")
def patch_token_scores(
    cache: ActivationCache,
    directions: Float[Tensor, "n_text d_embed"] | Float[Tensor, "batch n_text d_embed"],
    layers: int | Sequence[int] | None = None,
    ln_mode: LnMode = "center",
    unit_output: bool = False,
) -> Float[Tensor, "batch n_text n_patches"]:
    """Per-patch direct effects of a cached batch dotted with directions (no class token).

    Args:
        cache: An :class:`vision_lens.ActivationCache` from
            :meth:`~vision_lens.HookedViT.run_with_decomposition_cache` (or a full cache).
        directions: ``[n_text, d_embed]`` shared, or ``[batch, n_text, d_embed]`` per image.
        layers: Layers whose attention terms are summed (default all, as in the paper).
        ln_mode: Final-LayerNorm treatment (see :mod:`vision_lens.cache`).
        unit_output: Divide by the image embedding's norm (``normalize=`` before 0.2).

    Returns:
        ``[batch, n_text, n_patches]``; summed over patches it is the patch tokens' part of
        ``<image_embedding, direction>``.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny(n_heads=2)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> _, cache = model.run_with_decomposition_cache(torch.randn(2, 3, 16, 16))
        >>> patch_token_scores(cache, torch.randn(5, 16)).shape
        torch.Size([2, 5, 4])
    """
    if not isinstance(directions, Tensor):
        raise TypeError(
            f"directions must be a tensor [n_text, d_embed] or [batch, n_text, d_embed], got "
            f"{type(directions).__name__}."
        )
    if directions.dim() not in (2, 3):
        raise ValueError(
            "directions must be [n_text, d_embed] or [batch, n_text, d_embed], got shape "
            f"{tuple(directions.shape)}."
        )
    check_finite(directions, "directions")
    tokens = cache.decompose_tokens(layers=layers, ln_mode=ln_mode, unit_output=unit_output)
    patches = tokens[:, cache.model.readout.patch_positions]  # drop prefix tokens
    if directions.shape[-1] != patches.shape[-1]:
        raise ValueError(
            f"directions are {directions.shape[-1]}-wide but the model embeds into "
            f"{patches.shape[-1]} dimensions; were they made by the same CLIP model?"
        )
    directions = directions.to(patches)
    if directions.dim() == 2:
        return torch.einsum("bpd,td->btp", patches, directions)
    return torch.einsum("bpd,btd->btp", patches, directions)


@renamed_keyword("normalize", "unit_output")
def segment(
    model: HookedViT,
    clip: TextEncoder | None,
    images: Float[Tensor, "N 3 height width"] | Sequence[Image],
    texts: TextsLike,
    reference_texts: Sequence[str] | Tensor | None = None,
    layers: int | Sequence[int] | None = None,
    batch_size: int = 32,
    *,
    subtract_reference: bool = True,
    upsample: bool = True,
    ln_mode: LnMode = "center",
    unit_output: bool = False,
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
        unit_output: Divide the terms by the embedding's norm (changes the scale per image
            only; ``normalize=`` before 0.2).
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
        >>> cfg = vl.HookedViTConfig.tiny(n_heads=2)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> heat = segment(model, None, torch.randn(3, 3, 16, 16), torch.randn(4, 16))
        >>> heat.shape
        torch.Size([3, 4, 16, 16])
        >>> masks = binarize(heat[:, 0])  # [3, 16, 16] bool, foreground of the first text
        >>> model, clip = vl.load_clip("ViT-B-16", "laion2b_s34b_b88k")  # doctest: +SKIP
        >>> heat = segment(model, clip, images, ["a dog", "a cat", "grass"])  # doctest: +SKIP
    """
    images = model_images(model, images)
    directions, per_image = text_directions(model, clip, texts, n_images=images.shape[0])
    if subtract_reference:
        directions = directions - _reference_mean(model, clip, reference_texts, directions)

    def scores(batch: Tensor, index: slice) -> Tensor:
        _, cache = model.run_with_decomposition_cache(batch)
        dirs = directions[index] if per_image else directions
        return patch_token_scores(cache, dirs, layers, ln_mode, unit_output)  # [b, text, patch]

    return gather_heatmaps(
        model, images, scores, batch_size, "segmenting", upsample, device, progress
    )


@renamed_keyword("normalize", "unit_output")
def segment_heads(
    model: HookedViT,
    clip: TextEncoder | None,
    images: Float[Tensor, "N 3 height width"] | Sequence[Image],
    texts: Sequence[str] | Tensor,
    reference_texts: Sequence[str] | Tensor | None = None,
    layers: int | Sequence[int] | None = None,
    heads: int | Sequence[int] | None = None,
    batch_size: int = 16,
    *,
    subtract_reference: bool = True,
    upsample: bool = True,
    ln_mode: LnMode = "center",
    unit_output: bool = False,
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
        unit_output: Divide by the embedding's norm (``normalize=`` before 0.2).
        device: Where the result is gathered.
        progress: Show a tqdm progress bar.

    Returns:
        ``[N, layer, head, n_text, H, W]`` (``layer``/``head`` index ``layers``/``heads``).

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny(n_heads=2)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> segment_heads(model, None, torch.randn(2, 3, 16, 16), torch.randn(3, 16),
        ...               layers=[-1], heads=[1]).shape
        torch.Size([2, 1, 1, 3, 16, 16])
    """
    images = model_images(model, images)
    if not isinstance(texts, Tensor) and texts and not isinstance(texts[0], str):
        raise ValueError(
            "segment_heads takes one list of texts (or [n_text, d_embed]) for all images; for "
            "per-image texts call it per group."
        )
    directions, per_image = text_directions(model, clip, texts)
    if per_image:
        raise ValueError("segment_heads takes embeddings [n_text, d_embed], not [N, n_text, d].")
    if subtract_reference:
        directions = directions - _reference_mean(model, clip, reference_texts, directions)
    head_index = head_indices(heads, model.cfg.n_heads, unique=False)
    patches = model.readout.patch_positions

    def scores(batch: Tensor, index: slice) -> Tensor:
        _, cache = model.run_with_decomposition_cache(batch)
        out = cache.decompose_heads_tokens(
            directions=directions, layers=layers, ln_mode=ln_mode, unit_output=unit_output
        )  # [b, layer, head, pos, text]
        return out[:, :, head_index, patches].transpose(-1, -2)  # [b, layer, head, text, patch]

    return gather_heatmaps(
        model, images, scores, batch_size, "segmenting heads", upsample, device, progress
    )


def _reference_mean(
    model: HookedViT,
    clip: TextEncoder | None,
    reference_texts: Sequence[str] | Tensor | None,
    directions: Tensor,
) -> Float[Tensor, " d_embed"]:
    """Mean unit reference embedding (default: the distinct ``directions`` themselves)."""
    if reference_texts is None:
        pool = torch.unique(directions.reshape(-1, directions.shape[-1]), dim=0)
        if pool.shape[0] < 2:
            raise ValueError(
                "Subtracting the mean heatmap over a single text leaves all zeros: pass "
                "reference_texts (e.g. every class description of the dataset) or "
                "subtract_reference=False."
            )
        return pool.mean(0)
    reference, ref_per_image = text_directions(model, clip, reference_texts, name="reference_texts")
    if ref_per_image:
        raise ValueError("reference_texts must be one flat list (or [n_ref, d_embed]).")
    return reference.mean(0)
