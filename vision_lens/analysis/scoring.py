"""Component scores for properties (Balasubramanian et al. 2024, §6 and Algorithm 2).

A property ("colour", "shape") is given by the text embeddings ``B`` ``[k, d]`` of some of its
instantiations ("red", "green", ...). The paper's score of component ``C`` ``[n, d]`` (its
CLIP-aligned contributions over ``n`` images) against the representation ``Z`` ``[n, d]`` (the
sum of all components) is::

    B   <- orthogonalize(B)                 # Gram-Schmidt, in the order given
    s_Z <- Z B^T;   s_C <- C B^T            # [n, k] projections
    r   <- correlation(s_Z, s_C, dim=0)     # one Pearson correlation per basis direction
    score = mean(r)

This module computes exactly that (float64; a direction along which either projection is
constant contributes correlation 0, and Gram-Schmidt skips texts already in the span of the
earlier ones). ``method="variance"`` is a basis-free variant: the share of the representation's
variance inside the span that the component accounts for,
``sum_j cov(s_Z_j, s_C_j) / sum_j var(s_Z_j)``; over components that sum to ``Z`` these shares
sum to exactly 1.

Example:
    >>> import torch
    >>> comps = torch.randn(100, 3, 8)  # [n, component, d], e.g. CompAlign's aligned terms
    >>> res = component_scores(comps, {"color": torch.randn(4, 8)}, ids=["a", "b", "c"])
    >>> res.table.shape, len(res.rank_components("color"))
    (torch.Size([1, 3]), 3)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from vision_lens.analysis.compalign import AlignedComponents
from vision_lens.analysis.direct_effects import Components
from vision_lens.cache import ComponentId
from vision_lens.utils.checks import check_finite

__all__ = ["ComponentScores", "component_scores", "orthonormal_basis"]

#: A text whose Gram-Schmidt residual norm falls below this fraction of its own norm is skipped
#: (it lies, up to the rounding of its dtype, in the span of the earlier texts).
SPAN_TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
#: Projections whose standard deviation is below this fraction of the largest are constant.
CONSTANT_TOL = 1e-10


@dataclass
class ComponentScores:
    """What :func:`component_scores` returns.

    Attributes:
        table: ``[property, component]`` scores (float64).
        properties: Property names, in row order.
        ids: One :class:`ComponentId` per column.
        method: ``"correlation"`` (the paper's) or ``"variance"``.
        dims: Dimension of each property's text span.
    """

    table: Float[Tensor, "property component"]
    properties: list[str]
    ids: list[ComponentId]
    method: str
    dims: list[int]

    def __post_init__(self) -> None:
        self.ids = [ComponentId.parse(str(i)) for i in self.ids]
        self.properties = [str(p) for p in self.properties]
        if tuple(self.table.shape) != (len(self.properties), len(self.ids)):
            raise ValueError(
                f"table is {tuple(self.table.shape)} for {len(self.properties)} properties and "
                f"{len(self.ids)} components."
            )

    def _row(self, prop: str) -> int:
        if prop not in self.properties:
            raise KeyError(f"No property {prop!r}; properties: {', '.join(self.properties)}.")
        return self.properties.index(prop)

    def scores(self, prop: str) -> dict[ComponentId, float]:
        """``{component: score}`` for one property, in component order."""
        row = self.table[self._row(prop)].tolist()
        return dict(zip(self.ids, row, strict=True))

    def rank_components(self, prop: str, top: int | None = None) -> list[tuple[ComponentId, float]]:
        """Components by decreasing score for ``prop`` (the paper's component ordering).

        Example:
            >>> t = torch.tensor([[0.1, 0.9], [0.5, 0.2]], dtype=torch.float64)
            >>> s = ComponentScores(t, ["color", "shape"], ["L0H0", "L0H1"], "correlation", [1, 1])
            >>> s.rank_components("color")[0]
            ('L0H1', 0.9)
        """
        row = self.table[self._row(prop)]
        order = torch.argsort(row, descending=True, stable=True).tolist()
        return [(self.ids[i], float(row[i])) for i in order[:top]]

    def rank_properties(self, component: str) -> list[tuple[str, float]]:
        """Properties by decreasing score for one component (the paper's feature ordering).

        Example:
            >>> t = torch.tensor([[0.1, 0.9], [0.5, 0.2]], dtype=torch.float64)
            >>> s = ComponentScores(t, ["color", "shape"], ["L0H0", "L0H1"], "correlation", [1, 1])
            >>> s.rank_properties("L0H0")
            [('shape', 0.5), ('color', 0.1)]
        """
        if component not in self.ids:
            raise KeyError(f"No component {component!r}; components: {', '.join(self.ids[:12])}.")
        col = self.table[:, self.ids.index(component)]
        order = torch.argsort(col, descending=True, stable=True).tolist()
        return [(self.properties[i], float(col[i])) for i in order]

    def gaps(self, prop: str) -> Float[Tensor, " component"]:
        """Per component ``min_{p' != prop} (s_prop - s_p')``: how much more it scores for
        ``prop`` than for any other property (§6.2's selection of property-specific
        components; ``+inf`` with one property)."""
        row = self._row(prop)
        others = torch.cat([self.table[:row], self.table[row + 1 :]])
        if not len(others):
            return torch.full_like(self.table[row], float("inf"))
        return (self.table[row][None] - others).min(0).values


def orthonormal_basis(
    texts: Float[Tensor, "k d"], tol: float | None = None
) -> Float[Tensor, "r d"]:
    """Gram-Schmidt (twice, for float accuracy) of the rows of ``texts`` in order, skipping rows
    already in the span of the earlier ones: ``[r, d]`` orthonormal rows, float64.

    Args:
        texts: ``[k, d]`` text embeddings.
        tol: A row whose residual norm is below ``tol`` times its norm is skipped (default
            ``1e-10`` for float64 input, ``1e-5`` otherwise: float32 rounding is ~``1e-7``).

    Example:
        >>> b = orthonormal_basis(torch.tensor([[2.0, 0.0], [1.0, 1.0], [3.0, 3.0]]))
        >>> b
        tensor([[1., 0.],
                [0., 1.]], dtype=torch.float64)
    """
    if tol is None:
        tol = SPAN_TOL.get(texts.dtype, SPAN_TOL[torch.float32])
    basis: list[Tensor] = []
    for row in texts.double():
        norm = row.norm()
        v = row.clone()
        for _ in range(2):
            for q in basis:
                v = v - (v @ q) * q
        if norm > 0 and v.norm() > tol * norm:
            basis.append(v / v.norm())
    if not basis:
        return texts.new_zeros(0, texts.shape[-1], dtype=torch.float64)
    return torch.stack(basis)


def _as_components(
    components: object, ids: Sequence[str] | None
) -> tuple[Tensor, list[ComponentId]]:
    if isinstance(components, AlignedComponents):
        x, default = components.terms, components.ids
    elif isinstance(components, Components):
        x, default = components.terms.transpose(0, 1), components.labels
    elif isinstance(components, Tensor):
        if components.dim() != 3:
            raise ValueError(
                f"components must be [n, component, d], got {tuple(components.shape)}."
            )
        x, default = components, [f"C{i}" for i in range(components.shape[1])]
    else:
        raise TypeError(
            "components must be a tensor [n, component, d], AlignedComponents or Components, "
            f"got {type(components).__name__}."
        )
    if not x.is_floating_point():
        raise TypeError(f"components must be floating point, got {x.dtype}.")
    if x.shape[0] < 2:
        raise ValueError(f"A correlation over images needs n >= 2 images, got {x.shape[0]}.")
    if x.shape[1] == 0:
        raise ValueError("components has no component.")
    check_finite(x, "components")
    names = list(default if ids is None else ids)
    if isinstance(ids, str) or len(names) != x.shape[1]:
        raise ValueError(f"ids must be a list of {x.shape[1]} labels, got {ids!r:.80}.")
    parsed = [ComponentId.parse(str(i)) for i in names]
    if len(set(parsed)) != len(parsed):
        raise ValueError("Component ids must be unique.")
    return x, parsed


def component_scores(
    components: Float[Tensor, "n component d"] | AlignedComponents | Components,
    texts_embeddings: Mapping[str, Float[Tensor, "n_classes d"]],
    representation: Float[Tensor, "n d"] | None = None,
    *,
    method: Literal["correlation", "variance"] = "correlation",
    ids: Sequence[str] | None = None,
) -> ComponentScores:
    """Score every component for every property (the paper's Algorithm 2).

    Args:
        components: ``[n, component, d]`` contributions in the text embeddings' space (for a
            non-CLIP model: :meth:`CompAlign.align`'s terms), or :class:`AlignedComponents`, or
            :class:`Components` (``[component, n, d]``, when the model is a CLIP).
        texts_embeddings: ``{property: [n_classes, d]}`` text embeddings of each property's
            instantiations.
        representation: ``[n, d]`` the whole representation ``Z``; default the sum of the
            components.
        method: ``"correlation"``: the paper's mean correlation of the projections;
            ``"variance"``: the component's share of ``Z``'s variance inside the span.
        ids: Component labels (default: those of ``components``, or ``C0, C1, ...``).

    Returns:
        :class:`ComponentScores` with ``table`` ``[property, component]``.

    Raises:
        TypeError: Inputs of the wrong type.
        ValueError: Width or ``n`` mismatches, NaN/inf, fewer than 2 images, no property, a
            property whose texts are all zero, an unknown ``method``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> comps = torch.randn(50, 2, 4, generator=g)
        >>> comps[:, 1, :2] = 0  # component 1 has nothing along the first two axes
        >>> texts = {"p": torch.eye(4)[:2]}
        >>> res = component_scores(comps, texts, ids=["L0H0", "L0H1"])
        >>> res.rank_components("p")[0][0]
        'L0H0'
        >>> round(float(component_scores(comps, texts, method="variance").table.sum()), 6)
        1.0
    """
    if method not in ("correlation", "variance"):
        raise ValueError(f"method must be 'correlation' or 'variance', got {method!r}.")
    x, parsed = _as_components(components, ids)
    n, _, d = x.shape
    x = x.double()
    if representation is None:
        z = x.sum(1)
    else:
        if not isinstance(representation, Tensor) or representation.shape != (n, d):
            shape = getattr(representation, "shape", type(representation).__name__)
            raise ValueError(f"representation must be [n={n}, d={d}], got {shape}.")
        z = check_finite(representation, "representation").double().to(x.device)
    if not isinstance(texts_embeddings, Mapping) or not texts_embeddings:
        raise ValueError("texts_embeddings must be a non-empty {property: [n_classes, d]} dict.")
    rows, dims = [], []
    for prop, texts in texts_embeddings.items():
        if not isinstance(texts, Tensor) or texts.dim() != 2 or texts.shape[1] != d:
            shape = getattr(texts, "shape", type(texts).__name__)
            raise ValueError(f"texts_embeddings[{prop!r}] must be [n_classes, d={d}], got {shape}.")
        check_finite(texts, f"texts_embeddings[{prop!r}]")
        basis = orthonormal_basis(texts.to(x.device))
        if not len(basis):
            raise ValueError(f"texts_embeddings[{prop!r}] span nothing (all zero).")
        dims.append(len(basis))
        s_z = z @ basis.T  # [n, r]
        s_c = torch.einsum("ncd,rd->cnr", x, basis)  # [component, n, r]
        s_z = s_z - s_z.mean(0)
        s_c = s_c - s_c.mean(1, keepdim=True)
        cov = (s_z[None] * s_c).mean(1)  # [component, r]
        var_z = s_z.pow(2).mean(0)  # [r]
        if method == "variance":
            total = var_z.sum()
            rows.append(cov.sum(1) / total if total > 0 else torch.zeros(len(parsed)).double())
            continue
        std_z, std_c = var_z.sqrt(), s_c.pow(2).mean(1).sqrt()
        scale = max(float(std_z.max()), float(std_c.max()), 1e-300)
        ok = (std_z[None] > CONSTANT_TOL * scale) & (std_c > CONSTANT_TOL * scale)
        r = torch.where(ok, cov / (std_z[None] * std_c).clamp_min(1e-300), torch.zeros_like(cov))
        rows.append(r.mean(1))
    return ComponentScores(
        torch.stack(rows).cpu(), [str(p) for p in texts_embeddings], parsed, method, dims
    )
