"""Mean-ablation of direct effects and its effect on zero-shot classification.

Because the image embedding is an exact sum of direct-effect terms (see
:meth:`vision_lens.ActivationCache.decompose_layers`), replacing a set of terms by their mean over
a reference set of images changes the embedding to
``sum_{c not in S} term_c + sum_{c in S} mean_ref(term_c)`` with no further forward pass.

Layer level: :func:`mean_ablate`, :func:`cumulative_attention_ablation` (the paper's Figure 3).
Head level: :class:`~vision_lens.analysis.direct_effects.Components` (layer terms with chosen
attention layers split into heads, from :func:`decompose_components` or :func:`split_heads`, both
in :mod:`vision_lens.analysis.direct_effects`), then :func:`ablated_embedding`,
:func:`head_ablation_accuracy`, :func:`mlp_ablation` (Table 3 / Table 4), :func:`replace_heads`,
:func:`textspan_replacement_accuracy` and :func:`accuracy_vs_m` (Figure 4). One forward pass
serves them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from vision_lens.analysis.direct_effects import (  # re-exported: their home before 0.2
    Components,
    HeadLabel,
    check_terms,
    decompose_components,
    head_label,
    split_heads,
)
from vision_lens.utils.checks import check_finite

if TYPE_CHECKING:
    from vision_lens.analysis.textspan_result import TextSpanResult

__all__ = [
    "Components",
    "HeadLabel",
    "ablated_embedding",
    "accuracy_vs_m",
    "cumulative_attention_ablation",
    "decompose_components",
    "head_ablation_accuracy",
    "head_label",
    "mean_ablate",
    "mlp_ablation",
    "replace_heads",
    "split_heads",
    "textspan_replacement_accuracy",
    "zero_shot_accuracy",
]


def _mean_ablated_sum(
    terms: Float[Tensor, "component images d_embed"],
    mask: Bool[Tensor, " component"],
    reference: Float[Tensor, "component ref d_embed"],
    replaced: Mapping[int, Tensor] | None = None,
) -> Float[Tensor, "images d_embed"]:
    """The one mean-ablation: the terms summed, those in ``mask`` replaced by their mean over
    ``reference``'s images and those in ``replaced`` by the given tensors."""
    return _ablated_sum(terms, mask, reference.mean(dim=1, keepdim=True), replaced)


def _ablated_sum(
    terms: Float[Tensor, "component images d_embed"],
    mask: Bool[Tensor, " component"],
    means: Float[Tensor, "component 1 d_embed"],
    replaced: Mapping[int, Tensor] | None = None,
) -> Float[Tensor, "images d_embed"]:
    """:func:`_mean_ablated_sum` with the means given ``[component, 1, d_embed]``."""
    means = means.to(terms)
    out = torch.where(mask[:, None, None].to(terms.device), means, terms)
    if replaced:
        out = out.clone()
        for index, value in replaced.items():
            out[index] = value
    return out.sum(0)


