"""Property-based retrieval through individual heads (Gandelsman et al. 2024, §4.2, Figure 6).

Some heads specialise in one image property (colour, shape, count, location). Comparing two
images through one head's direct effect, ``<c_head(I), c_head(I')>``, gives a similarity that
only sees that property; comparing a head's outputs with a text direction retrieves the images
that head "writes" the text for (Figure 5).

Inputs are plain tensors: one head's (or a sum of heads') outputs ``[images, d_embed]``, or
several at once ``[group, images, d_embed]`` (e.g. every head of a
:class:`~vision_lens.analysis.ablation.Components`, from ``components.head_outputs()``; or
``outputs.sum(0)`` to retrieve through a set of heads together). Scores are computed in chunks
of queries, so the ``[queries, images]`` matrix never has to fit in memory at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from vision_lens.utils.checks import check_finite

__all__ = ["Neighbors", "image_neighbors", "text_to_image"]


@dataclass
class Neighbors:
    """Top-``k`` retrieval results, best first.

    Attributes:
        indices: ``[..., n_query, k]`` indices of the retrieved images.
        scores: ``[..., n_query, k]`` their similarity scores.
    """

    indices: Int[Tensor, "... query k"]
    scores: Float[Tensor, "... query k"]


def _as_groups(outputs: Tensor, name: str = "outputs") -> tuple[Tensor, bool]:
    if not isinstance(outputs, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(outputs).__name__}.")
    if outputs.dim() not in (2, 3):
        raise ValueError(
            f"{name} must be [images, d_embed] or [group, images, d_embed], got "
            f"{tuple(outputs.shape)}."
        )
    if not outputs.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got {outputs.dtype}.")
    if outputs.shape[-2] == 0:
        raise ValueError(f"{name} holds no images.")
    check_finite(outputs, name)
    return (outputs[None], True) if outputs.dim() == 2 else (outputs, False)


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be a positive int, got {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


def _check_k(k: int, n: int) -> None:
    _check_positive_int(k, "k")
    if k > n:
        raise ValueError(f"k={k} is larger than the number of candidate images ({n}).")


def _topk_chunked(
    queries: Tensor,
    keys: Tensor,
    k: int,
    exclude: Tensor | None,
    chunk_size: int,
) -> tuple[Tensor, Tensor]:
    """Top-k of ``queries @ keys^T`` per group; ``exclude`` ``[n_query]`` masks one key each."""
    all_scores, all_indices = [], []
    for start in range(0, queries.shape[1], chunk_size):
        scores = queries[:, start : start + chunk_size] @ keys.mT  # [g, c, n]
        if exclude is not None:
            rows = torch.arange(scores.shape[1], device=scores.device)
            scores[:, rows, exclude[start : start + chunk_size]] = -torch.inf
        top = scores.topk(k, dim=-1)
        all_scores.append(top.values)
        all_indices.append(top.indices)
    return torch.cat(all_scores, dim=1), torch.cat(all_indices, dim=1)


def image_neighbors(
    outputs: Float[Tensor, "images d_embed"] | Float[Tensor, "group images d_embed"],
    queries: Sequence[int] | Int[Tensor, " query"] | None = None,
    k: int = 5,
    *,
    exclude_self: bool = True,
    normalize: bool = False,
    chunk_size: int = 1024,
) -> Neighbors:
    """Nearest images through a head: rank images ``I'`` by ``<c(I), c(I')>``.

    Args:
        outputs: One head's (or a head set's summed) outputs ``[images, d_embed]``, or
            ``[group, images, d_embed]`` to do many heads at once.
        queries: Indices of the query images (default: every image).
        k: Neighbours per query.
        exclude_self: Never return the query image itself.
        normalize: Cosine similarity instead of the paper's inner product.
        chunk_size: Queries scored at once.

    Returns:
        :class:`Neighbors` with ``[n_query, k]`` (or ``[group, n_query, k]``) indices and scores.

    Example:
        >>> outputs = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1], [0.1, 0.8]])
        >>> image_neighbors(outputs, queries=[0, 2], k=1).indices.tolist()
        [[1], [3]]
    """
    groups, single = _as_groups(outputs)
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    n_images = groups.shape[1]
    if queries is None:
        index = torch.arange(n_images, device=groups.device)
    else:
        if isinstance(queries, str | bytes):
            raise TypeError(f"queries must be image indices (ints), got {queries!r}.")
        index = torch.as_tensor(queries, device=groups.device).reshape(-1)
        if index.numel() == 0:
            raise ValueError("queries is empty: pass at least one image index (or None for all).")
        if index.dtype == torch.bool or index.is_floating_point() or index.is_complex():
            # .long() would silently truncate 0.9 to image 0.
            raise TypeError(f"queries must be image indices (ints), got dtype {index.dtype}.")
        index = index.long()
        if index.numel() and (index.min() < -n_images or index.max() >= n_images):
            raise IndexError(f"query index out of range for {n_images} images.")
        index = index % n_images
    _check_k(k, n_images - 1 if exclude_self else n_images)
    if normalize:
        groups = F.normalize(groups, dim=-1)
    scores, indices = _topk_chunked(
        groups[:, index], groups, k, index if exclude_self else None, chunk_size
    )
    if single:
        scores, indices = scores[0], indices[0]
    return Neighbors(indices=indices, scores=scores)


def text_to_image(
    outputs: Float[Tensor, "images d_embed"] | Float[Tensor, "group images d_embed"],
    text_embeddings: Float[Tensor, "n_text d_embed"],
    k: int = 5,
    *,
    normalize: bool = False,
    chunk_size: int = 1024,
) -> Neighbors:
    """The images whose head outputs align best with each text: rank by ``<c(I), t>``.

    Args:
        outputs: One head's (or a head set's summed) outputs ``[images, d_embed]``, or
            ``[group, images, d_embed]``.
        text_embeddings: ``[n_text, d_embed]`` (e.g. ``clip.encode([...])``).
        k: Images per text.
        normalize: Cosine similarity (normalise the head outputs and texts) instead of the
            paper's inner product.
        chunk_size: Texts scored at once.

    Returns:
        :class:`Neighbors` with ``[n_text, k]`` (or ``[group, n_text, k]``) image indices and
        scores.

    Example:
        >>> outputs = torch.tensor([[1.0, 0], [0.2, 0.9], [0.7, 0.1]])
        >>> text_to_image(outputs, torch.tensor([[1.0, 0], [0, 1]]), k=2).indices.tolist()
        [[0, 2], [1, 2]]
    """
    groups, single = _as_groups(outputs)
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    if not isinstance(text_embeddings, Tensor):
        raise TypeError("text_embeddings must be a tensor [n_text, d_embed].")
    texts = text_embeddings[None] if text_embeddings.dim() == 1 else text_embeddings
    if texts.dim() != 2 or texts.shape[-1] != groups.shape[-1]:
        raise ValueError(
            f"text_embeddings must be [n_text, {groups.shape[-1]}] (the head outputs' width), got "
            f"{tuple(text_embeddings.shape)}: were they made by the same CLIP model?"
        )
    if texts.shape[0] == 0:
        raise ValueError("text_embeddings is empty: pass at least one text embedding.")
    check_finite(texts, "text_embeddings")
    _check_k(k, groups.shape[1])
    texts = texts.to(groups)
    if normalize:
        groups = F.normalize(groups, dim=-1)
        texts = F.normalize(texts, dim=-1)
    queries = texts.expand(groups.shape[0], -1, -1)
    scores, indices = _topk_chunked(queries, groups, k, None, chunk_size)
    if single:
        scores, indices = scores[0], indices[0]
    return Neighbors(indices=indices, scores=scores)
