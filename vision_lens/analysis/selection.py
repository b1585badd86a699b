"""Choosing the components a per-component analysis treats separately (CompAlign's maps, component
scores): keep some (the last blocks, heads or whole attention layers, MLPs) and sum the others
into one ``"rest"`` term (Balasubramanian et al.'s ``c_init``), so the terms still sum to the
representation.

Example:
    >>> import torch
    >>> c = Components(torch.randn(3, 2, 4), ["embed", "L0_attn", "L0_mlp"])
    >>> select_components(c, mlps=False).labels
    ['L0_attn', 'rest']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vision_lens.analysis.direct_effects import Components, split_heads
from vision_lens.cache import ComponentId

__all__ = ["REST", "components_of_cache", "select_components"]

#: The summed term of every component a selection leaves out (the paper's ``c_init``).
REST = ComponentId("rest")


def select_components(
    components: Components,
    *,
    last_blocks: int | None = None,
    attention: bool = True,
    heads: bool = True,
    mlps: bool = True,
    ids: Sequence[str] | None = None,
    rest: bool = True,
) -> Components:
    """Choose the components CompAlign maps separately; the others are summed into ``"rest"``.

    Args:
        components: :class:`Components` (e.g. :func:`decompose_components` with
            ``head_layers=`` the layers to split into heads).
        last_blocks: Keep only the attention/MLP terms of the last ``k`` blocks (the paper maps
            the last 10 of DeiT/DINO); ``None``: all blocks.
        attention: Keep attention terms (heads and bias shares, or ``L{l}_attn``).
        heads: Keep heads apart; ``False`` merges each split layer back into ``L{l}_attn``.
        mlps: Keep the ``L{l}_mlp`` terms.
        ids: Instead of the flags: exactly these component labels, in this order (``"rest"``
            among them asks for the rest term, at its place).
        rest: Sum the left-out components into a ``"rest"`` term (the sum stays the
            representation); ``False`` drops them.

    Returns:
        :class:`Components` ``[component, images, d]`` with :class:`ComponentId` labels.

    Raises:
        TypeError: ``components`` is not :class:`Components`.
        ValueError: ``last_blocks`` < 1, nothing selected, or an id that is not a component.

    Example:
        >>> c = Components(torch.randn(5, 2, 4), ["embed", "L0_attn", "L0_mlp", "L1_attn",
        ...                                       "L1_mlp"])
        >>> select_components(c, last_blocks=1).labels
        ['L1_attn', 'L1_mlp', 'rest']
    """
    if not isinstance(components, Components):
        raise TypeError(
            f"components must be vision_lens.analysis.Components, got {type(components).__name__}."
        )
    if not heads and ids is None:
        terms, labels = components.to_layers()
        components = Components(terms, labels, components.embed)
    parsed = [ComponentId.parse(label) for label in components.labels]
    if ids is not None:
        wanted = [ComponentId.parse(str(i)) for i in ids]
        missing = [w for w in wanted if w != REST and w not in parsed]
        if missing:
            raise ValueError(
                f"No component {missing[0]!r} in these components ({', '.join(parsed[:8])}, ...)."
                " Build them with head_layers= covering every head id."
            )
        if len(set(wanted)) != len(wanted):
            raise ValueError("ids names a component twice; each counts once.")
        left = [i for i, p in enumerate(parsed) if p not in wanted]
        rest_term = components.terms[left].sum(0) if left else components.terms[0] * 0
        picked = [rest_term if w == REST else components.terms[parsed.index(w)] for w in wanted]
        return Components(torch.stack(picked), wanted, components.embed)
    else:
        if last_blocks is not None and (isinstance(last_blocks, bool) or last_blocks < 1):
            raise ValueError(f"last_blocks must be an int >= 1 or None, got {last_blocks!r}.")
        layers = [p.layer for p in parsed if p.layer is not None]
        first = -1 if last_blocks is None or not layers else max(layers) + 1 - last_blocks
        kinds = ({"head", "attn_bias", "attn"} if attention else set()) | (
            {"mlp"} if mlps else set()
        )
        keep = [p.kind in kinds and p.layer is not None and p.layer >= first for p in parsed]
    if not any(keep):
        raise ValueError("The selection keeps no component: widen last_blocks or the kinds.")
    index = [i for i, k in enumerate(keep) if k]
    terms = [components.terms[i] for i in index]
    labels = [parsed[i] for i in index]
    left = [i for i, k in enumerate(keep) if not k]
    if rest:
        terms.append(components.terms[left].sum(0) if left else components.terms[0] * 0)
        labels.append(REST)
    return Components(torch.stack(terms), labels, components.embed)


def components_of_cache(cache: Any, ids: Sequence[str]) -> Components:
    """The components ``ids`` of one cached batch (an :class:`~vision_lens.ActivationCache`),
    with heads split where ``ids`` name heads and the others summed into ``"rest"`` if asked.

    Example:
        >>> import vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> _, cache = model.run_with_decomposition_cache(torch.randn(2, 3, 16, 16))
        >>> components_of_cache(cache, ["L1H2", "L1_mlp", "rest"]).terms.shape
        torch.Size([3, 2, 16])
    """
    ids = [ComponentId.parse(str(i)) for i in ids]
    head_layers = sorted({i.layer for i in ids if i.kind in ("head", "attn_bias")})
    terms, labels = cache.decompose_layers()
    if head_layers:
        comps = split_heads(
            terms,
            labels,
            cache.decompose_heads(head_layers),
            head_layers,
            cache.attention_bias_terms(head_layers),
        )
    else:
        comps = Components(terms, labels)
    return select_components(comps, ids=ids)