def mean_ablate(
    terms: Float[Tensor, "component batch d_embed"],
    ablate: Sequence[int] | Tensor,
    reference: Float[Tensor, "component ref d_embed"] | None = None,
    *,
    means: Float[Tensor, "component d_embed"] | Mapping[int, Tensor] | None = None,
) -> Float[Tensor, "batch d_embed"]:
    """The embedding with the chosen direct-effect terms replaced by their reference means.

    Args:
        terms: Direct-effect terms ``[component, batch, d_embed]`` that sum to the embedding.
        ablate: Indices of the components to ablate, or a boolean mask ``[component]``.
        reference: Terms of the reference set whose means replace the ablated terms; defaults to
            ``terms`` itself (the mean over this batch).
        means: Precomputed reference means instead of ``reference`` (e.g. ``sum / count`` of a
            streamed ``"mean:<hook>"`` product, see :mod:`vision_lens.analysis.moments`): a
            ``[component, d_embed]`` tensor aligned with ``terms``, or ``{component index:
            [d_embed] mean}`` covering at least the ablated components. Cast to ``terms``' dtype.

    Returns:
        ``[batch, d_embed]``, the ablated embedding.

    Raises:
        ValueError: Both ``reference`` and ``means``; means of the wrong shape, non-finite, or
            missing for an ablated component.

    Example:
        >>> terms = torch.randn(5, 8, 4)
        >>> torch.allclose(mean_ablate(terms, []), terms.sum(0))
        True
        >>> ablated = mean_ablate(terms, [0])
        >>> torch.allclose(ablated, terms[1:].sum(0) + terms[0].mean(0))
        True
        >>> torch.allclose(mean_ablate(terms, [0], means={0: terms[0].mean(0)}), ablated)
        True
    """
    check_terms(terms)
    if means is not None and reference is not None:
        raise ValueError("Pass reference (terms to average) or means (their means), not both.")
    if means is None:
        reference = terms if reference is None else reference
        check_terms(reference, "reference")
        if reference.shape[0] != terms.shape[0] or reference.shape[2] != terms.shape[2]:
            raise ValueError(
                f"reference terms {tuple(reference.shape)} do not match terms "
                f"{tuple(terms.shape)} in the component and d_embed axes."
            )
    mask = torch.zeros(terms.shape[0], dtype=torch.bool, device=terms.device)
    if isinstance(ablate, Tensor) and ablate.dtype == torch.bool:
        if ablate.shape != mask.shape:
            raise ValueError(f"boolean ablate mask must have shape {tuple(mask.shape)}.")
        mask = ablate.to(terms.device)
    else:
        if isinstance(ablate, str | bytes):
            raise TypeError(f"ablate must be component indices or a boolean mask, got {ablate!r}.")
        index = torch.as_tensor(list(ablate) if not isinstance(ablate, Tensor) else ablate)
        if index.numel() and (index.is_floating_point() or index.dtype == torch.bool):
            # .long() would silently truncate 0.9 to component 0.
            raise TypeError(
                f"ablate must be int component indices or a boolean mask of shape "
                f"{tuple(mask.shape)}, got dtype {index.dtype}."
            )
        if index.numel() and (index.min() < -terms.shape[0] or index.max() >= terms.shape[0]):
            raise IndexError(f"component index out of range for {terms.shape[0]} components.")
        mask[index.long().to(terms.device)] = True
    if means is None:
        return _mean_ablated_sum(terms, mask, reference)
    return _ablated_sum(terms, mask, _given_means(terms, mask, means))


def _given_means(
    terms: Tensor, mask: Tensor, means: Tensor | Mapping[int, Tensor]
) -> Float[Tensor, "component 1 d_embed"]:
    """``means`` (a ``[component, d]`` tensor or ``{index: [d]}``) as ``[component, 1, d]``."""
    n, d = terms.shape[0], terms.shape[2]
    if isinstance(means, Tensor):
        if tuple(means.shape) != (n, d):
            raise ValueError(
                f"means must be [component, d_embed] = {(n, d)} to match terms "
                f"{tuple(terms.shape)}, got {tuple(means.shape)}."
            )
        check_finite(means, "means")
        return means[:, None].to(terms)
    if not isinstance(means, Mapping):
        raise TypeError(
            f"means must be a [component, d_embed] tensor or a {{component index: mean}} dict, "
            f"got {type(means).__name__}."
        )
    out = torch.zeros(n, 1, d, dtype=terms.dtype, device=terms.device)
    given = torch.zeros(n, dtype=torch.bool)
    for key, value in means.items():
        if isinstance(key, bool) or not isinstance(key, int | np.integer):
            raise TypeError(
                f"means keys must be component indices (ints), got {key!r}; map hook or label "
                "names to indices first (e.g. Components.index(label))."
            )
        if not -n <= int(key) < n:
            raise IndexError(f"means key {key} out of range for {n} components.")
        if not isinstance(value, Tensor) or tuple(value.shape) != (d,):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"means[{key}] must be a [d_embed] = [{d}] tensor, got {shape}.")
        check_finite(value, f"means[{key}]")
        out[int(key) % n, 0] = value.to(terms)
        given[int(key) % n] = True
    missing = [i for i in mask.nonzero().flatten().tolist() if not given[i]]
    if missing:
        raise ValueError(f"No mean given for ablated component(s) {missing}.")
    return out


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
    check_finite(embeddings, "embeddings")
    check_finite(class_weights, "class_weights")
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
    check_terms(terms)
    if len(component_labels) != terms.shape[0]:
        raise ValueError(f"{len(component_labels)} labels for {terms.shape[0]} components.")
    attn = [i for i, name in enumerate(component_labels) if name.endswith("_attn")]
    return [
        zero_shot_accuracy(mean_ablate(terms, attn[:n], reference), class_weights, labels)
        for n in range(len(attn) + 1)
    ]


