"""TextSpan (Gandelsman et al. 2024, §4.1, Algorithm 1): per-head bases of text directions.

For one head, ``C`` ``[K images, d_embed]`` holds its direct effects and ``R`` ``[M, d_embed]``
the (L2-normalised) embeddings of a pool of text descriptions. The reference code projects ``R``
onto the top-``rank`` right singular vectors of the *uncentred* ``C`` (``rank = 80``), centres
``C`` by its mean, then repeats ``m`` times::

    j* = argmax_j var_images(C @ R_j)          # the text along which the head varies most
    t = R_j*;   C' += (C t / t.t) t^T;   C -= (C t / t.t) t^T;   R -= (R t / t.t) t^T

and returns the chosen texts, the variance explained and the reconstruction ``C' + mean``.

How this module computes exactly that, fast (all in float64, batched over heads):

* Everything happens in the rank-``r`` subspace: with ``V`` ``[d, r]`` the top eigenvectors of
  ``C^T C`` (the right singular vectors of ``C``), the projected texts are ``R V V^T``; write
  ``rho = R V`` ``[M, r]`` for their coordinates.
* ``var(C R_j)`` is a quadratic form: ``rho_j^T S rho_j`` with ``S = V^T Σ V`` and
  ``Σ = C_c^T C_c / K`` the head's covariance.
* The chosen directions ``t_1, t_2, ...`` are mutually orthogonal (each is taken from texts that
  were already deflated by the earlier ones), so after ``k`` steps the deflated data is
  ``C_c P`` and the deflated texts ``rho P`` with ``P = I - sum_k t̂_k t̂_k^T``; hence the
  deflated score is ``(rho_j P) S (rho_j P)^T``: the *original* ``S`` applied to the *deflated*
  texts. Each step updates all scores and residual norms in closed form from one pass over
  ``rho`` (``rho @ [t̂, S t̂]``), ``O(M r)``, instead of the ``O(K d M)`` product ``C @ R^T`` of
  the literal loop; the best 16 candidates are rescored exactly before every choice.
* Explained variance after ``k`` steps is ``sum_k t̂_k^T S t̂_k`` and the reconstruction
  ``C_c Q Q^T + mean`` with ``Q`` the orthonormal chosen directions in ``d_embed`` space.

Two rules make the choice well defined (the literal loop in ``tests/textspan_reference.py``
follows them too): a text already chosen is never chosen again, and a text whose residual has
vanished (squared norm <= ``1e-12`` times its squared norm as given, e.g. a duplicate of a chosen
text) is not eligible. Ties go to the lowest index (``argmax``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from vision_lens.analysis.batched import iter_batches

__all__ = ["TextSpanResult", "head_outputs_dataset", "textspan", "textspan_model"]

#: A text whose residual squared norm falls to this fraction of its squared norm as given can no
#: longer be chosen (it lies, numerically, in the span of the chosen texts).
ELIGIBLE_TOL = 1e-12
#: Eigenvalues of the outputs' Gram matrix below this fraction of the largest are treated as
#: zero (singular values below 1e-5 of the largest: far above float32 rounding, 1e-7).
RANK_TOL = 1e-10

HeadLabel = tuple[int, int]


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


# ---------------------------------------------------------------------- validation
def _check_inputs(
    head_outputs: Any, text_embeddings: Any, m: Any, rank: Any
) -> tuple[Tensor, Tensor, int, int | None]:
    if not isinstance(head_outputs, Tensor):
        raise TypeError(
            f"head_outputs must be a tensor [head, images, d_embed], got "
            f"{type(head_outputs).__name__}."
        )
    if not isinstance(text_embeddings, Tensor):
        raise TypeError(
            f"text_embeddings must be a tensor [n_text, d_embed] (e.g. clip.encode(texts)), got "
            f"{type(text_embeddings).__name__}."
        )
    outputs = head_outputs[None] if head_outputs.dim() == 2 else head_outputs
    if outputs.dim() != 3:
        raise ValueError(
            f"head_outputs must be [head, images, d_embed] or [images, d_embed], got "
            f"{tuple(head_outputs.shape)}. From decompose_heads() ([images, layer, head, d_embed]) "
            "use heads.flatten(1, 2).transpose(0, 1)."
        )
    if text_embeddings.dim() != 2:
        raise ValueError(
            f"text_embeddings must be [n_text, d_embed], got {tuple(text_embeddings.shape)}."
        )
    if text_embeddings.shape[0] == 0:
        raise ValueError("The text pool is empty: pass at least m text embeddings.")
    if outputs.shape[-1] != text_embeddings.shape[-1]:
        raise ValueError(
            f"head outputs have width {outputs.shape[-1]} but text embeddings have width "
            f"{text_embeddings.shape[-1]}: TextSpan needs both in the joint embedding space (were "
            "they made by the same CLIP model?)."
        )
    if outputs.shape[0] == 0:
        raise ValueError("head_outputs has no heads.")
    if outputs.shape[1] < 2:
        raise ValueError(
            f"TextSpan needs at least 2 images per head to measure variance, got "
            f"{outputs.shape[1]}."
        )
    if not outputs.is_floating_point() or not text_embeddings.is_floating_point():
        raise TypeError("head_outputs and text_embeddings must be floating-point tensors.")
    if isinstance(m, bool) or not isinstance(m, int):
        raise TypeError(f"m must be an int, got {type(m).__name__}.")
    n_text = text_embeddings.shape[0]
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}.")
    if m > n_text:
        raise ValueError(
            f"m={m} is larger than the text pool ({n_text} texts): use m <= {n_text} or a "
            "larger pool (e.g. vision_lens.text_pool('general'))."
        )
    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise TypeError(f"rank must be an int or None, got {type(rank).__name__}.")
        if rank < 1:
            raise ValueError(f"rank must be >= 1 (or None for no projection), got {rank}.")
    d = outputs.shape[-1]
    effective = d if rank is None else min(rank, outputs.shape[1], d)
    if m > effective:
        fix = "rank=None" if rank is not None and rank < d else "more images"
        raise ValueError(
            f"m={m} exceeds the dimension of the space the texts live in ({effective}: "
            f"rank={rank}, {outputs.shape[1]} images, d_embed={d}); after {effective} texts "
            f"nothing is left to explain. Use m <= {effective}, a larger rank, or {fix}."
        )
    return outputs, text_embeddings, m, rank


def _check_labels(texts: Any, heads: Any, n_text: int, n_heads: int):
    if texts is not None:
        texts = list(texts)
        if len(texts) != n_text:
            raise ValueError(f"{len(texts)} texts given for {n_text} text embeddings.")
    if heads is not None:
        heads = [(int(lh[0]), int(lh[1])) for lh in heads]
        if len(heads) != n_heads:
            raise ValueError(f"{len(heads)} head labels given for {n_heads} heads.")
    return texts, heads


# ---------------------------------------------------------------------- the algorithm
def _textspan_chunk(
    C: Tensor, R: Tensor, given: Tensor, m: int, rank: int | None, reconstruct: bool
) -> tuple[Tensor, ...]:
    """TextSpan for a chunk of heads; ``C`` ``[h, K, d]`` and ``R`` ``[M, d]`` in float64.

    Notation: ``rho`` ``[h, M, r]`` are the texts' coordinates in the rank-``r`` subspace, ``S``
    ``[h, r, r]`` the head's covariance there, ``u_i`` the unit directions chosen so far (mutually
    orthogonal) and ``a_i = rho_{i-1} u_i`` ``[h, M]`` the deflation coefficients. The deflated
    texts are ``rho_k = rho - sum_i a_i u_i^T``; nothing ``[h, M, r]``-sized is ever rewritten:
    each step reads ``rho`` once (``rho @ [u, S u]``) and updates the scores
    ``q_j = rho_k,j S rho_k,j^T`` and squared norms ``n_j = |rho_k,j|^2`` in closed form::

        q <- q - 2 a b + a^2 (u^T S u),   n <- n - a^2,   b = rho_{k-1} S u.

    The best few candidates' scores are recomputed exactly from their deflated vectors before
    each choice, so rounding in these updates can never change a pick.
    """
    n_heads, n_images, d = C.shape
    device, dtype = C.device, C.dtype
    mean = C.mean(1)  # [h, d]
    centred = C - mean[:, None]
    gram = centred.mT @ centred  # [h, d, d], centred Gram matrix
    total = gram.diagonal(dim1=-2, dim2=-1).sum(-1) / n_images
    r = d if rank is None else min(rank, n_images, d)
    if r < d:
        # Top right singular vectors of the *uncentred* outputs, as in the reference code.
        uncentred = gram + n_images * mean[:, :, None] * mean[:, None, :]
        eigenvalues, eigenvectors = torch.linalg.eigh(uncentred)  # ascending eigenvalues
        V = eigenvectors[..., -r:].flip(-1)  # [h, d, r]
        # A head writes from a d_head-dimensional space, so when r > d_head the top-r subspace
        # includes directions of (numerically) zero variance, and which ones eigh returns is
        # decided by rounding noise: a perturbation of 1e-13 then changed which texts were
        # picked. Those directions carry no signal; dropping them makes the result depend on the
        # data only (an exact reimplementation of the reference wherever they are absent).
        top = eigenvalues[..., -r:].flip(-1)  # [h, r], descending
        V = V * (top > RANK_TOL * top[:, :1].clamp(min=0))[:, None, :]
        rho = torch.einsum("md,hdr->hmr", R, V)  # text coordinates in the subspace
        S = V.mT @ gram @ V / n_images  # [h, r, r]
    else:
        V = None
        rho = R.expand(n_heads, -1, -1)  # shared, never written
        S = gram / n_images
    n_text = R.shape[0]
    q = ((rho @ S) * rho).sum(-1)  # [h, M]: var_images(C R_j)
    norms = (rho * rho).sum(-1)
    eligible = norms > ELIGIBLE_TOL * given
    rows = torch.arange(n_heads, device=device)
    n_candidates = min(16, n_text)
    coefficients = torch.zeros(n_heads, n_text, m, dtype=dtype, device=device)  # a_i
    directions = torch.zeros(n_heads, m, rho.shape[-1], dtype=dtype, device=device)  # u_i
    indices = torch.empty(n_heads, m, dtype=torch.long, device=device)
    steps = torch.empty(n_heads, m, dtype=dtype, device=device)
    for k in range(m):
        # Exact scores of the best candidates from their deflated vectors.
        _, candidates = q.masked_fill(~eligible, -torch.inf).topk(n_candidates, dim=-1)
        deflated = rho[rows[:, None], candidates] - (
            coefficients[rows[:, None], candidates, :k] @ directions[:, :k]
        )  # [h, c, r]
        exact = ((deflated @ S) * deflated).sum(-1)
        exact_norms = (deflated * deflated).sum(-1)
        ok = eligible[rows[:, None], candidates] & (exact_norms > ELIGIBLE_TOL * given[candidates])
        exact = exact.masked_fill(~ok, -torch.inf)
        best = exact.max(-1).values
        if torch.isinf(best).any():
            bad = int(torch.isinf(best).nonzero()[0])
            raise ValueError(
                f"After {k} texts no eligible text is left for head row {bad}: the pool spans "
                f"only {k} directions of that head's subspace. Use m <= {k} or a larger, more "
                "diverse text pool."
            )
        # Lowest text index among exact ties, like argmax in the literal loop.
        slot = torch.where(exact == best[:, None], candidates, n_text).argmin(-1)
        j = candidates[rows, slot]
        t = deflated[rows, slot]  # [h, r]
        tt = exact_norms[rows, slot]
        unit = t / tt.sqrt()[:, None]
        S_unit = (S @ unit[..., None])[..., 0]  # [h, r]
        indices[:, k] = j
        steps[:, k] = best / tt  # variance along the new unit direction
        # a = rho_{k-1} u and b = rho_{k-1} S u, from one pass over rho
        ab = rho @ torch.stack([unit, S_unit], dim=-1)  # [h, M, 2]
        if k:
            overlap = directions[:, :k] @ torch.stack([unit, S_unit], dim=-1)  # [h, k, 2]
            ab = ab - coefficients[:, :, :k] @ overlap
        a, b = ab[..., 0], ab[..., 1]
        curvature = (unit * S_unit).sum(-1)[:, None]
        q = q - 2 * a * b + a * a * curvature
        norms = norms - a * a
        coefficients[:, :, k] = a
        directions[:, k] = unit
        eligible &= norms > ELIGIBLE_TOL * given
        eligible[rows, j] = False
    basis = directions if V is None else directions @ V.mT  # [h, m, d], orthonormal
    explained = steps.cumsum(-1)
    reconstruction = None
    if reconstruct:
        reconstruction = (centred @ basis.mT) @ basis + mean[:, None]
    return indices, explained, total, basis, mean, reconstruction


def textspan(
    head_outputs: Float[Tensor, "head images d_embed"] | Float[Tensor, "images d_embed"],
    text_embeddings: Float[Tensor, "n_text d_embed"],
    m: int,
    rank: int | None = 80,
    *,
    texts: Sequence[str] | None = None,
    heads: Sequence[HeadLabel] | None = None,
    normalize_texts: bool = True,
    reconstruct: bool = True,
    head_chunk: int = 8,
    progress: bool = False,
) -> TextSpanResult:
    """TextSpan (Algorithm 1) on every head at once: for each head, ``m`` texts whose
    directions greedily explain the most variance of its outputs.

    Identical (same texts chosen, same values up to float64 rounding) to running the literal
    algorithm head by head; see the module docstring for the algebra that makes it fast.

    Args:
        head_outputs: ``[head, images, d_embed]`` direct effects of each head over a set of
            images (e.g. ``cache.decompose_heads()`` ``[images, layer, head, d_embed]`` reshaped
            with ``.flatten(1, 2).transpose(0, 1)``), or one head ``[images, d_embed]`` (treated as
            ``head = 1``). Any float dtype; computed in float64 internally.
        text_embeddings: ``[n_text, d_embed]`` text embeddings (``clip.encode(pool)``).
        m: Texts per head, ``1 <= m <= n_text`` (and ``<= rank``).
        rank: Project the texts onto the top-``rank`` right singular vectors of each head's
            (uncentred) outputs first, as the reference code does (80); ``None`` for no
            projection.
        texts: The strings of the pool (for :meth:`TextSpanResult.texts_for` and reports).
        heads: ``(layer, head)`` of each row (for lookups by head and labels in reports).
        normalize_texts: L2-normalise the text embeddings first (Algorithm 1 assumes unit
            texts); with ``False`` they are used as given.
        reconstruct: Also return the reconstruction ``C' + mean`` ``[head, images, d_embed]``
            (as large as the input; :meth:`TextSpanResult.project` recomputes it on demand).
        head_chunk: Heads processed together (bounds memory: about ``head_chunk * (images *
            d_embed + d_embed^2 + 2 * n_text * rank) * 8`` bytes).
        progress: Show a progress bar over head chunks.

    Returns:
        A :class:`TextSpanResult` (``indices`` ``[head, m]``, ``explained_variance``
        ``[head, m]``, ``total_variance`` ``[head]``, ``basis``, ``mean``, ``reconstruction``).

    Raises:
        ValueError: Wrong shapes, widths that differ, an empty pool, ``m < 1``, ``m`` larger than
            the pool or the subspace, fewer than 2 images, texts with zero norm, non-finite
            values, or a pool that runs out of independent texts.
        TypeError: Non-tensor or non-float inputs, non-int ``m``/``rank``.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> pool = torch.randn(100, 64)
        >>> outputs = torch.randn(4, 200, 5) @ pool[[3, 14, 15, 92, 65]]  # 4 heads, 5 texts each
        >>> result = textspan(outputs + 0.01 * torch.randn(4, 200, 64), pool, m=5, rank=10)
        >>> sorted(result.indices[0].tolist())
        [3, 14, 15, 65, 92]
        >>> result.explained_variance.shape, result.reconstruction.shape
        (torch.Size([4, 5]), torch.Size([4, 200, 64]))
    """
    outputs, text_embeddings, m, rank = _check_inputs(head_outputs, text_embeddings, m, rank)
    n_heads, n_images, d = outputs.shape
    texts, heads = _check_labels(texts, heads, text_embeddings.shape[0], n_heads)
    if head_chunk < 1:
        raise ValueError(f"head_chunk must be >= 1, got {head_chunk}.")
    device = outputs.device
    R = text_embeddings.detach().to(device=device, dtype=torch.float64)
    if not torch.isfinite(R).all():
        raise ValueError("text_embeddings contain NaN or inf.")
    norms = R.norm(dim=-1)
    if (norms == 0).any():
        bad = int((norms == 0).nonzero()[0])
        raise ValueError(f"Text embedding {bad} has zero norm; remove it from the pool.")
    if normalize_texts:
        R = R / norms[:, None]
    given = (R * R).sum(-1)

    parts: list[tuple[Tensor, ...]] = []
    starts = range(0, n_heads, head_chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="TextSpan", unit="chunk")
    for start in starts:
        chunk = outputs[start : start + head_chunk].detach().to(torch.float64)
        if not torch.isfinite(chunk).all():
            raise ValueError("head_outputs contain NaN or inf.")
        parts.append(_textspan_chunk(chunk, R, given, m, rank, reconstruct))

    dtype = outputs.dtype
    return TextSpanResult(
        indices=torch.cat([p[0] for p in parts]),
        explained_variance=torch.cat([p[1] for p in parts]),
        total_variance=torch.cat([p[2] for p in parts]),
        basis=torch.cat([p[3] for p in parts]).to(dtype),
        mean=torch.cat([p[4] for p in parts]).to(dtype),
        reconstruction=torch.cat([p[5] for p in parts]).to(dtype) if reconstruct else None,
        texts=texts,
        heads=heads,
        rank=rank,
    )


# ---------------------------------------------------------------------- on a model
def head_outputs_dataset(
    model: Any,
    images: Tensor | Iterable[Any],
    layers: int | Sequence[int] | None = None,
    *,
    ln_mode: str = "center",
    normalize: bool = False,
    batch_size: int = 64,
    progress: bool = True,
    device: str | torch.device | None = "cpu",
) -> tuple[Float[Tensor, "head images d_embed"], list[HeadLabel]]:
    """Direct effects of the heads of ``layers`` over a dataset, as TextSpan wants them.

    Runs :meth:`HookedViT.run_with_decomposition_cache` in batches and keeps only
    ``cache.decompose_heads(layers)`` (no layer or token terms).

    Returns:
        ``([head, images, d_embed], [(layer, head), ...])`` with heads ordered layer-major.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, d_embed=16,
        ...                          image_size=16, patch_size=8)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> outputs, heads = head_outputs_dataset(model, torch.randn(5, 3, 16, 16), layers=[-1],
        ...                                       batch_size=2, progress=False)
        >>> outputs.shape, heads[:2]
        (torch.Size([4, 5, 16]), [(1, 0), (1, 1)])
    """
    from tqdm.auto import tqdm

    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if layers is None:
        layer_ids = list(range(n_layers))
    else:
        layer_ids = [layers] if isinstance(layers, int) else list(layers)
        for layer in layer_ids:
            if not -n_layers <= int(layer) < n_layers:
                raise IndexError(f"Layer {layer} does not exist: the model has {n_layers} layers.")
        layer_ids = [int(layer) % n_layers for layer in layer_ids]
    if not layer_ids:
        raise ValueError("layers is empty: pass at least one layer.")
    total = images.shape[0] if isinstance(images, Tensor) else None
    bar = tqdm(total=total, desc="head outputs", unit="img", disable=not progress)
    chunks = []
    for batch in iter_batches(images, batch_size):
        _, cache = model.run_with_decomposition_cache(batch)
        heads = cache.decompose_heads(layers=layer_ids, ln_mode=ln_mode, normalize=normalize)
        chunks.append(heads.to(device))
        bar.update(heads.shape[0])
    bar.close()
    if not chunks:
        raise ValueError("No images: the iterable yielded no batches.")
    out = torch.cat(chunks).flatten(1, 2).transpose(0, 1).contiguous()  # [L*H, images, d]
    labels = [(layer, head) for layer in layer_ids for head in range(n_heads)]
    return out, labels


def textspan_model(
    model: Any,
    clip: Any,
    images: Tensor | Iterable[Any],
    texts: Sequence[str] | str,
    layers: int | Sequence[int] | None = None,
    m: int = 60,
    rank: int | None = 80,
    *,
    ln_mode: str = "center",
    normalize: bool = False,
    batch_size: int = 64,
    text_batch_size: int = 256,
    reconstruct: bool = False,
    progress: bool = True,
) -> TextSpanResult:
    """TextSpan for the heads of a model: head outputs over ``images``, texts encoded with
    ``clip``, labelled results.

    Args:
        model: A :class:`vision_lens.HookedViT`.
        clip: The matching :class:`vision_lens.CLIPText`.
        images: Preprocessed images ``[N, 3, H, W]`` or an iterable of batches (a DataLoader).
        texts: The description pool, or the name of a shipped pool (``"general"``,
            ``"shapes"``; see :func:`vision_lens.text_pool`).
        layers: Layers whose heads to analyse (default all; the paper uses the last four,
            ``range(-4, 0)``).
        m: Texts per head (clipped to the pool size and ``rank`` with a clear error otherwise).
        rank: Subspace rank (see :func:`textspan`).
        ln_mode: Decomposition's LayerNorm treatment.
        normalize: Divide head outputs by the embedding norm (the paper's convention).
        batch_size: Images per forward pass.
        text_batch_size: Texts per text-tower pass.
        reconstruct: Keep the reconstructions (``[heads, N, d_embed]``).
        progress: Progress bars.

    Returns:
        A :class:`TextSpanResult` with ``texts`` and ``heads`` filled in, so
        ``result.texts_for(layer, head)`` works; ``result.meta`` records the settings.

    Example:
        >>> result = textspan_model(model, clip, images, "general", layers=range(-4, 0), m=60)
        ... # doctest: +SKIP
        >>> result.texts_for(11, 3)[:5]  # doctest: +SKIP
        >>> print(result.to_markdown(top=5))  # doctest: +SKIP
    """
    if isinstance(texts, str):
        from vision_lens.text_pools import text_pool

        pool_name: str | None = texts
        texts = text_pool(texts)
    else:
        pool_name = None
        texts = list(texts)
    if not texts:
        raise ValueError("The text pool is empty: pass at least m texts.")
    outputs, heads = head_outputs_dataset(
        model,
        images,
        layers,
        ln_mode=ln_mode,
        normalize=normalize,
        batch_size=batch_size,
        progress=progress,
    )
    embeddings = clip.encode(texts, batch_size=text_batch_size, progress=progress)
    result = textspan(
        outputs,
        embeddings.to(outputs),
        m=m,
        rank=rank,
        texts=texts,
        heads=heads,
        reconstruct=reconstruct,
        progress=progress,
    )
    result.meta = {
        "pool": pool_name,
        "n_texts": len(texts),
        "n_images": outputs.shape[1],
        "ln_mode": ln_mode,
        "normalize": normalize,
    }
    return result
