"""Direct-effect terms of a set of images at mixed granularity: :class:`Components`.

The layer terms of :meth:`vision_lens.ActivationCache.decompose_layers` with chosen attention
layers split into heads (:meth:`~vision_lens.ActivationCache.decompose_heads`) plus each split
layer's attention bias share: built from precomputed decompositions (:func:`split_heads`) or by one
batched pass over a dataset (:func:`decompose_components`). They sum to the image embedding, so
the ablations of :mod:`vision_lens.analysis.ablation` need no further forward pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from vision_lens.analysis.batched import map_batches
from vision_lens.cache import ComponentId, LnMode, normalize_alias
from vision_lens.utils.checks import check_finite, layer_indices

if TYPE_CHECKING:
    from vision_lens.cache import ActivationCache
    from vision_lens.hooked_vit import HookedViT

__all__ = [
    "Components",
    "HeadLabel",
    "check_terms",
    "decompose_components",
    "head_label",
    "split_heads",
]

#: A head, ``(layer, head)``.
HeadLabel = tuple[int, int]


def check_terms(terms: object, name: str = "terms") -> None:
    """Refuse anything but finite direct-effect terms ``[component, images, d_embed]``.

    Raises:
        TypeError: Not a floating-point tensor.
        ValueError: Not 3-D, or NaN/inf in it.

    Example:
        >>> check_terms(torch.zeros(3, 2, 4))
    """
    if not isinstance(terms, Tensor):
        raise TypeError(
            f"{name} must be a tensor [component, batch, d_embed] (as from decompose_layers), "
            f"got {type(terms).__name__}."
        )
    if terms.dim() != 3:
        raise ValueError(
            f"{name} must be a tensor [component, batch, d_embed] (as from decompose_layers), "
            f"got shape {tuple(terms.shape)}."
        )
    if not terms.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {terms.dtype}.")
    check_finite(terms, name)


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
    no head; zero in split mode). One forward pass serves every ablation of
    :mod:`vision_lens.analysis.ablation`.

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
        check_terms(self.terms)
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
        >>> cfg = vl.HookedViTConfig.tiny()
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> embed, cache = model.run_with_decomposition_cache(torch.randn(3, 3, 16, 16))
        >>> terms, labels = cache.decompose_layers()
        >>> c = split_heads(terms, labels, cache.decompose_heads(layers=[1]), [1])
        >>> c.labels[3:]
        ['L1H0', 'L1H1', 'L1H2', 'L1H3', 'L1_attn_bias', 'L1_mlp', 'bias']
        >>> torch.allclose(c.total(), embed, atol=1e-5)
        True
    """
    check_terms(layer_terms)
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


@normalize_alias
def decompose_components(
    model: HookedViT,
    images: Tensor | Iterable[Any],
    head_layers: int | Sequence[int] | None = None,
    *,
    ln_mode: LnMode = "center",
    unit_output: bool = False,
    batch_size: int = 64,
    progress: bool = True,
    device: str | torch.device | None = "cpu",
) -> Components:
    """Run the model over images in batches and keep :class:`Components`: layer terms with the
    attention layers ``head_layers`` split into heads (the input of every ablation).

    Memory: ``(2 + 2 L + H * len(head_layers)) * N * d_embed`` floats (ViT-L, 4 layers split,
    5,000 images: about 1.4 GB); pass a subset of layers for big models.

    Args:
        model: A :class:`vision_lens.HookedViT`.
        images: Preprocessed images ``[N, 3, H, W]`` or an iterable of batches.
        head_layers: Layers to split into heads (negative allowed, each once; default all; an
            empty list splits none).
        ln_mode: LayerNorm treatment (see :mod:`vision_lens.cache`).
        unit_output: Divide every term by the embedding norm (``normalize``: its deprecated
            name).
        batch_size: Images per forward pass.
        progress: Progress bar.
        device: Where the terms are gathered.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny()
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> c = decompose_components(model, torch.randn(5, 3, 16, 16), head_layers=[-1],
        ...                          batch_size=2, progress=False)
        >>> c.terms.shape, c.heads[-1]
        (torch.Size([10, 5, 16]), (1, 3))
        >>> torch.allclose(c.total(), c.embed, atol=1e-5)
        True
    """
    if isinstance(head_layers, Sequence) and not isinstance(head_layers, str) and not head_layers:
        layer_ids: list[int] = []  # no heads: the layer terms alone
    else:
        layer_ids = sorted(layer_indices(head_layers, model.cfg.n_layers))

    def step(embed: Tensor, cache: ActivationCache) -> Components:
        terms, labels = cache.decompose_layers(ln_mode=ln_mode, unit_output=unit_output)
        if layer_ids:
            heads = cache.decompose_heads(layer_ids, ln_mode, unit_output)
            bias = cache.attention_bias_terms(layer_ids, ln_mode, unit_output)
            part = split_heads(terms, labels, heads, layer_ids, bias, embed)
        else:
            part = Components(terms, labels, embed)
        return Components(part.terms.to(device), part.labels, part.embed.to(device))

    parts = map_batches(
        model, images, step, batch_size=batch_size, desc="decomposing", progress=progress
    )
    return Components(
        torch.cat([p.terms for p in parts], dim=1),
        parts[0].labels,
        torch.cat([p.embed for p in parts]),
    )