# ---------------------------------------------------------------------- ablations
def _reference_terms(components: Components, reference: Components | Tensor | None) -> Tensor:
    if reference is None:
        return components.terms
    if isinstance(reference, Components):
        if reference.labels != components.labels:
            raise ValueError("reference components must have the same labels as components.")
        return reference.terms
    check_terms(reference, "reference")
    if reference.shape[0] != components.terms.shape[0]:
        raise ValueError(
            f"reference has {reference.shape[0]} components, components have "
            f"{components.terms.shape[0]}."
        )
    return reference


def _as_index(components: Components, items: Iterable[str | int | HeadLabel]) -> list[int]:
    out = []
    for item in items:
        if isinstance(item, str):
            out.extend(components.index(item))
        elif isinstance(item, tuple):
            out.extend(components.head_indices([item]))
        else:
            if isinstance(item, bool) or not isinstance(item, int | np.integer):
                raise TypeError(
                    f"Components are named by label ('L11H3'), (layer, head) or int index, got "
                    f"{item!r}."
                )
            index = int(item)
            if not -len(components.labels) <= index < len(components.labels):
                raise IndexError(f"component index {index} out of range.")
            out.append(index % len(components.labels))
    return out


def ablated_embedding(
    components: Components,
    ablate: Iterable[str | int | HeadLabel] = (),
    *,
    replace: Mapping[str | HeadLabel, Tensor] | None = None,
    keep: Iterable[str | int | HeadLabel] | None = None,
    reference: Components | Tensor | None = None,
) -> Float[Tensor, "images d_embed"]:
    """The image embedding with components mean-ablated and/or replaced.

    Args:
        components: The terms.
        ablate: Components to replace by their mean over ``reference`` (labels such as
            ``"L11H3"``, ``"L5_mlp"``, ``(layer, head)`` pairs or indices).
        replace: Components to replace by given tensors ``[images, d_embed]`` (e.g. TextSpan
            reconstructions).
        keep: Instead of ``ablate``: mean-ablate every component *not* listed here (nor in
            ``replace``).
        reference: Images whose means are used (default: ``components`` themselves).

    Returns:
        ``[images, d_embed]``.

    Example:
        >>> c = Components(torch.randn(3, 5, 2), ["embed", "L0H0", "bias"])
        >>> e = ablated_embedding(c, ["L0H0"])
        >>> torch.allclose(e, c.terms[0] + c.terms[1].mean(0) + c.terms[2])
        True
        >>> only_head = ablated_embedding(c, keep=["L0H0"])  # everything else mean-ablated
        >>> torch.allclose(only_head, c.terms[1] + c.terms[[0, 2]].mean(1).sum(0))
        True
    """
    ref = _reference_terms(components, reference)
    n = len(components.labels)
    mask = torch.zeros(n, dtype=torch.bool)
    replaced = {}
    for key, value in (replace or {}).items():
        (index,) = _as_index(components, [key])
        if not isinstance(value, Tensor):
            raise TypeError(
                f"replacement for {components.labels[index]} must be a tensor, got "
                f"{type(value).__name__}."
            )
        if value.shape != components.terms.shape[1:]:
            raise ValueError(
                f"replacement for {components.labels[index]} must be "
                f"{tuple(components.terms.shape[1:])}, got {tuple(value.shape)}."
            )
        check_finite(value, f"replacement for {components.labels[index]}")
        replaced[index] = value.to(components.terms)
    if keep is not None:
        kept = set(_as_index(components, keep)) | set(replaced)
        mask[[i for i in range(n) if i not in kept]] = True
    else:
        mask[_as_index(components, ablate)] = True
    for index in replaced:
        mask[index] = False
    return _mean_ablated_sum(components.terms, mask, ref, replaced)


