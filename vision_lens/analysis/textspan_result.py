"""The result of TextSpan (:func:`vision_lens.analysis.textspan.textspan`): per head, the texts
chosen, the variance they explain, their orthonormal basis, and reports (tables, markdown, JSON).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from vision_lens.analysis.direct_effects import HeadLabel

__all__ = ["TextSpanResult"]


@dataclass
class TextSpanResult:
    """Output of :func:`textspan`: per head, the chosen texts and what they explain.

    Tensors always have a leading ``head`` axis (a single ``[images, d_embed]`` input gives
    ``head = 1``).

    Attributes:
        indices: ``[head, m]`` indices into the text pool, in the order chosen.
        explained_variance: ``[head, m]`` variance of the centred head outputs explained by the
            first ``k + 1`` texts (cumulative, float64; non-decreasing, at most the total).
        total_variance: ``[head]`` total variance of the centred head outputs (float64), i.e.
            ``mean_images ||c - mean||^2``.
        basis: ``[head, m, d_embed]`` orthonormal directions (the chosen texts after projection
            and deflation, normalised); ``basis[:, :k]`` spans the first ``k`` chosen texts.
        mean: ``[head, d_embed]`` the head outputs' mean over the images.
        reconstruction: ``[head, images, d_embed]`` ``C' + mean``: each head's outputs projected
            onto the span of its ``m`` texts (``None`` when not requested).
        texts: The text pool (strings), if given.
        heads: ``(layer, head)`` of each row, if given.
        rank: The rank of the subspace the texts were projected onto (``None``: no projection).

    Example:
        >>> from vision_lens.analysis.textspan import textspan
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> texts = torch.randn(20, 64)
        >>> outputs = torch.randn(2, 50, 3) @ texts[:3]  # two heads writing along texts 0, 1, 2
        >>> result = textspan(outputs, texts, m=3, rank=None, texts=[f"t{i}" for i in range(20)],
        ...                   heads=[(5, 0), (5, 1)])
        >>> sorted(result.texts_for(5, 1))
        ['t0', 't1', 't2']
        >>> result.explained_fraction[:, -1]
        tensor([1.0000, 1.0000], dtype=torch.float64)
    """

    indices: Int[Tensor, "head m"]
    explained_variance: Float[Tensor, "head m"]
    total_variance: Float[Tensor, " head"]
    basis: Float[Tensor, "head m d_embed"]
    mean: Float[Tensor, "head d_embed"]
    reconstruction: Float[Tensor, "head images d_embed"] | None = None
    texts: list[str] | None = None
    heads: list[HeadLabel] | None = None
    rank: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ access
    @property
    def n_heads(self) -> int:
        """Number of heads (rows)."""
        return self.indices.shape[0]

    @property
    def m(self) -> int:
        """Number of texts chosen per head."""
        return self.indices.shape[1]

    @property
    def explained_fraction(self) -> Float[Tensor, "head m"]:
        """``explained_variance / total_variance`` (0 for a head with no variance)."""
        total = self.total_variance[:, None]
        return torch.where(total > 0, self.explained_variance / total.clamp_min(1e-300), 0.0)

    def head_index(self, layer: int, head: int | None = None) -> int:
        """Row of head ``(layer, head)``; with ``head=None``, ``layer`` is the row itself.

        Raises:
            KeyError: No such head in this result.
            IndexError: Row out of range.
        """
        if head is None:
            row = int(layer)
            if not -self.n_heads <= row < self.n_heads:
                raise IndexError(f"row {row} out of range for {self.n_heads} heads.")
            return row % self.n_heads
        if self.heads is None:
            raise KeyError(
                "This result has no head labels: pass heads=[(layer, head), ...] to textspan(), "
                "or index rows with texts_for(row)."
            )
        key = (int(layer), int(head))
        try:
            return self.heads.index(key)
        except ValueError:
            raise KeyError(
                f"Head L{key[0]}H{key[1]} is not in this result; it has "
                f"{', '.join(f'L{lh[0]}H{lh[1]}' for lh in self.heads[:8])}"
                f"{', ...' if len(self.heads) > 8 else ''}."
            ) from None

    def texts_for(self, layer: int, head: int | None = None, top: int | None = None) -> list[str]:
        """The texts chosen for head ``(layer, head)`` (or row ``layer`` if ``head`` is None), in
        the order chosen; the first ``top`` only, if given.

        Raises:
            ValueError: The result has no text strings (pass ``texts=`` to :func:`textspan`).
        """
        if self.texts is None:
            raise ValueError(
                "This result has no text strings: pass texts=[...] to textspan() (the pool the "
                "embeddings came from), or use result.indices."
            )
        row = self.indices[self.head_index(layer, head)].tolist()
        return [self.texts[i] for i in row[:top]]

    def label(self, row: int) -> str:
        """``"L{layer}H{head}"`` of a row (or ``"head {row}"`` without labels)."""
        if self.heads is None:
            return f"head {row}"
        layer, head = self.heads[row]
        return f"L{layer}H{head}"

    # ------------------------------------------------------------------ projection
    def project(
        self,
        head_outputs: Float[Tensor, "head images d_embed"],
        m: int | None = None,
    ) -> Float[Tensor, "head images d_embed"]:
        """Project (new) head outputs onto each head's first ``m`` texts:
        ``(c - mean) Q_m Q_m^T + mean``.

        Because TextSpan is greedy, the first ``m`` texts of a run with a larger ``m`` are exactly
        the result of a run with this ``m``; one run serves a whole accuracy-vs-``m`` curve.
        On the images TextSpan ran on, ``project(outputs)`` equals ``reconstruction``.

        Args:
            head_outputs: ``[head, images, d_embed]`` with the rows in this result's order (or
                ``[images, d_embed]`` for a one-head result).
            m: Number of texts to use (default all).

        Returns:
            ``[head, images, d_embed]`` in the input's dtype.
        """
        outputs = head_outputs[None] if head_outputs.dim() == 2 else head_outputs
        if outputs.dim() != 3 or outputs.shape[0] != self.n_heads:
            raise ValueError(
                f"head_outputs must be [{self.n_heads}, images, {self.basis.shape[-1]}] (rows in "
                f"this result's head order), got {tuple(head_outputs.shape)}."
            )
        if outputs.shape[-1] != self.basis.shape[-1]:
            raise ValueError(
                f"head_outputs have width {outputs.shape[-1]} but the basis has width "
                f"{self.basis.shape[-1]}."
            )
        m = self.m if m is None else int(m)
        if not 0 <= m <= self.m:
            raise ValueError(f"m must be in [0, {self.m}], got {m}.")
        basis = self.basis[:, :m].to(outputs)
        mean = self.mean.to(outputs)[:, None]
        coefficients = (outputs - mean) @ basis.mT  # [head, images, m]
        return coefficients @ basis + mean

    # ------------------------------------------------------------------ reports
    def table(self, top: int | None = 10) -> list[dict[str, Any]]:
        """One row per (head, rank) with the text, its index and the cumulative explained
        fraction, for the first ``top`` texts of every head."""
        fraction = self.explained_fraction
        rows = []
        for h in range(self.n_heads):
            for k, index in enumerate(self.indices[h, :top].tolist()):
                row: dict[str, Any] = {"head": self.label(h), "rank": k + 1, "index": index}
                if self.texts is not None:
                    row["text"] = self.texts[index]
                row["explained_fraction"] = float(fraction[h, k])
                rows.append(row)
        return rows

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        """A JSON-serialisable summary: per head its label, texts/indices (first ``top``), the
        cumulative explained variance, the total variance and the explained fraction."""
        fraction = self.explained_fraction
        heads = []
        for h in range(self.n_heads):
            entry: dict[str, Any] = {"label": self.label(h)}
            if self.heads is not None:
                entry["layer"], entry["head"] = self.heads[h]
            entry["indices"] = self.indices[h, :top].tolist()
            if self.texts is not None:
                entry["texts"] = [self.texts[i] for i in entry["indices"]]
            entry["explained_variance"] = [float(v) for v in self.explained_variance[h, :top]]
            entry["total_variance"] = float(self.total_variance[h])
            entry["explained_fraction"] = float(fraction[h, -1])
            heads.append(entry)
        return {"m": self.m, "rank": self.rank, "heads": heads, **self.meta}

    def to_markdown(self, top: int = 10) -> str:
        """A markdown table: one row per head with its explained fraction and first ``top``
        texts."""
        fraction = self.explained_fraction
        lines = [
            f"| head | explained (m={self.m}) | top texts |",
            "| --- | --- | --- |",
        ]
        for h in range(self.n_heads):
            row = self.indices[h, :top].tolist()
            names = [self.texts[i] for i in row] if self.texts is not None else map(str, row)
            cell = "; ".join(str(n).replace("|", "\\|") for n in names)
            lines.append(f"| {self.label(h)} | {float(fraction[h, -1]):.1%} | {cell} |")
        return "\n".join(lines) + "\n"
