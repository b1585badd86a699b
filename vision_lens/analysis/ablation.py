"""Mean-ablation of direct effects and its effect on zero-shot classification.

Because the image embedding is an exact sum of direct-effect terms (see
:meth:`vision_lens.ActivationCache.decompose_layers`), replacing a set of terms by their mean over
a reference set of images changes the embedding to
``sum_{c not in S} term_c + sum_{c in S} mean_ref(term_c)`` with no further forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor


def _check_terms(terms: Tensor) -> None:
    if not isinstance(terms, Tensor) or terms.dim() != 3:
        shape = tuple(terms.shape) if isinstance(terms, Tensor) else type(terms).__name__
        raise ValueError(
            f"terms must be a tensor [component, batch, d_embed] (as from decompose_layers), "
            f"got {shape}."
        )


def mean_ablate(
    terms: Float[Tensor, "component batch d_embed"],
    ablate: Sequence[int] | Tensor,
    reference: Float[Tensor, "component ref d_embed"] | None = None,
) -> Float[Tensor, "batch d_embed"]:
    """The embedding with the chosen direct-effect terms replaced by their reference means.

    Args:
        terms: Direct-effect terms ``[component, batch, d_embed]`` that sum to the embedding.
        ablate: Indices of the components to ablate, or a boolean mask ``[component]``.
        reference: Terms of the reference set whose means replace the ablated terms; defaults to
            ``terms`` itself (the mean over this batch).

    Returns:
        ``[batch, d_embed]``, the ablated embedding.

    Example:
        >>> terms = torch.randn(5, 8, 4)
        >>> torch.allclose(mean_ablate(terms, []), terms.sum(0))
        True
        >>> ablated = mean_ablate(terms, [0])
        >>> torch.allclose(ablated, terms[1:].sum(0) + terms[0].mean(0))
        True
    """
    _check_terms(terms)
    reference = terms if reference is None else reference
    _check_terms(reference)
    if reference.shape[0] != terms.shape[0] or reference.shape[2] != terms.shape[2]:
        raise ValueError(
            f"reference terms {tuple(reference.shape)} do not match terms {tuple(terms.shape)} "
            "in the component and d_embed axes."
        )
    mask = torch.zeros(terms.shape[0], dtype=torch.bool, device=terms.device)
    if isinstance(ablate, Tensor) and ablate.dtype == torch.bool:
        if ablate.shape != mask.shape:
            raise ValueError(f"boolean ablate mask must have shape {tuple(mask.shape)}.")
        mask = ablate.to(terms.device)
    else:
        index = torch.as_tensor(list(ablate) if not isinstance(ablate, Tensor) else ablate)
        if index.numel() and (index.min() < -terms.shape[0] or index.max() >= terms.shape[0]):
            raise IndexError(f"component index out of range for {terms.shape[0]} components.")
        mask[index.long().to(terms.device)] = True
    means = reference.mean(dim=1, keepdim=True).to(terms)
    kept = torch.where(mask[:, None, None], means.expand_as(terms), terms)
    return kept.sum(0)


def zero_shot_accuracy(
    embeddings: Float[Tensor, "batch d_embed"],
    class_weights: Float[Tensor, "n_classes d_embed"],
    labels: Int[Tensor, " batch"] | Sequence[int],
) -> float:
    """Fraction of images whose most similar class embedding is the true class.

    Embedding norms do not change the argmax, so unnormalised embeddings are fine.

    Example:
        >>> w = torch.eye(3)
        >>> zero_shot_accuracy(torch.tensor([[2.0, 0, 0], [0, 0, 1]]), w, [0, 1])
        0.5
    """
    labels = torch.as_tensor(labels, device=embeddings.device)
    if embeddings.shape[-1] != class_weights.shape[-1]:
        raise ValueError(
            f"Image embeddings have width {embeddings.shape[-1]} but class weights have width "
            f"{class_weights.shape[-1]}: were they made by the same CLIP model?"
        )
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {embeddings.shape[0]} images.")
    predictions = (embeddings @ class_weights.to(embeddings).T).argmax(-1)
    return (predictions == labels).float().mean().item()


def cumulative_attention_ablation(
    terms: Float[Tensor, "component batch d_embed"],
    component_labels: Sequence[str],
    class_weights: Float[Tensor, "n_classes d_embed"],
    labels: Int[Tensor, " batch"] | Sequence[int],
    reference: Float[Tensor, "component ref d_embed"] | None = None,
) -> list[float]:
    """Zero-shot accuracy as attention layers ``0..l`` are mean-ablated together (the paper's
    Figure 3).

    Args:
        terms: ``decompose_layers`` terms of the evaluation images.
        component_labels: Their labels (``embed``, ``L0_attn``, ...).
        class_weights: Zero-shot classifier ``[n_classes, d_embed]``.
        labels: True class of each image.
        reference: Terms whose means replace the ablated ones (default: ``terms``).

    Returns:
        ``n_layers + 1`` accuracies: nothing ablated, then attention layers ``0..l`` ablated for
        ``l = 0, ..., n_layers - 1``.

    Example:
        >>> labels_ = ["embed", "L0_attn", "L0_mlp", "L1_attn", "L1_mlp", "bias"]
        >>> accs = cumulative_attention_ablation(torch.randn(6, 10, 3), labels_, torch.eye(3),
        ...                                      torch.zeros(10, dtype=torch.long))
        >>> len(accs)
        3
    """
    _check_terms(terms)
    if len(component_labels) != terms.shape[0]:
        raise ValueError(f"{len(component_labels)} labels for {terms.shape[0]} components.")
    attn = [i for i, name in enumerate(component_labels) if name.endswith("_attn")]
    return [
        zero_shot_accuracy(mean_ablate(terms, attn[:n], reference), class_weights, labels)
        for n in range(len(attn) + 1)
    ]