def head_ablation_accuracy(
    components: Components,
    heads: Sequence[HeadLabel],
    class_weights: Float[Tensor, "n_classes d_embed"],
    labels: Int[Tensor, " images"] | Sequence[int],
    reference: Components | Tensor | None = None,
) -> float:
    """Zero-shot accuracy after mean-ablating a set of heads (everything else intact).

    Example:
        >>> c = Components(torch.randn(3, 8, 4), ["embed", "L0H0", "L0H1"])
        >>> head_ablation_accuracy(c, [], torch.eye(4), [0] * 8) == zero_shot_accuracy(
        ...     c.total(), torch.eye(4), [0] * 8)
        True
    """
    embedding = ablated_embedding(components, [tuple(h) for h in heads], reference=reference)
    return zero_shot_accuracy(embedding, class_weights, labels)


def mlp_ablation(
    components: Components,
    class_weights: Float[Tensor, "n_classes d_embed"],
    labels: Int[Tensor, " images"] | Sequence[int],
    layers: Sequence[int] | None = None,
    reference: Components | Tensor | None = None,
) -> dict[str, Any]:
    """Zero-shot accuracy with the MLPs' direct effects mean-ablated (the paper's Table 3 /
    Table 4 "MLPs ablation"; all MLPs by default).

    Returns:
        ``{"base": accuracy, "mlps_ablated": accuracy, "ablated": [labels]}``.

    Example:
        >>> c = Components(torch.randn(3, 8, 4), ["embed", "L0_attn", "L0_mlp"])
        >>> mlp_ablation(c, torch.eye(4), [1] * 8)["ablated"]
        ['L0_mlp']
    """
    indices = components.mlp_indices(layers)
    return {
        "base": zero_shot_accuracy(components.total(), class_weights, labels),
        "mlps_ablated": zero_shot_accuracy(
            ablated_embedding(components, indices, reference=reference), class_weights, labels
        ),
        "ablated": [components.labels[i] for i in indices],
    }


def _result_heads(result: TextSpanResult, heads: Sequence[HeadLabel] | None) -> list[HeadLabel]:
    heads = result.heads if heads is None else [(int(a), int(b)) for a, b in heads]
    if heads is None:
        raise ValueError(
            "The TextSpan result has no head labels: pass heads=[(layer, head), ...] in its row "
            "order (or run textspan with heads=...)."
        )
    if len(heads) != result.n_heads:
        raise ValueError(f"{len(heads)} heads for a result with {result.n_heads} rows.")
    return heads


def replace_heads(
    components: Components,
    replacements: Mapping[HeadLabel, Tensor],
    reference: Components | Tensor | None = None,
    ablate_rest: bool = True,
) -> Float[Tensor, "images d_embed"]:
    """The embedding with heads replaced by given outputs (e.g. TextSpan reconstructions) and,
    as in the paper, every other component mean-ablated.

    Args:
        components: The terms.
        replacements: ``{(layer, head): [images, d_embed]}``.
        reference: Images for the means (default: ``components``).
        ablate_rest: Mean-ablate all other components (the paper's protocol); ``False`` keeps
            them.

    Example:
        >>> c = Components(torch.randn(3, 5, 2), ["embed", "L0H0", "bias"])
        >>> new = torch.zeros(5, 2)
        >>> torch.allclose(replace_heads(c, {(0, 0): new}), c.terms[[0, 2]].mean(1).sum(0) + new)
        True
    """
    replace = {tuple(k): v for k, v in replacements.items()}
    if ablate_rest:
        return ablated_embedding(components, replace=replace, keep=[], reference=reference)
    return ablated_embedding(components, replace=replace, reference=reference)


