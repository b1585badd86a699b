"""Applications of CompAlign to any ViT (Balasubramanian et al. 2024, §6): retrieval through a
subset of components, token heatmaps through the per-component maps, and the consistency of
component rankings.

* :func:`component_retrieval`: text-based (§6.1) and image-based (§6.2) retrieval through the
  sum of chosen components (CLIP-aligned terms, or the source model's own terms).
* :func:`aligned_token_scores` / :func:`aligned_token_heatmaps`: ``u^T f_i(c_{i,t})`` per token
  (§6.3), laid out on the patch grid like :func:`vision_lens.analysis.segment`, so the
  eval-seg metrics (:class:`~vision_lens.analysis.SegmentationMetrics`) apply unchanged.
* :func:`ranking_consistency`: Spearman correlation of the component (or property) orderings
  of two :class:`~vision_lens.analysis.ComponentScores` (the paper's Table 2 / Table 4).

Ablations (the layer curve of §5, spurious-cue mitigation of §6.4) are in
:mod:`vision_lens.analysis.beyond_clip_ablation`.

Example:
    >>> import torch
    >>> from vision_lens.analysis.compalign import AlignedComponents
    >>> aligned = AlignedComponents(torch.randn(6, 3, 4), ["L0H0", "L0H1", "rest"])
    >>> component_retrieval(aligned, ["L0H0"], query_text_embedding=torch.randn(4),
    ...                     k=2).indices.shape
    torch.Size([1, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from vision_lens.analysis.compalign import AlignedComponents, CompAlign
from vision_lens.analysis.direct_effects import Components
from vision_lens.analysis.retrieval import Neighbors, image_neighbors, text_to_image
from vision_lens.analysis.scoring import ComponentScores
from vision_lens.cache import ComponentId
from vision_lens.utils.checks import check_finite
from vision_lens.utils.grids import upsample_grid

if TYPE_CHECKING:
    from vision_lens.cache import ActivationCache

__all__ = [
    "TokenScores",
    "aligned_token_heatmaps",
    "aligned_token_scores",
    "component_retrieval",
    "ranking_consistency",
    "spearman",
]

#: Component kinds whose contribution is a sum over source tokens (attention).
TOKEN_KINDS = ("head", "attn")


# ---------------------------------------------------------------------- shared input handling
def component_terms(
    components: object, ids: Sequence[str] | None = None
) -> tuple[Float[Tensor, "component n d"], list[ComponentId]]:
    """``[component, n, d]`` terms and their ids from :class:`AlignedComponents`,
    :class:`Components` or a tensor ``[n, component, d]`` (then ``ids`` name its components).

    Example:
        >>> terms, ids = component_terms(torch.zeros(5, 2, 3), ["L0H0", "rest"])
        >>> terms.shape, ids[1].kind
        (torch.Size([2, 5, 3]), 'rest')
    """
    if isinstance(components, AlignedComponents):
        terms, default = components.terms.transpose(0, 1), components.ids
    elif isinstance(components, Components):
        terms, default = components.terms, components.labels
    elif isinstance(components, Tensor):
        if components.dim() != 3:
            raise ValueError(
                f"components must be [n, component, d], got {tuple(components.shape)}."
            )
        terms, default = components.transpose(0, 1), None
    else:
        raise TypeError(
            "components must be AlignedComponents, Components or a tensor [n, component, d], "
            f"got {type(components).__name__}."
        )
    if not terms.is_floating_point():
        raise TypeError(f"components must be floating point, got {terms.dtype}.")
    if terms.shape[0] == 0 or terms.shape[1] == 0:
        raise ValueError(f"components are empty: {tuple(terms.shape)} [component, n, d].")
    check_finite(terms, "components")
    names = default if ids is None else ids
    if names is None:
        names = [f"C{i}" for i in range(terms.shape[0])]
    if isinstance(names, str) or len(names) != terms.shape[0]:
        raise ValueError(f"ids must be a list of {terms.shape[0]} labels, got {names!r:.80}.")
    parsed = [ComponentId.parse(str(i)) for i in names]
    if len(set(parsed)) != len(parsed):
        raise ValueError("Component ids must be unique.")
    return terms, parsed


def component_index(
    ids: Sequence[ComponentId], chosen: Sequence[str | int], name: str = "components"
) -> list[int]:
    """Indices of ``chosen`` (labels or int indices) among ``ids``, refusing repeats and
    unknown components.

    Example:
        >>> component_index([ComponentId.parse("L0H0"), ComponentId("rest")], ["rest", 0])
        [1, 0]
    """
    if isinstance(chosen, str | bytes) or not isinstance(chosen, Sequence | Tensor):
        raise TypeError(f"{name} must be a list of component labels or indices, got {chosen!r}.")
    chosen = chosen.tolist() if isinstance(chosen, Tensor) else list(chosen)
    if not chosen:
        raise ValueError(f"{name} is empty: choose at least one component.")
    lookup = {cid: i for i, cid in enumerate(ids)}
    out = []
    for item in chosen:
        if isinstance(item, str):
            if item not in lookup:
                shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
                raise KeyError(f"No component {item!r} in {name}' source ({shown}).")
            out.append(lookup[item])
        elif isinstance(item, int) and not isinstance(item, bool):
            if not -len(ids) <= item < len(ids):
                raise IndexError(f"component index {item} out of range for {len(ids)}.")
            out.append(item % len(ids))
        else:
            raise TypeError(f"{name} must hold labels or int indices, got {item!r}.")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} names a component twice; each counts once.")
    return out


# ---------------------------------------------------------------------- retrieval
def component_retrieval(
    aligned: AlignedComponents | Components | Float[Tensor, "n component d"],
    components: Sequence[str | int],
    *,
    query_text_embedding: Float[Tensor, "n_text d"] | Float[Tensor, " d"] | None = None,
    query_images: Sequence[int] | Int[Tensor, " query"] | None = None,
    k: int = 5,
    exclude_self: bool = True,
    ids: Sequence[str] | None = None,
) -> Neighbors:
    """Retrieve images through the sum of a chosen subset of components (§6.1 and §6.2).

    The representation of image ``x`` is ``z_S(x) = sum_{i in S} f_i(c_i(x))`` (the aligned terms;
    pass the source model's :class:`Components` for the paper's §6.2, which compares in the
    model's own space). Images are ranked by cosine of ``z_S`` with each text embedding
    (text-based) or with ``z_S`` of each query image (image-based), through
    :func:`~vision_lens.analysis.text_to_image` / :func:`~vision_lens.analysis.image_neighbors`.

    Args:
        aligned: :class:`AlignedComponents` (``[n, component, d_clip]``), :class:`Components`
            (``[component, n, d]``) or a tensor ``[n, component, d]`` (with ``ids``).
        components: The subset ``S``: labels (``"L11H3"``) or indices, e.g. the top of
            ``ComponentScores.rank_components(prop)`` or of ``.gaps(prop)``.
        query_text_embedding: ``[n_text, d]`` or ``[d]`` CLIP text embeddings (text-based).
        query_images: Indices of the query images (image-based).
        k: Images per query.
        exclude_self: Image-based: never return the query image itself.
        ids: Labels of a plain tensor's components.

    Returns:
        :class:`~vision_lens.analysis.Neighbors` with ``[n_query, k]`` indices and cosines.

    Raises:
        ValueError: Both or neither query, ``k`` larger than the candidates, NaN, widths.
        KeyError: A component that ``aligned`` does not have.

    Example:
        >>> terms = torch.zeros(4, 2, 2)  # component 0 says where the images are "red"
        >>> terms[:, 0] = torch.tensor([[1.0, 0], [0, 1], [0.9, 0.1], [0, 1]])
        >>> terms[:, 1] = torch.randn(4, 2)
        >>> aligned = AlignedComponents(terms, ["L1H0", "rest"])
        >>> red = torch.tensor([1.0, 0])
        >>> component_retrieval(aligned, ["L1H0"], query_text_embedding=red, k=2).indices
        tensor([[0, 2]])
        >>> component_retrieval(aligned, ["L1H0"], query_images=[0], k=1).indices
        tensor([[2]])
    """
    terms, parsed = component_terms(aligned, ids)
    index = component_index(parsed, components)
    z = terms[index].sum(0)  # [n, d]
    if (query_text_embedding is None) == (query_images is None):
        raise ValueError("Pass exactly one of query_text_embedding and query_images.")
    if query_text_embedding is not None:
        if not isinstance(query_text_embedding, Tensor):
            raise TypeError("query_text_embedding must be a tensor [n_text, d] or [d].")
        text = query_text_embedding
        if text.dim() in (1, 2) and bool((text.norm(dim=-1) == 0).any()):
            raise ValueError("query_text_embedding holds a zero vector: its cosine is undefined.")
        return text_to_image(z, text, k, normalize=True)
    return image_neighbors(z, query_images, k, exclude_self=exclude_self, normalize=True)


# ---------------------------------------------------------------------- token heatmaps
class TokenScores(NamedTuple):
    """What :func:`aligned_token_scores` returns.

    Attributes:
        tokens: ``[batch, (n_text,) pos]``: ``u^T f_i(c_{i,t})`` summed over the chosen
            token-decomposable components (heads, attention layers), per source token.
        other: ``[batch, (n_text,)]``: the rest of the chosen components' projection (their
            parts that are no token's: MLPs, the embedding, biases, ``rest``, attention bias
            shares).
        ids: The chosen components.
    """

    tokens: Tensor
    other: Tensor
    ids: list[ComponentId]

    def total(self) -> Tensor:
        """``[batch, (n_text,)]``: the chosen components' aligned sum projected on the text."""
        return self.tokens.sum(-1) + self.other


