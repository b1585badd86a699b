"""Mean-ablation of direct effects and its effect on zero-shot classification.

Because the image embedding is an exact sum of direct-effect terms (see
:meth:`vision_lens.ActivationCache.decompose_layers`), replacing a set of terms by their mean over
a reference set of images changes the embedding to
``sum_{c not in S} term_c + sum_{c in S} mean_ref(term_c)`` with no further forward pass.

Layer level: :func:`mean_ablate`, :func:`cumulative_attention_ablation` (the paper's Figure 3).
Head level: :class:`Components` (layer terms with chosen attention layers split into heads, from
:func:`decompose_components` or :func:`split_heads`), then :func:`ablated_embedding`,
:func:`head_ablation_accuracy`, :func:`mlp_ablation` (Table 3 / Table 4), :func:`replace_heads`,
:func:`textspan_replacement_accuracy` and :func:`accuracy_vs_m` (Figure 4). One forward pass
serves them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from vision_lens.cache import ComponentId, LnMode


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


# ---------------------------------------------------------------------- components with heads
HeadLabel = tuple[int, int]


def head_label(layer: int, head: int) -> ComponentId:
    """The component id of a head, a string ``"L{layer}H{head}"`` (the paper's notation) with
    ``kind="head"``, ``layer`` and ``head`` attributes.

    Example:
        >>> head_label(22, 11)
        'L22H11'
    """
    return ComponentId("head", int(layer), int(head))


@dataclass
class Components:
    """Direct-effect terms of a set of images at mixed granularity, summing to the embedding.

    Components are the layer terms of :meth:`ActivationCache.decompose_layers` (``embed``,
    ``L{l}_attn``, ``L{l}_mlp``, ``bias``) with the attention layers chosen in
    :func:`split_heads` / :func:`decompose_components` replaced by one term per head
    (``L{l}H{h}``) plus the layer's *attention bias share* ``L{l}_attn_bias`` (``b_O``, owned by
    no head; zero in split mode). One forward pass gives every ablation of this module.

    Attributes:
        terms: ``[component, images, d_embed]``.
        labels: One label per component.
        embed: ``[images, d_embed]`` the model's image embedding, if known (for checks).

    Example:
        >>> terms = torch.randn(4, 6, 3)
        >>> c = Components(terms, ["embed", "L0H0", "L0H1", "bias"])
        >>> c.heads, c.index("L0H1")
        ([(0, 0), (0, 1)], [2])
        >>> torch.allclose(c.total(), terms.sum(0))
        True
    """

    terms: Float[Tensor, "component images d_embed"]
    labels: list[str]
    embed: Float[Tensor, "images d_embed"] | None = None

    def __post_init__(self) -> None:
        _check_terms(self.terms)
        self.labels = list(self.labels)
        if len(self.labels) != self.terms.shape[0]:
            raise ValueError(f"{len(self.labels)} labels for {self.terms.shape[0]} components.")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("Component labels must be unique.")

    @property
    def n_images(self) -> int:
        """Number of images."""
        return self.terms.shape[1]

    @property
    def heads(self) -> list[HeadLabel]:
        """``(layer, head)`` of every head component, in component order."""
        ids = (ComponentId.parse(label) for label in self.labels)
        return [(cid.layer, cid.head) for cid in ids if cid.kind == "head"]

    def index(self, names: str | Sequence[str]) -> list[int]:
        """Component indices of labels.

        Raises:
            KeyError: A label that is not a component (the message lists some that are).
        """
        names = [names] if isinstance(names, str) else list(names)
        lookup = {label: i for i, label in enumerate(self.labels)}
        missing = [n for n in names if n not in lookup]
        if missing:
            raise KeyError(
                f"No component {missing[0]!r}. Components: {', '.join(self.labels[:12])}"
                f"{', ...' if len(self.labels) > 12 else ''}. Heads exist only for the layers "
                "split with head_layers=."
            )
        return [lookup[n] for n in names]

    def head_indices(self, heads: Sequence[HeadLabel]) -> list[int]:
        """Component indices of ``(layer, head)`` pairs."""
        return self.index([head_label(*lh) for lh in heads])

    def mlp_indices(self, layers: Sequence[int] | None = None) -> list[int]:
        """Component indices of the MLP terms (of ``layers``, default all)."""
        wanted = None if layers is None else {f"L{int(layer)}_mlp" for layer in layers}
        out = [
            i
            for i, label in enumerate(self.labels)
            if label.endswith("_mlp") and (wanted is None or label in wanted)
        ]
        if wanted is not None and len(out) != len(wanted):
            raise KeyError(f"Some MLP layers of {sorted(wanted)} are not components.")
        return out

    def head_outputs(
        self, heads: Sequence[HeadLabel] | None = None
    ) -> tuple[Float[Tensor, "head images d_embed"], list[HeadLabel]]:
        """The head terms ``[head, images, d_embed]`` (all heads, or ``heads``) and their labels,
        ready for :func:`vision_lens.textspan`."""
        heads = self.heads if heads is None else [(int(lh[0]), int(lh[1])) for lh in heads]
        if not heads:
            raise ValueError(
                "These components have no head terms: build them with head_layers=[...]."
            )
        return self.terms[self.head_indices(heads)], heads

    def total(self) -> Float[Tensor, "images d_embed"]:
        """The sum of all components (the image embedding)."""
        return self.terms.sum(0)

    def to_layers(self) -> tuple[Float[Tensor, "component images d_embed"], list[str]]:
        """Collapse heads and bias shares back into ``L{l}_attn`` terms: the
        :meth:`ActivationCache.decompose_layers` layout, for :func:`cumulative_attention_ablation`
        and :func:`mean_ablate`."""
        groups: dict[str, list[int]] = {}
        for i, label in enumerate(self.labels):
            cid = ComponentId.parse(label)
            key = ComponentId("attn", cid.layer) if cid.kind in ("head", "attn_bias") else cid
            groups.setdefault(key, []).append(i)
        labels = list(groups)
        terms = torch.stack([self.terms[idx].sum(0) for idx in groups.values()])
        return terms, labels

    def subset(self, images: Sequence[int] | Tensor) -> Components:
        """The same components for a subset of the images."""
        index = torch.as_tensor(images, device=self.terms.device)
        embed = None if self.embed is None else self.embed[index]
        return Components(self.terms[:, index], self.labels, embed)


def split_heads(
    layer_terms: Float[Tensor, "component images d_embed"],
    layer_labels: Sequence[str],
    heads: Float[Tensor, "images head_layer head d_embed"],
    head_layers: Sequence[int],
    attention_bias: Float[Tensor, "images head_layer d_embed"] | None = None,
    embed: Float[Tensor, "images d_embed"] | None = None,
) -> Components:
    """Combine precomputed decompositions into :class:`Components`.

    Args:
        layer_terms: ``decompose_layers`` terms ``[component, images, d_embed]``.
        layer_labels: Their labels.
        heads: ``decompose_heads(layers=head_layers)`` ``[images, len(head_layers), head, d]``.
        head_layers: The layers (non-negative indices) of ``heads``' layer axis.
        attention_bias: ``attention_bias_terms(layers=head_layers)`` ``[images, len, d]``; by
            default each layer's ``L{l}_attn`` minus its heads (the same thing, and the sum of
            the components stays exactly the embedding).
        embed: The image embedding, kept for checks.

    Returns:
        Components ordered ``embed, [L0H0, ..., L0_attn_bias | L0_attn], L0_mlp, ..., bias``.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, d_embed=16,
        ...                          image_size=16, patch_size=8)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> embed, cache = model.run_with_decomposition_cache(torch.randn(3, 3, 16, 16))
        >>> terms, labels = cache.decompose_layers()
        >>> c = split_heads(terms, labels, cache.decompose_heads(layers=[1]), [1])
        >>> c.labels[3:]
        ['L1H0', 'L1H1', 'L1H2', 'L1H3', 'L1_attn_bias', 'L1_mlp', 'bias']
        >>> torch.allclose(c.total(), embed, atol=1e-5)
        True
    """
    _check_terms(layer_terms)
    layer_labels = list(layer_labels)
    head_layers = [int(layer) for layer in head_layers]
    if heads.dim() != 4 or heads.shape[1] != len(head_layers):
        raise ValueError(
            f"heads must be [images, {len(head_layers)} layers, head, d_embed] (decompose_heads "
            f"with layers=head_layers), got {tuple(heads.shape)}."
        )
    if heads.shape[0] != layer_terms.shape[1] or heads.shape[-1] != layer_terms.shape[-1]:
        raise ValueError(
            f"heads {tuple(heads.shape)} and layer terms {tuple(layer_terms.shape)} disagree on "
            "images or d_embed."
        )
    position = {layer: slot for slot, layer in enumerate(head_layers)}
    terms, labels = [], []
    for i, label in enumerate(layer_labels):
        cid = ComponentId.parse(label)
        layer = cid.layer if cid.kind == "attn" else None
        if layer is None or layer not in position:
            terms.append(layer_terms[i])
            labels.append(label)
            continue
        slot = position.pop(layer)
        layer_heads = heads[:, slot].transpose(0, 1)  # [head, images, d]
        if attention_bias is None:
            rest = layer_terms[i] - layer_heads.sum(0)
        else:
            rest = attention_bias[:, slot].to(layer_terms)
        terms.extend(layer_heads.to(layer_terms))
        labels.extend(head_label(layer, h) for h in range(layer_heads.shape[0]))
        terms.append(rest)
        labels.append(ComponentId("attn_bias", layer))
    if position:
        raise ValueError(f"No L{{l}}_attn term for head layers {sorted(position)}.")
    return Components(torch.stack(terms), labels, embed)


def decompose_components(
    model: Any,
    images: Tensor | Iterable[Any],
    head_layers: int | Sequence[int] | None = None,
    *,
    ln_mode: LnMode = "center",
    normalize: bool = False,
    batch_size: int = 64,
    progress: bool = True,
    device: str | torch.device | None = "cpu",
) -> Components:
    """Run the model over images in batches and keep :class:`Components`: layer terms with the
    attention layers ``head_layers`` split into heads (the input of every ablation here).

    Memory: ``(2 + 2 L + H * len(head_layers)) * N * d_embed`` floats (ViT-L, 4 layers split,
    5,000 images: about 1.4 GB); pass a subset of layers for big models.

    Args:
        model: A :class:`vision_lens.HookedViT`.
        images: Preprocessed images ``[N, 3, H, W]`` or an iterable of batches.
        head_layers: Layers to split into heads (negative allowed; default all).
        ln_mode: LayerNorm treatment (see :mod:`vision_lens.cache`).
        normalize: Divide every term by the embedding norm.
        batch_size: Images per forward pass.
        progress: Progress bar.
        device: Where the terms are gathered.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, d_embed=16,
        ...                          image_size=16, patch_size=8)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> c = decompose_components(model, torch.randn(5, 3, 16, 16), head_layers=[-1],
        ...                          batch_size=2, progress=False)
        >>> c.terms.shape, c.heads[-1]
        (torch.Size([10, 5, 16]), (1, 3))
        >>> torch.allclose(c.total(), c.embed, atol=1e-5)
        True
    """
    from tqdm.auto import tqdm

    from vision_lens.analysis.batched import iter_batches

    n_layers = model.cfg.n_layers
    if head_layers is None:
        layer_ids = list(range(n_layers))
    else:
        layer_ids = [head_layers] if isinstance(head_layers, int) else list(head_layers)
        for layer in layer_ids:
            if not -n_layers <= int(layer) < n_layers:
                raise IndexError(f"Layer {layer} does not exist: the model has {n_layers} layers.")
        layer_ids = sorted({int(layer) % n_layers for layer in layer_ids})
    total = images.shape[0] if isinstance(images, Tensor) else None
    bar = tqdm(total=total, desc="decomposing", unit="img", disable=not progress)
    parts: list[Components] = []
    for batch in iter_batches(images, batch_size):
        embed, cache = model.run_with_decomposition_cache(batch)
        terms, labels = cache.decompose_layers(ln_mode=ln_mode, normalize=normalize)
        heads = bias = None
        if layer_ids:
            heads = cache.decompose_heads(layers=layer_ids, ln_mode=ln_mode, normalize=normalize)
            bias = cache.attention_bias_terms(
                layers=layer_ids, ln_mode=ln_mode, normalize=normalize
            )
        if heads is None:
            part = Components(terms, labels, embed)
        else:
            part = split_heads(terms, labels, heads, layer_ids, bias, embed)
        parts.append(Components(part.terms.to(device), part.labels, part.embed.to(device)))
        bar.update(embed.shape[0])
    bar.close()
    if not parts:
        raise ValueError("No images: the iterable yielded no batches.")
    return Components(
        torch.cat([p.terms for p in parts], dim=1),
        parts[0].labels,
        torch.cat([p.embed for p in parts]),
    )


# ---------------------------------------------------------------------- ablations
def _reference_terms(components: Components, reference: Any) -> Tensor:
    if reference is None:
        return components.terms
    if isinstance(reference, Components):
        if reference.labels != components.labels:
            raise ValueError("reference components must have the same labels as components.")
        return reference.terms
    _check_terms(reference)
    if reference.shape[0] != components.terms.shape[0]:
        raise ValueError(
            f"reference has {reference.shape[0]} components, components have "
            f"{components.terms.shape[0]}."
        )
    return reference


def _as_index(components: Components, items: Iterable[Any]) -> list[int]:
    out = []
    for item in items:
        if isinstance(item, str):
            out.extend(components.index(item))
        elif isinstance(item, tuple):
            out.extend(components.head_indices([item]))
        else:
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
        if value.shape != components.terms.shape[1:]:
            raise ValueError(
                f"replacement for {components.labels[index]} must be "
                f"{tuple(components.terms.shape[1:])}, got {tuple(value.shape)}."
            )
        replaced[index] = value.to(components.terms)
    if keep is not None:
        kept = set(_as_index(components, keep)) | set(replaced)
        mask[[i for i in range(n) if i not in kept]] = True
    else:
        mask[_as_index(components, ablate)] = True
    for index in replaced:
        mask[index] = False
    means = ref.mean(dim=1).to(components.terms)  # [component, d]
    out = torch.where(
        mask[:, None, None].to(components.terms.device), means[:, None], components.terms
    )
    if replaced:
        out = out.clone()
        for index, value in replaced.items():
            out[index] = value
    return out.sum(0)


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


def _result_heads(result: Any, heads: Sequence[HeadLabel] | None) -> list[HeadLabel]:
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
    result: Any,
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
        result: A :class:`vision_lens.analysis.textspan.TextSpanResult`.
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
    result: Any,
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
