"""How much of each head's variance lies in the span of a set of text directions.

TextSpan (:mod:`vision_lens.analysis.textspan`) names a head by the texts it picks greedily from a
large pool; when a pool mixes attributes in one sentence ("a small red circle on grass"), the
picks can be hard to read. This module asks a narrower question with a closed-form answer: for
each attribute, take the zero-shot class prompts of that attribute ("a red object", "a green
object", ...), and measure the fraction of a head's direct-effect variance (over images) inside
the span of their *contrasts* (each prompt minus the prompts' mean: a zero-shot decision between
the classes depends only on these differences). A head that specialises in colour puts much of
its variance in the colour span and little elsewhere; a random ``k``-dimensional subspace holds
``k / d_embed`` of an isotropic head's variance, the chance level reported alongside.

Example:
    >>> import torch
    >>> outputs = torch.randn(3, 50, 16)  # [head, images, d_embed]
    >>> sets = {"color": torch.randn(4, 16), "shape": torch.randn(5, 16)}
    >>> res = attribute_variance(outputs, sets)
    >>> res.fractions.shape, res.dims
    (torch.Size([3, 2]), [3, 4])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from vision_lens.analysis.textspan import check_head_outputs
from vision_lens.utils.checks import check_finite


@dataclass
class AttributeVariance:
    """Per-head fraction of direct-effect variance inside each attribute's text span.

    Attributes:
        fractions: ``[head, attribute]`` fractions in ``[0, 1]`` (float64).
        attributes: Attribute names, in column order.
        dims: Dimension of each attribute's span.
        chance: ``[attribute]``, ``dim / d_embed``: the expected fraction of an isotropic head.
        heads: Row labels (e.g. ``(layer, head)`` pairs), if given.
    """

    fractions: Float[Tensor, "head attribute"]
    attributes: list[str]
    dims: list[int]
    chance: Float[Tensor, " attribute"]
    heads: list[Any] | None = None

    def roles(self, min_fraction: float = 0.2, min_lead: float = 1.5) -> list[str]:
        """One role per head: the attribute holding the largest fraction, if it holds at least
        ``min_fraction`` and ``min_lead`` times the runner-up; otherwise ``"mixed"``.

        Example:
            >>> f = torch.tensor([[0.4, 0.1], [0.2, 0.18]], dtype=torch.float64)
            >>> AttributeVariance(f, ["color", "shape"], [1, 1], torch.zeros(2)).roles()
            ['color', 'mixed']
        """
        top = self.fractions.topk(min(2, self.fractions.shape[1]), dim=1).values
        best = self.fractions.argmax(dim=1)
        out = []
        for row in range(self.fractions.shape[0]):
            first = float(top[row, 0])
            second = float(top[row, 1]) if top.shape[1] > 1 else 0.0
            ok = first >= min_fraction and first >= min_lead * second
            out.append(self.attributes[int(best[row])] if ok else "mixed")
        return out

    def to_markdown(self, labels: Sequence[str] | None = None) -> str:
        """A table: one row per head, one column per attribute, plus the chance row and the
        role from :meth:`roles` (default arguments)."""
        if labels is None:
            labels = [str(h) for h in self.heads] if self.heads else None
        if labels is None:
            labels = [str(i) for i in range(self.fractions.shape[0])]
        roles = self.roles()
        names = [f"{a} ({d}-d)" for a, d in zip(self.attributes, self.dims, strict=True)]
        head = "| head | " + " | ".join(names)
        lines = [head + " | role |", "| --- |" + " --- |" * (len(self.attributes) + 1)]
        lines.append(
            "| *chance* | " + " | ".join(f"{100 * float(c):.0f}%" for c in self.chance) + " | |"
        )
        for label, row, role in zip(labels, self.fractions, roles, strict=True):
            cells = " | ".join(f"{100 * float(v):.0f}%" for v in row)
            lines.append(f"| {label} | {cells} | {role} |")
        return "\n".join(lines) + "\n"


def _span_basis(directions: Tensor, contrast: bool, name: str) -> Tensor:
    """Orthonormal basis ``[d, k]`` of the (contrast) span of ``directions`` ``[n, d]``."""
    if directions.ndim != 2 or directions.shape[0] == 0:
        raise ValueError(
            f"Text directions for {name!r} must be a non-empty [n_text, d_embed] matrix, got "
            f"shape {tuple(directions.shape)}."
        )
    if contrast and directions.shape[0] < 2:
        raise ValueError(
            f"{name!r} has one text: contrasts need at least two classes (or pass "
            "contrast=False to use the span of the texts themselves)."
        )
    unit = torch.nn.functional.normalize(directions, dim=-1)
    if contrast:
        unit = unit - unit.mean(0)
    u, s, _ = torch.linalg.svd(unit.T, full_matrices=False)
    # Rank by a relative tolerance, so that n classes give n - 1 contrast dimensions exactly.
    keep = s > s.max() * max(unit.shape) * torch.finfo(s.dtype).eps * 10
    return u[:, keep]


def attribute_variance(
    head_outputs: Float[Tensor, "head images d_embed"] | Float[Tensor, "images d_embed"],
    text_sets: Mapping[str, Float[Tensor, "n_text d_embed"]],
    *,
    contrast: bool = True,
    heads: Sequence[Any] | None = None,
) -> AttributeVariance:
    """Fraction of each head's direct-effect variance inside each text set's span.

    For head ``h`` with centred outputs ``X_h`` ``[images, d]`` and an orthonormal basis ``Q`` of
    a set's span, the fraction is ``||X_h Q||^2 / ||X_h||^2``, computed in float64 from the head
    covariances (one ``[d, d]`` matrix per head, so any number of sets costs little).

    Args:
        head_outputs: Direct effects ``[head, images, d_embed]`` (or one head ``[images, d]``),
            e.g. from :meth:`Components.head_outputs`.
        text_sets: Attribute name -> text embeddings ``[n_text, d_embed]`` (e.g. the zero-shot
            class prompts of that attribute, from ``CLIPText.encode``).
        contrast: Use the span of the texts minus their mean (what a zero-shot choice between
            them reads); ``False`` uses the span of the texts themselves.
        heads: Row labels to keep in the result.

    Returns:
        An :class:`AttributeVariance`.

    Raises:
        TypeError: ``head_outputs`` or a text set is not a tensor, or ``text_sets`` is not a
            mapping.
        ValueError: Empty sets, a set of one text with ``contrast``, widths that differ, NaN or
            inf in the outputs or texts, or a head whose outputs do not vary over the images
            (its fraction is undefined).

    Example:
        >>> color = torch.eye(8)[:3]  # three "colour" texts along axes 0-2
        >>> outputs = torch.zeros(2, 40, 8)
        >>> outputs[0, :, 0] = torch.randn(40)  # head 0 varies along a colour contrast...
        >>> outputs[1, :, 5] = torch.randn(40)  # ...head 1 orthogonally to every colour text
        >>> attribute_variance(outputs, {"color": color}).fractions.squeeze(1).tolist()
        [0.666..., 0.0]
    """
    check_head_outputs(head_outputs)
    if not isinstance(text_sets, Mapping):
        raise TypeError(
            "text_sets must be a mapping attribute name -> text embeddings, e.g. "
            f"{{'color': clip.encode(color_prompts)}}; got {type(text_sets).__name__}."
        )
    if not text_sets:
        raise ValueError("Pass at least one text set, e.g. {'color': clip.encode(color_prompts)}.")
    outputs = head_outputs[None] if head_outputs.ndim == 2 else head_outputs
    if outputs.ndim != 3:
        raise ValueError(
            f"head_outputs must be [head, images, d_embed] or [images, d_embed], got shape "
            f"{tuple(head_outputs.shape)}."
        )
    check_finite(head_outputs, "head_outputs")
    d = outputs.shape[-1]
    for name, directions in text_sets.items():
        if not isinstance(directions, Tensor):
            raise TypeError(
                f"Text set {name!r} must be a tensor [n_text, d_embed], got "
                f"{type(directions).__name__}."
            )
        check_finite(directions, f"text_sets[{name!r}]")
        if directions.shape[-1] != d:
            raise ValueError(
                f"Text set {name!r} has width {directions.shape[-1]} but the head outputs have "
                f"d_embed {d}: encode the texts with the same CLIP model's text tower."
            )
    x = outputs.double()
    x = x - x.mean(dim=1, keepdim=True)
    cov = torch.einsum("hid,hie->hde", x, x)  # [head, d, d]
    total = cov.diagonal(dim1=1, dim2=2).sum(-1)
    flat = (total <= torch.finfo(torch.float64).tiny).nonzero().flatten().tolist()
    if flat:
        raise ValueError(
            f"Head rows {flat} do not vary over the images, so no fraction of their variance "
            "is defined; drop them or pass more varied images."
        )
    columns, dims = [], []
    for name, directions in text_sets.items():
        basis = _span_basis(directions.double().to(x.device), contrast, name)
        inside = torch.einsum("dk,hde,ek->h", basis, cov, basis)
        columns.append(inside / total)
        dims.append(basis.shape[1])
    return AttributeVariance(
        fractions=torch.stack(columns, dim=1).clamp(0, 1),
        attributes=list(text_sets),
        dims=dims,
        chance=torch.tensor(dims, dtype=torch.float64) / d,
        heads=list(heads) if heads is not None else None,
    )