def _text(text: object, d_clip: int, name: str) -> tuple[Tensor, bool]:
    if not isinstance(text, Tensor) or text.dim() not in (1, 2) or not text.is_floating_point():
        raise ValueError(f"{name} must be a float tensor [d_clip] or [n_text, d_clip].")
    single = text.dim() == 1
    text = text[None] if single else text
    if text.shape[-1] != d_clip or text.shape[0] == 0:
        raise ValueError(
            f"{name} is {tuple(text.shape)}; the CompAlign maps into d_clip = {d_clip}."
        )
    check_finite(text, name)
    if bool((text.norm(dim=-1) == 0).any()):
        raise ValueError(f"{name} holds a zero vector: it has no direction.")
    return F.normalize(text, dim=-1), single


def aligned_token_scores(
    cache: ActivationCache,
    compalign: CompAlign,
    text_embedding: Float[Tensor, " d_clip"] | Float[Tensor, "n_text d_clip"],
    components: Sequence[str] | None = None,
    *,
    reference_embeddings: Float[Tensor, "n_ref d_clip"] | None = None,
) -> TokenScores:
    """Per-token contributions ``u^T f_i(c_{i,t})`` of chosen components (the paper's §6.3).

    A head's (or attention layer's) contribution is a sum over source tokens,
    ``c_i = sum_t c_{i,t}`` (:meth:`~vision_lens.ActivationCache.decompose_heads_tokens` /
    :meth:`~vision_lens.ActivationCache.decompose_tokens`, centre mode as CompAlign's
    components), so ``u^T f_i(c_i) = sum_t u^T f_i(c_{i,t})``. The text ``u`` is folded into
    each map first (``W_i u``), so no ``d_clip``-wide per-token tensor is built.

    Args:
        cache: A source-model cache (``run_with_decomposition_cache``).
        compalign: The fitted :class:`CompAlign` of that model.
        text_embedding: ``[d_clip]`` or ``[n_text, d_clip]`` CLIP text embeddings (unit-normalised
            here).
        components: The components to sum (default every map's); those that are no sum over
            tokens land in ``other``.
        reference_embeddings: Texts whose mean unit embedding is subtracted from ``u`` (the
            segmentation footnote of :func:`~vision_lens.analysis.segment`).

    Returns:
        :class:`TokenScores`; ``total()`` equals ``u^T sum_{i chosen} f_i(c_i)``.

    Example:
        >>> import vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> _, cache = model.run_with_decomposition_cache(torch.randn(2, 3, 16, 16))
        >>> aligner = CompAlign(["L1H0", "L1H1", "L1_mlp", "rest"], 16, 5)
        >>> aligned_token_scores(cache, aligner, torch.randn(5)).tokens.shape  # cls + 4 patches
        torch.Size([2, 5])
    """
    if not isinstance(compalign, CompAlign):
        raise TypeError(f"compalign must be a CompAlign, got {type(compalign).__name__}.")
    text, single = _text(text_embedding, compalign.d_clip, "text_embedding")
    if reference_embeddings is not None:
        reference, _ = _text(reference_embeddings, compalign.d_clip, "reference_embeddings")
        text = text - reference.mean(0)
    chosen = list(compalign.ids) if components is None else components
    index = component_index(compalign.ids, chosen)
    ids = [compalign.ids[i] for i in index]
    W = compalign.weight.detach()
    dirs = torch.einsum("csd,td->cts", W, text.to(W))  # [component, n_text, d_source]
    n_text = text.shape[0]
    tokens, other, others = None, 0.0, []
    heads_by_layer: dict[int, list[int]] = {}
    for i, cid in zip(index, ids, strict=True):
        if cid.kind == "head":
            heads_by_layer.setdefault(cid.layer, []).append(i)
        elif cid.kind == "attn":
            tok = cache.decompose_tokens(layers=[cid.layer])  # [batch, pos, d_source]
            term = torch.einsum("bpd,td->btp", tok, dirs[i].to(tok))
            tokens = term if tokens is None else tokens + term
            bias = cache.attention_bias_terms(layers=[cid.layer])[:, 0]  # [batch, d_source]
            other = other + bias @ dirs[i].to(bias).T
        else:
            others.append(i)
    for layer, members in heads_by_layer.items():
        flat = dirs[members].flatten(0, 1)  # [n_members * n_text, d_source]
        out = cache.decompose_heads_tokens(directions=flat, layers=[layer])[:, 0]
        for j, i in enumerate(members):  # [batch, head, pos, k] -> this head, its texts
            term = out[:, compalign.ids[i].head, :, j * n_text : (j + 1) * n_text]
            tokens = term.transpose(1, 2) if tokens is None else tokens + term.transpose(1, 2)
    resid = cache["blocks.0.hook_resid_pre"]  # the cache's batch size, device and dtype
    if others:
        aligned = compalign.align(cache).terms  # [batch, component, d_clip], on the maps' device
        projected = torch.einsum("bcd,td->bt", aligned[:, others], text.to(aligned))
        other = other + projected.to(resid)
    if tokens is None:  # no token-decomposable component: every token scores 0
        tokens = resid.new_zeros(resid.shape[0], n_text, cache.model.cfg.n_pos)
    other = other + tokens.new_zeros(tokens.shape[:-1])
    if single:
        tokens, other = tokens[:, 0], other[:, 0]
    return TokenScores(tokens, other, ids)


