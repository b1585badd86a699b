"""Zero-shot arithmetic on embeddings: similarity, and per-class mean prompt embeddings.

Model-free: the functions take embeddings (or a function that makes them), so they are the same
for open_clip and Hugging Face models. :class:`~vision_lens.text.CLIPText` builds its
``similarity``, ``classify`` and ``zero_shot_weights`` on them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from vision_lens.text.checks import as_matrix
from vision_lens.utils.batching import progress_bar


def similarity(
    image_embeds: Float[Tensor, "n_images d_embed"],
    text_embeds: Float[Tensor, "n_text d_embed"],
    normalize: bool = True,
) -> Float[Tensor, "n_images n_text"]:
    """Cosine similarity between image and text embeddings.

    The plain cosine (``normalize=True``) or dot product: no temperature and no bias. The
    model's logits, ``logit_scale * cosine (+ logit_bias for SigLIP)``, are
    :meth:`CLIPText.classify <vision_lens.text.CLIPText.classify>`.

    Args:
        image_embeds: ``[n_images, d_embed]`` (or one ``[d_embed]`` vector), e.g. from
            ``HookedViT``.
        text_embeds: ``[n_text, d_embed]`` (or one ``[d_embed]`` vector), e.g. from
            ``CLIPText.encode`` or ``CLIPText.zero_shot_weights``; moved to the image
            embeddings' device.
        normalize: Normalise both sides first (cosine similarity); ``False`` gives the plain
            dot product, e.g. for embeddings that are already unit norm or for direct-effect
            contributions that must stay additive.

    Returns:
        ``[n_images, n_text]``, in the promoted dtype of the two inputs.

    Raises:
        TypeError: An input is not a tensor.
        ValueError: An input is not 1-D or 2-D, or the embedding widths differ.

    Example:
        >>> similarity(torch.ones(2, 4), torch.eye(4)).shape
        torch.Size([2, 4])
    """
    image_embeds = as_matrix(image_embeds, "image_embeds")
    text_embeds = as_matrix(text_embeds, "text_embeds")
    if image_embeds.shape[-1] != text_embeds.shape[-1]:
        raise ValueError(
            f"image embeddings have width {image_embeds.shape[-1]} but text embeddings have "
            f"width {text_embeds.shape[-1]}: were they produced by the same CLIP model?"
        )
    dtype = torch.promote_types(image_embeds.dtype, text_embeds.dtype)
    image_embeds = image_embeds.to(dtype)
    text_embeds = text_embeds.to(device=image_embeds.device, dtype=dtype)
    if normalize:
        image_embeds = F.normalize(image_embeds, dim=-1)
        text_embeds = F.normalize(text_embeds, dim=-1)
    return image_embeds @ text_embeds.T


def mean_prompt_embeddings(
    embed: Callable[[list[str]], Tensor],
    prompts: Sequence[str],
    n_templates: int,
    *,
    batch_size: int,
    progress: bool = False,
) -> Float[Tensor, "n_classes d_embed"]:
    """Per class, the renormalised mean of its prompts' (unit-norm) embeddings.

    ``prompts`` lists ``n_templates`` prompts per class, class after class; they are embedded in
    batches of ``batch_size`` regardless of class boundaries, and summed per class in float32.

    Args:
        embed: ``list[str] ->`` unit-norm ``[n, d_embed]`` embeddings (one forward pass).
        prompts: ``n_classes * n_templates`` prompts, grouped by class.
        n_templates: Prompts per class.
        batch_size: Prompts per call of ``embed``.
        progress: Show a progress bar over prompts.

    Returns:
        ``[n_classes, d_embed]`` unit-norm rows in the dtype ``embed`` returns, computed under
        ``torch.no_grad()``.

    Example:
        >>> embed = lambda texts: F.normalize(torch.tensor([[1.0, len(t)] for t in texts]), dim=-1)
        >>> mean_prompt_embeddings(embed, ["a", "bb", "c", "c"], 2, batch_size=3).shape
        torch.Size([2, 2])
    """
    n_classes = len(prompts) // n_templates
    sums: Tensor | None = None
    bar = progress_bar(len(prompts), "zero-shot prompts", enabled=progress, unit="text")
    with torch.no_grad(), bar:
        for start in range(0, len(prompts), batch_size):
            batch = list(prompts[start : start + batch_size])
            emb = embed(batch)
            if sums is None:
                sums = emb.new_zeros(n_classes, emb.shape[-1], dtype=torch.float32)
            class_idx = torch.arange(start, start + len(batch), device=emb.device)
            sums.index_add_(0, class_idx // n_templates, emb.float())
            bar.update(len(batch))
        assert sums is not None
        mean = sums / n_templates
        weights = mean / mean.norm(dim=-1, keepdim=True)
    return weights.to(emb.dtype)


__all__ = ["mean_prompt_embeddings", "similarity"]