def textspan_replacement_accuracy(
    components: Components,
    result: TextSpanResult,
    class_weights: Float[Tensor, "n_classes d_embed"],
    labels: Int[Tensor, " images"] | Sequence[int],
    m: int | None = None,
    heads: Sequence[HeadLabel] | None = None,
    reference: Components | Tensor | None = None,
) -> float:
    """Zero-shot accuracy when every head of a TextSpan result is replaced by its projection
    onto its first ``m`` texts and all other components are mean-ablated (the paper's §4.2).

    Args:
        components: Terms of the evaluation images (must contain the result's heads).
        result: A :class:`~vision_lens.analysis.textspan_result.TextSpanResult`.
        class_weights: Zero-shot classifier ``[n_classes, d_embed]``.
        labels: True classes.
        m: Texts per head (default all of the result's).
        heads: ``(layer, head)`` per result row if the result has no labels.
        reference: Images for the means of the other components.
    """
    heads = _result_heads(result, heads)
    outputs, _ = components.head_outputs(heads)
    projected = result.project(outputs, m=m)
    embedding = replace_heads(
        components, dict(zip(heads, projected, strict=True)), reference=reference
    )
    return zero_shot_accuracy(embedding, class_weights, labels)


def accuracy_vs_m(
    components: Components,
    result: TextSpanResult,
    class_weights: Float[Tensor, "n_classes d_embed"],
    labels: Int[Tensor, " images"] | Sequence[int],
    ms: Sequence[int] | None = None,
    heads: Sequence[HeadLabel] | None = None,
    reference: Components | Tensor | None = None,
) -> dict[str, Any]:
    """Zero-shot accuracy against the TextSpan basis size ``m`` (the paper's Figure 4).

    TextSpan is greedy, so one run with the largest ``m`` gives every smaller basis as a prefix.

    Returns:
        ``{"m": [...], "accuracy": [...], "base": full-model accuracy, "heads_only": accuracy
        with the result's heads kept exactly and everything else mean-ablated (the limit of
        large m)}``.

    Example:
        >>> from vision_lens.analysis.textspan import textspan
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> c = Components(torch.randn(4, 30, 8), ["embed", "L0H0", "L0H1", "bias"])
        >>> result = textspan(c.head_outputs()[0], torch.randn(20, 8), m=8, rank=None,
        ...                   heads=c.heads)
        >>> curve = accuracy_vs_m(c, result, torch.randn(3, 8), [0] * 30, ms=[1, 8])
        >>> curve["m"], curve["accuracy"][-1] == curve["heads_only"]
        ([1, 8], True)
    """
    if ms is None:
        ms = [k for k in (10, 20, 30, 40, 50, 60) if k <= result.m] or [result.m]
    ms = [int(k) for k in ms]
    heads = _result_heads(result, heads)
    outputs, _ = components.head_outputs(heads)
    accuracy = []
    for k in ms:
        projected = result.project(outputs, m=k)
        embedding = replace_heads(
            components, dict(zip(heads, projected, strict=True)), reference=reference
        )
        accuracy.append(zero_shot_accuracy(embedding, class_weights, labels))
    exact = replace_heads(components, dict(zip(heads, outputs, strict=True)), reference=reference)
    return {
        "m": ms,
        "accuracy": accuracy,
        "base": zero_shot_accuracy(components.total(), class_weights, labels),
        "heads_only": zero_shot_accuracy(exact, class_weights, labels),
        "heads": [head_label(*lh) for lh in heads],
    }