def aligned_token_heatmaps(
    cache: ActivationCache,
    compalign: CompAlign,
    text_embedding: Float[Tensor, " d_clip"] | Float[Tensor, "n_text d_clip"],
    components: Sequence[str] | None = None,
    *,
    reference_embeddings: Float[Tensor, "n_ref d_clip"] | None = None,
    upsample: bool = False,
) -> Float[Tensor, "batch patch_h patch_w"]:
    """Token heatmaps through CompAlign: the patch tokens' :func:`aligned_token_scores` on the
    patch grid (the paper's Figure 5), usable with the eval-seg metrics.

    Args:
        cache: A source-model cache.
        compalign: Its fitted :class:`CompAlign`.
        text_embedding: ``[d_clip]`` (then ``[batch, patch_h, patch_w]``) or ``[n_text, d_clip]``
            (then ``[batch, n_text, patch_h, patch_w]``).
        components: Components to sum (default all; choose them with
            ``ComponentScores.rank_components`` as the paper does).
        reference_embeddings: Texts whose mean is subtracted from the text (see
            :func:`~vision_lens.analysis.segment`).
        upsample: Bilinearly upsample to the input size
            (:func:`~vision_lens.analysis.upsample_heatmaps`), as
            :class:`~vision_lens.analysis.SegmentationMetrics` wants mask-sized heatmaps.

    Returns:
        ``[batch, patch_h, patch_w]`` float32 (``[batch, H, W]`` with ``upsample``).

    Example:
        >>> import vision_lens as vl
        >>> from vision_lens.analysis import SegmentationMetrics
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> _, cache = model.run_with_decomposition_cache(torch.randn(2, 3, 16, 16))
        >>> aligner = CompAlign(["L1H0", "L1H1", "rest"], 16, 5)
        >>> heat = aligned_token_heatmaps(cache, aligner, torch.randn(5), ["L1H0", "L1H1"])
        >>> heat.shape
        torch.Size([2, 2, 2])
        >>> metrics = SegmentationMetrics()
        >>> up = aligned_token_heatmaps(cache, aligner, torch.randn(5), upsample=True)
        >>> metrics.update(up, torch.rand(2, 16, 16) > 0.5)
    """
    scores = aligned_token_scores(
        cache, compalign, text_embedding, components, reference_embeddings=reference_embeddings
    )
    rows, cols = cache.model.cfg.grid_size
    patches = scores.tokens[..., cache.model.readout.patch_positions]
    grid = patches.float().unflatten(-1, (rows, cols))
    return upsample_grid(grid, cache.model.cfg.image_size) if upsample else grid


# ---------------------------------------------------------------------- ranking consistency
def _ranks(x: Tensor) -> Tensor:
    """1-based ranks of a 1-d tensor, ties given their average rank (float64)."""
    x = x.double()
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    ranks = torch.empty_like(x)
    start = 0
    n = x.numel()
    while start < n:
        stop = start + 1
        while stop < n and sorted_x[stop] == sorted_x[start]:
            stop += 1
        ranks[order[start:stop]] = (start + stop + 1) / 2  # mean of ranks start+1 .. stop
        start = stop
    return ranks


def spearman(a: Float[Tensor, " n"], b: Float[Tensor, " n"]) -> float:
    """Spearman's rank correlation (Pearson correlation of the tie-averaged ranks); NaN when
    either side is constant (as ``scipy.stats.spearmanr``).

    Example:
        >>> spearman(torch.tensor([1.0, 2, 3, 4]), torch.tensor([10.0, 20, 40, 30]))
        0.8
    """
    for name, v in (("a", a), ("b", b)):
        if not isinstance(v, Tensor) or v.dim() != 1:
            raise ValueError(f"{name} must be a 1-d tensor.")
        check_finite(v, name)
    if a.numel() != b.numel():
        raise ValueError(f"a has {a.numel()} values, b has {b.numel()}: they must match.")
    if a.numel() < 2:
        raise ValueError(f"A rank correlation needs at least 2 values, got {a.numel()}.")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float("nan") if denom == 0 else round(float(ra @ rb) / denom, 12)


def ranking_consistency(
    scores_a: ComponentScores,
    scores_b: ComponentScores,
    *,
    by: Literal["property", "component"] = "property",
) -> dict[str, float]:
    """Spearman correlation between two component-score tables' orderings (Table 2 / Table 4).

    With ``by="property"``, for each property both tables have, the correlation of the two
    component orderings over the components both have (matched by id: e.g. two models of one
    architecture, or the component score against the paper's CLIP-based "ground truth" score
    of the same model). With ``by="component"``, for each shared component, that of the two
    property orderings over the shared properties.

    Args:
        scores_a: A :class:`~vision_lens.analysis.ComponentScores`.
        scores_b: Another.
        by: ``"property"`` (component orderings) or ``"component"`` (property orderings).

    Returns:
        ``{property (or component): rho}`` in ``scores_a``'s order; NaN where an ordering is
        constant.

    Raises:
        TypeError: Not :class:`ComponentScores`.
        ValueError: Fewer than 2 shared components/properties, none to compare, NaN scores.

    Example:
        >>> t = torch.tensor([[0.1, 0.5, 0.9]], dtype=torch.float64)
        >>> a = ComponentScores(t, ["color"], ["L0H0", "L0H1", "L0H2"], "correlation", [3])
        >>> b = ComponentScores(t.flip(-1), ["color"], ["L0H0", "L0H1", "L0H2"],
        ...                     "correlation", [3])
        >>> ranking_consistency(a, b)
        {'color': -1.0}
    """
    for name, s in (("scores_a", scores_a), ("scores_b", scores_b)):
        if not isinstance(s, ComponentScores):
            raise TypeError(f"{name} must be ComponentScores, got {type(s).__name__}.")
        check_finite(s.table, f"{name}.table")
    if by not in ("property", "component"):
        raise ValueError(f"by must be 'property' or 'component', got {by!r}.")
    props = [p for p in scores_a.properties if p in scores_b.properties]
    comps = [c for c in scores_a.ids if c in scores_b.ids]
    rows, cols = (props, comps) if by == "property" else (comps, props)
    if not rows or len(cols) < 2:
        raise ValueError(
            f"The two score tables share {len(props)} properties and {len(comps)} components; "
            f"comparing {by} orderings needs at least one {by} and 2 of the other."
        )

    def table(s: ComponentScores) -> Tensor:
        t = s.table[[s.properties.index(p) for p in props]][:, [s.ids.index(c) for c in comps]]
        return t if by == "property" else t.T

    ta, tb = table(scores_a), table(scores_b)
    return {str(r): spearman(ta[i], tb[i]) for i, r in enumerate(rows)}
